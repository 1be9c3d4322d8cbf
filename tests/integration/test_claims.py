"""Several processes at once on one database: claims, fencing and a shared budget, each through its own store.

Every store has its own connections (as separate ``maestro worker`` processes would); the claims, commits and
reservations of the stores run at the same moment. On PostgreSQL and MariaDB/MySQL they meet at row locks
(``FOR UPDATE SKIP LOCKED``, guarded updates); on SQLite at the file's single write lock.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agentmaestro import Agent, ScriptedModel
from agentmaestro.errors import LeaseLostError
from agentmaestro.store.base import Store
from agentmaestro.store.records import Commit, LedgerSpec, Reservation, RunRecord
from tests.integration.test_engine import counting_script, start_runs

pytestmark = pytest.mark.anyio


async def test_concurrent_claims_share_the_queue_and_never_overlap(db_url: str) -> None:
    """Four stores claim at once, round after round: each run goes to exactly one, and nobody starves."""
    stores = [Store.open(db_url) for _ in range(4)]
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)))
        ids = set(await start_runs(stores[0], agent, [f"r{i}" for i in range(120)]))
        owners: dict[str, str] = {}
        first_round: list[int] = []
        while len(owners) < len(ids):
            rounds = await asyncio.gather(
                *(s.leases.claim(owner=f"w{i}", limit=10, lease_ttl=60) for i, s in enumerate(stores))
            )
            if not first_round:
                first_round = [len(r) for r in rounds]
            for i, claims in enumerate(rounds):
                for c in claims:
                    assert c.record.run_id not in owners, f"{c.record.run_id} claimed twice"
                    owners[c.record.run_id] = f"w{i}"
                    assert c.record.lease_epoch == 1
        assert set(owners) == ids
        if not db_url.startswith("sqlite"):
            # A claim locks the rows it takes, not the whole queue: the others get runs in the same round.
            assert sum(1 for n in first_round if n) >= 2, first_round
    finally:
        for s in stores:
            await s.close()


async def test_two_holders_fence_each_other(db_url: str) -> None:
    """A run taken over after its lease expired: the old holder's commits are refused, the new one's pass.

    The two commits are sent at the same moment, from two stores, again and again with fresh runs.
    """
    a, b = Store.open(db_url), Store.open(db_url)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)))
        run_ids = await start_runs(a, agent, [f"r{i}" for i in range(5)])
        for run_id in run_ids:
            [old] = await a.leases.claim(owner="a", limit=1, lease_ttl=0.05, run_ids=[run_id])
            await asyncio.sleep(0.1)
            [new] = await b.leases.claim(owner="b", limit=1, lease_ttl=60, run_ids=[run_id])
            assert new.recovered_from == "a" and new.record.lease_epoch == old.record.lease_epoch + 1

            stale, fresh = await asyncio.gather(
                a.steps.commit(_step_commit(old.record, "a")),
                b.steps.commit(_step_commit(new.record, "b")),
                return_exceptions=True,
            )
            assert isinstance(stale, LeaseLostError), stale
            assert not isinstance(fresh, BaseException), fresh
            rec = await a.runs.get(run_id)
            assert (rec.lease_owner, rec.lease_epoch, rec.state.steps) == ("b", new.record.lease_epoch, 1)
    finally:
        await a.close()
        await b.close()


def _step_commit(rec: RunRecord, owner: str) -> Commit:
    """One step's commit by ``owner`` on the lease it holds in ``rec``."""
    state = dataclasses.replace(rec.state, steps=rec.state.steps + 1)
    return Commit(
        run_id=rec.run_id,
        workspace_id=rec.workspace_id,
        owner=owner,
        epoch=rec.lease_epoch,
        version=rec.version,
        state=state,
        events=(),
    )


async def test_a_budget_shared_by_stores_is_never_overspent(db_url: str) -> None:
    """Three stores reserve on one ledger at once, many times: the sum granted never passes the limit."""
    stores = [Store.open(db_url) for _ in range(3)]
    try:
        await stores[0].workspaces.ensure()
        ledger = LedgerSpec(ledger_id="run:shared", workspace_id="default", limit_usd=1.0, limit_tokens=None, label="x")
        call = Reservation(ledgers=(ledger,), usd=0.03, tokens=10)
        results = await asyncio.gather(*(s.budgets.reserve(call) for _ in range(20) for s in stores))
        granted = sum(1 for r in results if r is None)
        assert granted == 33, granted  # 33 x 0.03 = 0.99 <= 1.0 < 34 x 0.03
        row = await stores[1].budgets.ledger("run:shared")
        assert row is not None and row["reserved_usd"] == pytest.approx(0.99)
    finally:
        for s in stores:
            await s.close()
