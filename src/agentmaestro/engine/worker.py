"""The worker: claims runs with leases, drives many at once, heartbeats, recovers expired leases."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from agentmaestro import telemetry
from agentmaestro.agents import AgentRegistry
from agentmaestro.ceilings import quota_ceiling
from agentmaestro.core.states import RunStatus
from agentmaestro.engine.driver import EventListener, RunDriver
from agentmaestro.errors import ConflictError
from agentmaestro.models.pricing import PriceTable
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import SessionTimeouts
from agentmaestro.store.records import Claim, new_worker_id

if TYPE_CHECKING:
    from agentmaestro.engine.leased import LeasedDriver
    from agentmaestro.workflows.spec import WorkflowRegistry

log = logging.getLogger("agentmaestro.worker")


CLAIM_BATCH = 500
"""Most runs claimed in one transaction (the worker claims again at once while it has free slots): a
10,000-run backlog is not read into memory in one piece."""


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Worker settings with their defaults."""

    concurrency: int = 100
    """Most runs driven at once by this worker."""
    lease_ttl_s: float = 30.0
    """How long a lease lasts without a heartbeat. Another worker recovers the run after that."""
    heartbeat_interval_s: float | None = None
    """How often leases are renewed (default: a third of the lease)."""
    poll_interval_s: float = 1.0
    """How long to sleep when there is nothing to claim (wake-ups usually come sooner)."""
    shutdown_grace_s: float = 10.0
    """On stop, how long in-flight steps may take to finish before they are interrupted."""
    transient_backoff_s: float = 0.5
    """First backoff between retries of a transiently failing model call."""
    sweep_interval_s: float = 1.0
    """How often expired approvals are auto-denied."""
    tune_gc: bool = True
    """Freeze start-up objects and collect garbage less often (measured: -23% CPU per step at 200
    concurrent runs, -42% at 10,000; see benchmarks/README.md)."""
    webhooks: bool = True
    """Also produce and deliver webhook notifications (notify/webhooks.py; settings from the environment)."""
    idle_in_transaction_timeout_s: float | None = None
    """PostgreSQL: the ``idle_in_transaction_session_timeout`` of this process's sessions (default: one
    lease; 0 turns it off). A process frozen inside a write transaction (stopped, paused) is cut off
    and its row locks freed, so other workers take its runs over once their leases expire. Workers
    also end another process's session frozen that long in the middle of a pipelined batch, which
    the server's timeout does not cover (``store/_stalled.py``)."""
    lock_timeout_s: float | None = None
    """PostgreSQL: the ``lock_timeout`` of this process's sessions (default: a quarter of the lease; 0
    turns it off). A write that waits longer for a row lock fails (the run is released and taken up
    again) instead of holding up this worker's heartbeats."""

    def session_timeouts(self) -> SessionTimeouts:
        """The PostgreSQL session limits these settings ask for (see :class:`SessionTimeouts`)."""
        default = SessionTimeouts.for_lease(self.lease_ttl_s)
        return SessionTimeouts(
            idle_in_transaction_s=default.idle_in_transaction_s
            if self.idle_in_transaction_timeout_s is None
            else self.idle_in_transaction_timeout_s,
            lock_timeout_s=default.lock_timeout_s if self.lock_timeout_s is None else self.lock_timeout_s,
        )


class Worker:
    """Runs the agents in ``agents`` and workflows in ``workflows`` for runs in ``store``.

    With ``run_ids`` the worker only claims those runs (and, with ``follow_children``, their sub-runs).
    """

    def __init__(
        self,
        store: Store,
        agents: AgentRegistry,
        *,
        config: WorkerConfig | None = None,
        owner: str | None = None,
        run_ids: Collection[str] | None = None,
        listeners: list[EventListener] | None = None,
        prices: PriceTable | None = None,
        workflows: WorkflowRegistry | None = None,
        follow_children: bool = False,
    ) -> None:
        telemetry.configure_from_env()
        quota_ceiling()  # a bad MAESTRO_MAX_* fails the worker at start
        self.follow_children = follow_children
        self.store = store
        self.agents = agents
        self.workflows = workflows
        self.config = config or WorkerConfig()
        if self.config.concurrency < 1:
            raise ValueError("worker concurrency must be at least 1")
        self.owner = owner or new_worker_id()
        self.run_ids = set(run_ids) if run_ids is not None else None
        self.listeners: list[EventListener] = list(listeners or [])
        self.prices = prices or PriceTable.default()
        self._drivers: dict[str, RunDriver | LeasedDriver] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.claimed_total = 0
        self.recovered_total = 0
        self._stored_names: list[str] = []
        self._stored_checked = float("-inf")
        self._db_errors: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        """Runs currently driven."""
        return len(self._tasks)

    def stop(self) -> None:
        """Ask the worker to finish in-flight steps, release its leases and return from :meth:`run`."""
        self._stop.set()
        for d in self._drivers.values():
            d.stopping = True

    async def run(self) -> None:
        """Claim and drive runs until :meth:`stop` is called."""
        if self.config.tune_gc:
            gc.freeze()
            if gc.get_threshold()[0] < 50_000:
                gc.set_threshold(50_000, 20, 100)
        self.store.set_session_timeouts(self.config.session_timeouts())
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="maestro-heartbeat")
        sweeper = asyncio.create_task(self._sweep_loop(), name="maestro-sweeper")
        stalled = asyncio.create_task(self._stalled_loop(), name="maestro-stalled-sessions")
        presence = asyncio.create_task(self._presence_loop(), name="maestro-presence")
        dispatcher = None  # outgoing webhooks: one dispatcher per worker process
        if self.config.webhooks:
            from agentmaestro.notify.webhooks import Dispatcher

            dispatcher = Dispatcher(self.store)
            hooks = asyncio.create_task(dispatcher.run(), name="maestro-webhooks")
        try:
            while not self._stop.is_set():
                claimed = await self._claim_some()
                if claimed:
                    continue
                await self._idle_wait()
        finally:
            await self._shutdown()
            if dispatcher is not None:
                dispatcher.stop()
                with contextlib.suppress(Exception):
                    await hooks
            for t in (heartbeat, sweeper, stalled, presence):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if self.run_ids is None:
                with contextlib.suppress(Exception):
                    await self.store.workers.gone(self.owner)

    async def _claim_some(self) -> int:
        free = self.config.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        if self.run_ids is not None:
            if self.follow_children:
                # A worker dedicated to some runs also runs their sub-runs (workflow nodes, delegations).
                for parent in list(self.run_ids):
                    for child in await self.store.runs.page(workspace_id=None, parent_run_id=parent, limit=500):
                        self.run_ids.add(child.run_id)
            pending = self.run_ids - set(self._tasks)
            if not pending:
                return 0
        else:
            pending = None
        try:
            claims = await self.store.leases.claim(
                owner=self.owner,
                limit=min(free, CLAIM_BATCH),
                lease_ttl=self.config.lease_ttl_s,
                agent_names=self.agents.names()
                + (self.workflows.names() if self.workflows is not None else [])
                + await self._stored_workflow_names()
                + ["objective", "objective.escalation"],
                run_ids=pending,
            )
        except ConflictError:
            return 0
        except Exception:
            log.exception("claim failed; retrying after %.1fs", self.config.poll_interval_s)
            return 0
        for claim in claims:
            self._start(claim)
        if not claims:
            self._stored_checked = min(self._stored_checked, time.monotonic() - self.config.poll_interval_s + 0.2)
        return len(claims)

    async def _stored_workflow_names(self) -> list[str]:
        """Names of workflows stored in any workspace: their runs carry their definition, so any worker runs them.

        Refreshed at most once per poll interval (sooner after a claim that found nothing).
        """
        now = time.monotonic()
        if now - self._stored_checked >= self.config.poll_interval_s:
            self._stored_checked = now
            try:
                self._stored_names = await self.store.workflows.names()
            except Exception:
                log.exception("cannot list stored workflows; using the last known names")
        return self._stored_names

    async def _idle_wait(self) -> None:
        self._slot_freed.clear()
        runnable = asyncio.ensure_future(self.store.leases.wait_runnable(self.config.poll_interval_s))
        freed = asyncio.ensure_future(self._slot_freed.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        waiters = {runnable, freed, stop}
        if len(self._tasks) >= self.config.concurrency:
            waiters.discard(runnable)
            runnable.cancel()
        try:
            await asyncio.wait(waiters, timeout=self.config.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (runnable, freed, stop):
                w.cancel()

    def _start(self, claim: Claim) -> None:
        rec = claim.record
        self.claimed_total += 1
        if claim.recovered_from:
            self.recovered_total += 1
            log.info("run %s: recovered from expired lease of %s", rec.run_id, claim.recovered_from)
        driver: RunDriver | LeasedDriver
        if rec.spec.get("kind") in ("objective", "objective_escalation"):
            from agentmaestro.engine.objective import EscalationDriver, ObjectiveDriver

            if rec.spec["kind"] == "objective":
                driver = ObjectiveDriver(
                    store=self.store, claim=claim, agents=self.agents, owner=self.owner, listeners=self.listeners
                )
            else:
                driver = EscalationDriver(store=self.store, claim=claim, owner=self.owner, listeners=self.listeners)
            self._begin(driver)
            return
        if rec.spec.get("kind") == "workflow":
            from agentmaestro.engine.workflow import WorkflowDriver

            driver = WorkflowDriver(
                store=self.store, claim=claim, agents=self.agents, owner=self.owner, listeners=self.listeners
            )
            self._begin(driver)
            return
        agent = self.agents.get(rec.agent_name)
        driver = RunDriver(
            store=self.store,
            claim=claim,
            agent=agent,
            owner=self.owner,
            listeners=self.listeners,
            prices=self.prices,
            transient_backoff_s=self.config.transient_backoff_s,
            registry=self.agents,
        )
        self._begin(driver)

    def _begin(self, driver: RunDriver | LeasedDriver) -> None:
        if self._stop.is_set():
            driver.stopping = True
        previous = self._drivers.get(driver.run_id)
        if previous is not None:
            # This worker's own lease expired (a late heartbeat) and it claimed the run again: the
            # older driver's epoch is stale, so it must stop without committing.
            previous.lease_lost()
        self._drivers[driver.run_id] = driver
        task = asyncio.create_task(self._drive(driver), name=f"run {driver.run_id}")
        self._tasks[driver.run_id] = task

    async def _drive(self, driver: RunDriver | LeasedDriver) -> None:
        db_error = False
        try:
            await driver.drive()
        except asyncio.CancelledError:
            raise
        except DBAPIError:
            db_error = True
            log.exception("run %s: database error; releasing the run for any worker to take up again", driver.run_id)
        except Exception as exc:
            log.exception("run %s: engine error; failing the run", driver.run_id)
            with contextlib.suppress(Exception):
                await driver.fail_internal(exc)
        finally:
            # Only this driver's own entries: the run may already be driven again (a later epoch).
            current = self._drivers.get(driver.run_id) is driver
            if current:
                del self._drivers[driver.run_id]  # from now on the heartbeat leaves its lease alone
            if not driver.lost and driver.state.status is RunStatus.RUNNING:
                # Stopping, or dropped after an error: give the lease up now, so that any worker (this one
                # too) takes the run up again without waiting for it to expire. The slot is freed after
                # that, so the next claim already sees the run.
                delay = self._retry_delay(driver.run_id) if db_error else 0.0
                with contextlib.suppress(Exception):
                    await self.store.leases.release(
                        owner=self.owner, leases=[(driver.run_id, driver.epoch)], delay_s=delay
                    )
            if not db_error:
                self._db_errors.pop(driver.run_id, None)
            if current:
                self._tasks.pop(driver.run_id, None)
            self._slot_freed.set()

    def _retry_delay(self, run_id: str) -> float:
        """How long a run dropped after a database error waits before it may be claimed again.

        The first drop is released at once (most database errors are transient: a restart, a
        terminated session, a lock timeout); a run that fails again and again backs off, doubling
        from the poll interval up to one lease, instead of redoing its step in a tight loop.
        """
        if len(self._db_errors) > 10_000:
            self._db_errors.clear()
        failures = self._db_errors.get(run_id, 0) + 1
        self._db_errors[run_id] = failures
        if failures == 1:
            return 0.0
        return float(min(self.config.lease_ttl_s, self.config.poll_interval_s * 2.0 ** (failures - 2)))

    async def _sweep_loop(self) -> None:
        """Auto-deny approvals past their expiry (any worker may do it; the update is guarded)."""
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.store.approvals.expire()
            except Exception:
                log.exception("approval sweep failed")

    async def _presence_loop(self) -> None:
        """Keep this worker's ``workers`` row alive (busy or idle), so others know runs will be picked up.

        Workers dedicated to given runs (``run_ids``: ``maestro run --wait``, the demo) do not announce themselves.
        """
        if self.run_ids is not None:
            return
        interval = self.config.heartbeat_interval_s or self.config.lease_ttl_s / 3
        host, pid = socket.gethostname(), os.getpid()
        while True:
            try:
                await self.store.workers.beat(
                    owner=self.owner,
                    host=host,
                    pid=pid,
                    concurrency=self.config.concurrency,
                    ttl=max(self.config.lease_ttl_s, 2 * interval),
                )
            except Exception:
                log.warning("worker presence heartbeat failed", exc_info=True)
            await asyncio.sleep(interval)

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval_s or self.config.lease_ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            # Exactly the (run, epoch) pairs still driven here: a run dropped after an error is not renewed.
            leases = [(run_id, d.epoch) for run_id, d in self._drivers.items() if not d.lost]
            if not leases:
                continue
            try:
                result = await self.store.leases.heartbeat(
                    owner=self.owner, leases=leases, lease_ttl=self.config.lease_ttl_s
                )
            except Exception:
                log.exception("heartbeat failed")
                continue
            for run_id in result.lost:
                d = self._drivers.get(run_id)
                if d is not None:
                    log.warning("run %s: lease lost to another worker; stopping it here", run_id)
                    d.lease_lost()
            for run_id in result.cancel_requested:
                d = self._drivers.get(run_id)
                if d is not None:
                    d.request_cancel()

    async def _stalled_loop(self) -> None:
        """PostgreSQL: end the sessions of frozen processes that keep expired runs locked (``store/_stalled.py``).

        Checked as often as heartbeats are sent; a transaction counts as frozen after the
        idle-in-transaction timeout (0 turns this off).
        """
        interval = self.config.heartbeat_interval_s or self.config.lease_ttl_s / 3
        older_than = self.config.session_timeouts().idle_in_transaction_s
        if self.store.dialect != "postgresql" or older_than <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                ended = await self.store.leases.end_stalled_holders(older_than_s=older_than)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == "42501":  # no right to signal other roles' sessions
                    log.warning("cannot end stalled sessions (%s); frozen lock holders wait for their timeouts", exc)
                    return
                log.warning("checking for stalled sessions failed: %s", exc.orig)
                continue
            except Exception:
                log.exception("checking for stalled sessions failed")
                continue
            for s in ended:
                log.warning(
                    "ended PostgreSQL session %s (%s): frozen in a transaction that locks runs whose leases expired",
                    s["pid"],
                    s["application_name"],
                )

    async def _shutdown(self) -> None:
        for d in self._drivers.values():
            d.stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        leftovers = [(run_id, d.epoch) for run_id, d in self._drivers.items() if not d.lost]
        if leftovers:
            with contextlib.suppress(Exception):
                await self.store.leases.release(owner=self.owner, leases=leftovers)
