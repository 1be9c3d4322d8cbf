"""Leases and heartbeats: a worker renews exactly the runs it still drives, and gives up the ones it drops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from agentmaestro import Agent, RiskLevel, ScriptedModel, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import fold
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import SessionTimeouts
from tests.integration.test_engine import counting_script, start_runs

pytestmark = pytest.mark.anyio


@tool(risk=RiskLevel.SAFE, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_heartbeat_renews_exactly_the_leases_still_driven(db_url: str) -> None:
    """Only the listed (run, epoch) pairs are extended; a held run left out of the list is not."""
    store = Store.open(db_url)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        ids = await start_runs(store, agent, ["a", "b", "c"])
        claims = {c.record.run_id: c.record for c in await store.leases.claim(owner="w1", limit=3, lease_ttl=5)}
        driven, stale, dropped = ids
        await store.runs.cancel(driven)
        before = {r: (await store.runs.get(r)).lease_expires_at for r in ids}
        hb = await store.leases.heartbeat(
            owner="w1",
            leases=[(driven, claims[driven].lease_epoch), (stale, claims[stale].lease_epoch - 1)],
            lease_ttl=60,
        )
        after = {r: (await store.runs.get(r)).lease_expires_at for r in ids}
        assert after[driven] is not None and before[driven] is not None and after[driven] > before[driven] + 30
        assert after[stale] == before[stale], "a lease of another epoch must not be renewed"
        assert after[dropped] == before[dropped], "a held run the worker no longer drives must not be renewed"
        assert hb.lost == {stale}
        assert hb.cancel_requested == {driven}
        assert await store.leases.heartbeat(
            owner="w2", leases=[(driven, claims[driven].lease_epoch)], lease_ttl=60
        ) == (type(hb)(lost=frozenset({driven})))
    finally:
        await store.close()


def _fault_sql(dialect: str, run_id: str, epoch: int) -> list[str]:
    """A trigger that fails the step commits of ``run_id`` under lease epoch ``epoch`` (a database error).

    It fires on UPDATEs that set ``steps`` (commits and claims), not on heartbeats or releases; a claim
    sets the next epoch, so the run's next holder commits normally.
    """
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER chaos_fault BEFORE UPDATE OF steps ON runs "
            f"WHEN NEW.run_id = '{run_id}' AND NEW.lease_epoch = {epoch} "
            f"BEGIN SELECT RAISE(ABORT, 'injected database fault'); END"
        ]
    if dialect == "mysql":  # (no UPDATE OF: commits and claims bump the version, heartbeats and releases do not)
        return [
            f"CREATE TRIGGER chaos_fault BEFORE UPDATE ON runs FOR EACH ROW "
            f"IF NEW.run_id = '{run_id}' AND NEW.lease_epoch = {epoch} AND NEW.version <> OLD.version THEN "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected database fault'; END IF"
        ]
    return [
        "CREATE FUNCTION chaos_fault() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected database fault'; END $$",
        f"CREATE TRIGGER chaos_fault BEFORE UPDATE OF steps ON runs FOR EACH ROW "
        f"WHEN (NEW.run_id = '{run_id}' AND NEW.lease_epoch = {epoch}) EXECUTE FUNCTION chaos_fault()",
    ]


async def test_run_dropped_after_a_database_error_is_taken_up_again_while_the_worker_stays_busy(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A commit of one of many runs fails with a database error; that run is back within 2 leases.

    The worker keeps driving its other runs all along (so its heartbeats keep going): the dropped
    run's lease must not ride along with them.
    """
    lease = 1.0
    caplog.set_level(logging.ERROR, logger="agentmaestro.worker")
    store = Store.open(db_url)
    agent = Agent(
        name="slow",
        model=ScriptedModel({"latency_s": 0.15, "turns": counting_script(8)}),
        tools=[add],
    )
    worker = Worker(
        store,
        AgentRegistry([agent]),
        config=WorkerConfig(concurrency=6, lease_ttl_s=lease, poll_interval_s=0.05, webhooks=False),
    )
    task: asyncio.Task[None] | None = None
    try:
        # Three waves for six slots; the later waves are younger, so a released run is claimed before them.
        ids = await start_runs(store, agent, [f"r{i}" for i in range(6)])
        await asyncio.sleep(0.01)
        ids += await start_runs(store, agent, [f"r{i}" for i in range(6, 18)])
        victim = ids[0]
        task = asyncio.create_task(worker.run())
        while (rec := await store.runs.get(victim)).state.steps < 1:
            await asyncio.sleep(0.02)
        with store._writer_engine.begin() as conn:
            for stmt in _fault_sql(store.dialect, victim, rec.lease_epoch):
                conn.execute(text(stmt))
        fault_at = await _wait_fault_logged(caplog, victim, timeout=10)
        async with asyncio.timeout(60):
            while True:
                counts = await store.runs.count_by_status()
                if counts.get("COMPLETED", 0) == len(ids):
                    break
                await asyncio.sleep(0.1)
    finally:
        worker.stop()
        if task is not None:
            await task
        histories = {r: await store.events.read(r) for r in ids}
        records = {r: await store.runs.get(r) for r in ids}
        await store.close()

    events = histories[victim]
    recovered = [e for e in events if e.type is EventType.LEASE_RECOVERED and e.created_at >= fault_at - 0.01]
    assert recovered, [e.type for e in events]
    assert recovered[0].payload["previous_worker"] == worker.owner
    assert recovered[0].created_at - fault_at <= 2 * lease, recovered[0].created_at - fault_at
    finished_later = [
        r for r in ids if r != victim and records[r].finished_at and records[r].finished_at > recovered[0].created_at
    ]
    assert finished_later, "the worker was meant to stay busy with other runs meanwhile"
    for run_id, evs in histories.items():
        assert records[run_id].status is RunStatus.COMPLETED
        assert fold(evs) == records[run_id].state
        done = [e.step for e in evs if e.type is EventType.STEP_COMPLETED]
        assert done == sorted(set(done)), (run_id, "a step was recorded twice")


async def _wait_fault_logged(caplog: pytest.LogCaptureFixture, run_id: str, timeout: float) -> float:
    """When the worker logged the database error of ``run_id`` (its log record's time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in caplog.records:
            if run_id in r.getMessage() and "database error" in r.getMessage():
                return r.created
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never hit the injected database fault")


async def test_a_run_failing_again_and_again_backs_off(db_url: str) -> None:
    """The first drop after a database error is released at once; repeated ones wait longer, up to a lease."""
    store = Store.open(db_url)
    try:
        cfg = WorkerConfig(lease_ttl_s=4.0, poll_interval_s=0.5, webhooks=False)
        worker = Worker(store, AgentRegistry([]), config=cfg)
        assert [worker._retry_delay("r1") for _ in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]
        assert worker._retry_delay("r2") == 0.0
    finally:
        await store.close()


def test_worker_session_timeouts_follow_the_lease_unless_set() -> None:
    """Idle-in-transaction one lease, lock wait a quarter lease; explicit values (0 = off) win."""
    assert WorkerConfig(lease_ttl_s=8).session_timeouts() == SessionTimeouts(idle_in_transaction_s=8, lock_timeout_s=2)
    cfg = WorkerConfig(lease_ttl_s=8, idle_in_transaction_timeout_s=0, lock_timeout_s=0.5)
    assert cfg.session_timeouts() == SessionTimeouts(idle_in_transaction_s=0, lock_timeout_s=0.5)
    assert SessionTimeouts(idle_in_transaction_s=0, lock_timeout_s=0.0001).statements() == (
        "SET idle_in_transaction_session_timeout = 0",
        "SET lock_timeout = 1",
    )


def _pg_only(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL session settings; on SQLite one frozen writer holds the file's write lock")


async def test_a_frozen_transaction_loses_its_locks_and_a_lock_wait_is_bounded(db_url: str) -> None:
    """PostgreSQL: a worker's sessions carry its limits: a frozen transaction is ended, a lock wait fails."""
    _pg_only(db_url)
    import psycopg

    store = Store.open(db_url)
    worker = Worker(
        store,
        AgentRegistry([]),
        config=WorkerConfig(lease_ttl_s=1.0, lock_timeout_s=0.3, poll_interval_s=0.05, webhooks=False),
    )
    task = asyncio.create_task(worker.run())
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"])
        assert store.session_timeouts == SessionTimeouts(idle_in_transaction_s=1.0, lock_timeout_s=0.3)

        def show(conn: Any) -> tuple[str, str, str]:
            row = conn.execute(
                text(
                    "SELECT current_setting('idle_in_transaction_session_timeout'), "
                    "current_setting('lock_timeout'), current_setting('application_name')"
                )
            ).one()
            return row[0], row[1], row[2]

        assert await store._read(show) == ("1s", "300ms", f"maestro {os.getpid()}")

        # A lock held elsewhere: the store's write fails after the lock timeout instead of waiting on.
        with psycopg.connect(dsn) as holder:
            holder.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
            started = time.monotonic()
            with pytest.raises(DBAPIError, match="lock timeout"):
                await asyncio.wait_for(store.runs.cancel(run_id), 10)
            assert time.monotonic() - started < 3
            holder.rollback()

        # A store session frozen inside a write transaction is ended by the server, freeing the row.
        def freeze() -> None:
            conn = store._writer_engine.connect()
            conn.begin()
            conn.execute(text("UPDATE runs SET updated_at = updated_at WHERE run_id = :r"), {"r": run_id})
            frozen.append(conn)

        frozen: list[Any] = []
        await asyncio.to_thread(freeze)
        with psycopg.connect(dsn, autocommit=True) as other:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE NOWAIT", (run_id,))
            frozen_at = time.monotonic()
            deadline = frozen_at + 10
            while True:
                try:
                    other.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE NOWAIT", (run_id,))
                    break
                except psycopg.errors.LockNotAvailable:
                    assert time.monotonic() < deadline, "the frozen session kept its row lock"
                    await asyncio.sleep(0.1)
            assert time.monotonic() - frozen_at < 3  # one second of idleness, plus the server's timer
        with contextlib.suppress(Exception):
            frozen[0].close()
    finally:
        worker.stop()
        await task
        await store.close()


def test_mysql_session_timeouts_are_whole_seconds() -> None:
    """MySQL/MariaDB take whole seconds: a lock wait rounds up (at least 1 s); 0 means the server's default / off."""
    limits = SessionTimeouts(idle_in_transaction_s=1.2, lock_timeout_s=0.3)
    assert limits.statements("mysql", mariadb=True) == (
        "SET SESSION innodb_lock_wait_timeout = 1",
        "SET SESSION idle_transaction_timeout = 2",
    )
    assert limits.statements("mysql") == ("SET SESSION innodb_lock_wait_timeout = 1",)  # (MySQL: no idle limit)
    off = SessionTimeouts(idle_in_transaction_s=0, lock_timeout_s=0)
    assert off.statements("mysql", mariadb=True) == (
        "SET SESSION innodb_lock_wait_timeout = DEFAULT",
        "SET SESSION idle_transaction_timeout = 0",
    )


async def test_mariadb_ends_a_frozen_transaction_and_bounds_a_lock_wait(db_url: str) -> None:
    """MariaDB: a worker's sessions carry its limits (whole seconds): a frozen transaction is ended, a lock wait fails.

    MariaDB's ``idle_transaction_timeout`` ends a session idle inside a transaction, so no peer has to
    (PostgreSQL's ``store/_stalled.py`` has no MySQL counterpart).
    """
    if not db_url.startswith("mysql"):
        pytest.skip("MariaDB session settings")
    import pymysql

    store = Store.open(db_url)
    worker = Worker(
        store,
        AgentRegistry([]),
        config=WorkerConfig(lease_ttl_s=1.0, lock_timeout_s=0.3, poll_interval_s=0.05, webhooks=False),
    )
    task = asyncio.create_task(worker.run())
    url = store._writer_engine.url

    def connect() -> Any:
        return pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, database=url.database)

    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"])

        def show(conn: Any) -> tuple[Any, ...]:
            return tuple(
                conn.execute(
                    text("SELECT @@idle_transaction_timeout, @@innodb_lock_wait_timeout, @@tx_isolation, @@sql_mode")
                ).one()
            )

        idle, lock_wait, isolation, sql_mode = await store._read(show)
        assert (int(idle), int(lock_wait), isolation) == (1, 1, "READ-COMMITTED")
        assert "STRICT_TRANS_TABLES" in sql_mode

        # A lock held elsewhere: the store's write fails after the lock wait instead of waiting on.
        with contextlib.closing(connect()) as holder:
            holder.begin()
            holder.cursor().execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
            started = time.monotonic()
            with pytest.raises(DBAPIError, match="Lock wait timeout"):
                await asyncio.wait_for(store.runs.cancel(run_id), 10)
            assert time.monotonic() - started < 4
            holder.rollback()

        # A store session frozen inside a write transaction is ended by the server, freeing the row.
        def freeze() -> None:
            conn = store._writer_engine.connect()
            conn.begin()
            conn.execute(text("UPDATE runs SET updated_at = updated_at + 1 WHERE run_id = :r"), {"r": run_id})
            frozen.append(conn)

        frozen: list[Any] = []
        await asyncio.to_thread(freeze)
        with contextlib.closing(connect()) as other:
            cur = other.cursor()
            cur.execute("SET SESSION innodb_lock_wait_timeout = 0")  # (MariaDB: 0 is NOWAIT)
            frozen_at = time.monotonic()
            deadline = frozen_at + 10
            while True:
                try:
                    other.begin()
                    cur.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
                    other.rollback()
                    break
                except pymysql.err.OperationalError:
                    other.rollback()
                    assert time.monotonic() < deadline, "the frozen session kept its row lock"
                    await asyncio.sleep(0.1)
            assert time.monotonic() - frozen_at < 4  # one second of idleness, plus the server's timer
        with contextlib.suppress(Exception):
            frozen[0].close()
    finally:
        worker.stop()
        await task
        await store.close()


async def test_peers_end_a_frozen_session_that_locks_an_expired_run(db_url: str) -> None:
    """PostgreSQL: a maestro session whose old transaction locks a run with an expired lease is terminated.

    No server timeout ends a session frozen between the messages of a pipeline (it stays *active*);
    here the holder turns its own idle timeout off to stand for one.
    """
    _pg_only(db_url)
    import psycopg

    store = Store.open(db_url)
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        expired, alive, other = await start_runs(store, agent, ["x", "y", "z"])
        await store.leases.claim(owner="w1", limit=2, lease_ttl=0.01, run_ids=[expired, other])
        await store.leases.claim(owner="w1", limit=1, lease_ttl=60, run_ids=[alive])
        await asyncio.sleep(0.05)

        def frozen(run_id: str, app: str) -> Any:
            conn = psycopg.connect(dsn, application_name=app)
            conn.execute("SET idle_in_transaction_session_timeout = 0")
            conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
            return conn

        on_alive = frozen(alive, "maestro 1")  # its run's lease is still valid: left alone
        outsider = frozen(other, "psql")  # not a maestro session: left alone
        on_expired = frozen(expired, "maestro 2")
        try:
            assert await store.leases.end_stalled_holders(older_than_s=5) == []  # too young
            await asyncio.sleep(0.3)
            ended = await store.leases.end_stalled_holders(older_than_s=0.2)
            assert [s["application_name"] for s in ended] == ["maestro 2"]
            with pytest.raises(psycopg.OperationalError):
                on_expired.execute("SELECT 1")
            assert on_alive.execute("SELECT 1").fetchone() == (1,)
            assert outsider.execute("SELECT 1").fetchone() == (1,)
            [claim] = await store.leases.claim(owner="w2", limit=5, lease_ttl=60)
            assert claim.record.run_id == expired and claim.recovered_from == "w1"
        finally:
            for c in (on_alive, outsider, on_expired):
                with contextlib.suppress(Exception):
                    c.close()
    finally:
        await store.close()


async def test_the_stalled_session_check_survives_an_outage_and_stops_without_the_right(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database outage does not end the check (it runs on after the server is back); a refusal to signal does."""
    _pg_only(db_url)
    from psycopg import errors as pg_errors
    from sqlalchemy.exc import OperationalError, ProgrammingError

    store = Store.open(db_url)
    calls: list[str] = []
    failure: list[Exception] = [OperationalError("SELECT", {}, Exception("server closed the connection"))]

    async def fake(*, older_than_s: float) -> list[dict[str, Any]]:
        calls.append("call")
        if failure:
            raise failure[0]
        return []

    monkeypatch.setattr(store.leases, "end_stalled_holders", fake)
    try:
        for expected_more in (True, False):
            calls.clear()
            worker = Worker(
                store, AgentRegistry([]), config=WorkerConfig(lease_ttl_s=0.3, poll_interval_s=0.05, webhooks=False)
            )
            task = asyncio.create_task(worker.run())
            await asyncio.sleep(0.35)
            failure.clear()
            await asyncio.sleep(0.35)
            worker.stop()
            await task
            assert (len(calls) > 2) is expected_more, calls
            denied = pg_errors.InsufficientPrivilege("permission denied to terminate process")
            failure[:] = [ProgrammingError("SELECT", {}, denied)]
    finally:
        await store.close()


async def test_a_database_error_in_a_step_commit_reaches_the_worker_as_one(db_url: str) -> None:
    """The step commit calls the DBAPI directly; its errors still arrive as SQLAlchemy's DBAPIError.

    The worker tells a database error (release the run, take it up again) from an engine bug (fail
    the run) by that class.
    """
    from agentmaestro.store.records import Commit

    store = Store.open(db_url)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"])
        [claim] = await store.leases.claim(owner="w1", limit=1, lease_ttl=30)
        with store._writer_engine.begin() as conn:
            for stmt in _fault_sql(store.dialect, run_id, claim.record.lease_epoch):
                conn.execute(text(stmt))
        rec = claim.record
        state = dataclasses.replace(rec.state, steps=rec.state.steps + 1)
        commit = Commit(
            run_id=run_id,
            workspace_id="default",
            owner="w1",
            epoch=rec.lease_epoch,
            version=rec.version,
            state=state,
            events=(),
        )
        with pytest.raises(DBAPIError, match="injected database fault"):
            await store.steps.commit(commit)
    finally:
        await store.close()
