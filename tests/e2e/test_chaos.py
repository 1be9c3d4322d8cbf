"""Short chaos runs with real ``maestro worker`` processes, on SQLite and PostgreSQL (``make chaos`` runs long ones).

Each test runs one scenario of ``benchmarks/chaos.py`` for a trial or two and checks its row of the
table: nothing lost, duplicated or accepted from a stale holder, and the affected runs moving again
within two leases.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from benchmarks.chaos import ChaosConfig, Row, run_scenario, table
from benchmarks.chaos_fleet import FleetConfig

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.xdist_group("worker-processes")]
"""Under pytest-xdist these tests share one worker with the other worker-process tests."""

LEASE = 1.5


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bytecode cache shared by the worker processes of this module (the suite's one, if ``make test`` set it)."""
    shared = os.environ.get("PYTHONPYCACHEPREFIX")
    return Path(shared) if shared else tmp_path_factory.mktemp("pycache")


def check(row: Row) -> None:
    """No violation; every affected run moved again within two leases (unless a documented limit applies)."""
    print("\n" + table([row]))
    assert row.trials >= 1, "no fault was injected"
    assert row.audit.lost == [], row.audit.lost
    assert row.audit.duplicated == 0
    assert row.audit.stale == 0
    assert row.audit.unrecovered == 0
    assert row.audit.recoveries, "no run was affected by the fault"
    if not row.limit:
        assert row.max_recovery <= 2 * LEASE, sorted(row.audit.recoveries)


async def test_a_run_dropped_after_a_database_error_is_resumed_while_its_worker_stays_busy(
    db_url: str, tmp_path: Path, pycache: Path
) -> None:
    """One worker, many runs; a commit of one fails (on PostgreSQL the second trial also ends all its sessions).

    The run is taken up again within two leases although the worker never runs out of other work.
    """
    cfg = ChaosConfig(trials=2, workers=1, runs_per_trial=8, fleet=FleetConfig(lease_s=LEASE), drain_s=60)
    check(await run_scenario("db-fault", db_url, cfg, tmp_path, pycache))


async def test_a_worker_stopped_inside_a_write_transaction_loses_its_runs(
    db_url: str, tmp_path: Path, pycache: Path
) -> None:
    """SIGSTOP a worker while it holds a write transaction; SIGCONT it after its runs were taken over.

    PostgreSQL: its session is ended (the idle-in-transaction timeout, or the other worker for a
    session frozen mid-pipeline) and the other worker takes its runs over within two leases.
    SQLite: the documented single-writer limit: everyone waits for the frozen writer; once it
    resumes, nothing is lost or done twice.
    """
    cfg = ChaosConfig(trials=1, workers=2, runs_per_trial=8, fleet=FleetConfig(lease_s=LEASE), drain_s=60)
    row = await run_scenario("fence-in-write", db_url, cfg, tmp_path, pycache)
    check(row)
    assert bool(row.limit) == db_url.startswith("sqlite")
