"""The Store: the database plumbing under one repository per concern, over SQLite and PostgreSQL.

``Store`` owns the engines, the transactions, the migrations, the single writer and the wake-ups; it
hands out the repositories (``store.runs``, ``store.steps``, ``store.events``, ``store.approvals``, ...),
each a small class in a public module of this package built on the private SQL helpers (``_ops.py``,
``_interventions.py``, ...). Nothing outside ``store/`` imports those helpers.

Writes run on a single writer thread per process. Step commits are grouped: while one batch is
being written, the next ones queue up and go together in the following transaction (group commit),
each still guarded on its own. Reads run on a small thread pool. Wake-ups inside the process are
immediate; across processes, workers poll (and on PostgreSQL listen for NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError, LeaseLostError
from agentmaestro.store import _budget, _ops
from agentmaestro.store.dialects import (
    SessionTimeouts,
    apply_session_timeouts,
    create_engines,
    default_database_url,
    normalize_url,
    redact_url,
    writer_queue,
)
from agentmaestro.store.records import Commit, Reservation
from agentmaestro.store.wakeups import RUNNABLE, STATUSES_KEY, StatusWatchers, Waiters

if TYPE_CHECKING:
    from agentmaestro.store.agents import AgentRepository
    from agentmaestro.store.approvals import ApprovalRepository
    from agentmaestro.store.audit import AuditRepository
    from agentmaestro.store.budgets import BudgetRepository
    from agentmaestro.store.credentials import CredentialRepository
    from agentmaestro.store.escalations import EscalationRepository
    from agentmaestro.store.events import EventRepository
    from agentmaestro.store.keys import KeyRepository
    from agentmaestro.store.knowledge import KnowledgeRepository
    from agentmaestro.store.leases import LeaseRepository
    from agentmaestro.store.memory import MemoryRepository
    from agentmaestro.store.objectives import ObjectiveRepository
    from agentmaestro.store.runs import RunRepository
    from agentmaestro.store.steps import StepRepository
    from agentmaestro.store.usage import UsageRepository
    from agentmaestro.store.webhooks import WebhookRepository
    from agentmaestro.store.workers import WorkerRepository
    from agentmaestro.store.workflows import WorkflowRepository
    from agentmaestro.store.workspaces import WorkspaceRepository

log = logging.getLogger("agentmaestro.store")

T = TypeVar("T")

NOTIFY_CHANNEL = "maestro_runs"
# --- event notifications (live streams) ----------------------------------------------------------
EVENTS_CHANNEL = "maestro_events"
"""NOTIFY channel naming the runs that got new events (comma-separated run ids), sent on commit."""
_EVENT_RUNS = _ops.EVENT_RUNS_KEY
DELTAS_CHANNEL = "maestro_deltas"
"""NOTIFY channel of live model text deltas (see engine/deltas.py); listened to only by API servers."""
_NOTIFY_PAYLOAD_MAX = 7000  # PostgreSQL caps a NOTIFY payload at 8000 bytes


def _collect_event_runs(
    conn: Connection, clause: Any, multiparams: Any, params: Any, _options: Any, _result: Any
) -> None:
    """``after_execute`` hook: remember which runs an ``INSERT INTO run_events`` wrote to.

    Every path that appends events (commits, claims, cancels, approvals, forks, sub-agent runs)
    inserts into ``run_events``, so collecting here covers them all; :meth:`Store._announce`
    turns the set into wake-ups when the transaction commits.
    """
    if getattr(clause, "is_insert", False) and getattr(getattr(clause, "table", None), "name", "") == "run_events":
        runs = conn.info.setdefault(_EVENT_RUNS, set())
        for row in multiparams or (params,):
            if isinstance(row, dict) and "run_id" in row:
                runs.add(row["run_id"])


class Store:
    """Persistent runs, events and steps. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        """``sqlite``, ``postgresql`` or ``mysql`` (MySQL and MariaDB)."""
        self._writer_engine, self._reader_engine = create_engines(self.url)
        self._session_timeouts: SessionTimeouts | None = None
        if self.dialect != "sqlite":
            for engine in (self._writer_engine, self._reader_engine):
                apply_session_timeouts(engine, lambda: self._session_timeouts)
        self._writer_queue = writer_queue(self.url)  # SQLite: processes queue for the write lock
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maestro-db-writer")
        self._writer_conn: Connection | None = None  # SQLite: the writer thread's connection (see _write_tx)
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="maestro-db-reader")
        self.waiters = Waiters()
        self.watchers = StatusWatchers()
        self.origin = secrets.token_hex(6)
        """Names this process's NOTIFYs, so its listener skips them (its own waiters were woken directly)."""
        self._pending: list[tuple[Commit | Reservation, asyncio.Future[Any]]] = []
        self._ledgers_known: _budget.KnownLedgers = {}  # budget ledgers whose limits this process wrote
        self._flush_task: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None
        self._stop_channel = ""  # set when the PostgreSQL listener starts
        self._delta_listener: Callable[[str], None] | None = None  # model text deltas (engine/deltas.py)
        self._closed = threading.Event()
        self.max_batch = 2000
        event.listen(self._writer_engine, "after_execute", _collect_event_runs)  # event notifications

    # ------------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Store:
        """Open (and by default migrate) the database at ``url`` or the configured default."""
        store = cls(url or default_database_url())
        try:
            if migrate:
                store.upgrade()
            else:
                store.check_schema()
        except OperationalError as exc:
            store.close_sync()
            raise ConfigError(f"cannot open database {redact_url(store.url)}: {exc.orig}") from None
        except Exception:
            store.close_sync()
            raise
        return store

    @property
    def session_timeouts(self) -> SessionTimeouts | None:
        """The PostgreSQL session limits set with :meth:`set_session_timeouts` (None: the server's)."""
        return self._session_timeouts

    def set_session_timeouts(self, timeouts: SessionTimeouts | None) -> None:
        """PostgreSQL, MySQL/MariaDB: give this store's sessions these limits (each connection at its next use).

        A worker sets them from its lease (:meth:`SessionTimeouts.for_lease`). SQLite has no such
        settings: a process frozen inside a write transaction holds the file's single write lock
        until it resumes (see docs/architecture.md, "Crash safety").
        """
        self._session_timeouts = timeouts

    def upgrade(self) -> str:
        """Run Alembic migrations to head; returns the revision."""
        from agentmaestro.store.migrate import upgrade

        return upgrade(self._writer_engine)

    def check_schema(self) -> None:
        """Raise SchemaMismatchError unless the schema is at the latest revision."""
        from agentmaestro.store.migrate import check_current

        check_current(self._writer_engine)

    async def close(self) -> None:
        """Flush pending commits and release connections and threads."""
        if "runs" in self.__dict__:  # (built on first use)
            await self.runs.drain()
        if self._flush_task is not None:
            await asyncio.shield(self._flush_task)
        self.close_sync()

    def close_sync(self) -> None:
        """Release connections and threads (pending commits must have been flushed)."""
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(Exception):  # wake the listener now instead of at its next 0.5 s poll
                with self._writer_engine.begin() as conn:
                    conn.execute(text("SELECT pg_notify(:ch, '')"), {"ch": self._stop_channel})
            self._listener.join(timeout=3)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self._writer_engine.dispose()
        self._reader_engine.dispose()
        self._writer_queue.close()

    # ------------------------------------------------------------------------------- repositories
    # One small repository per concern, built on first use (a command that needs one loads only it).

    @cached_property
    def workspaces(self) -> WorkspaceRepository:
        """Workspaces and their settings."""
        from agentmaestro.store.workspaces import WorkspaceRepository

        return WorkspaceRepository(self)

    @cached_property
    def agents(self) -> AgentRepository:
        """Stored agent definitions."""
        from agentmaestro.store.agents import AgentRepository

        return AgentRepository(self)

    @cached_property
    def runs(self) -> RunRepository:
        """Runs: create, read, list, wait for a status, cancel, resume, fork."""
        from agentmaestro.store.runs import RunRepository

        return RunRepository(self)

    @cached_property
    def steps(self) -> StepRepository:
        """The step commit and a run's finished steps."""
        from agentmaestro.store.steps import StepRepository

        return StepRepository(self)

    @cached_property
    def leases(self) -> LeaseRepository:
        """Claims, heartbeats and releases of run leases (the worker side)."""
        from agentmaestro.store.leases import LeaseRepository

        return LeaseRepository(self)

    @cached_property
    def workers(self) -> WorkerRepository:
        """Worker presence."""
        from agentmaestro.store.workers import WorkerRepository

        return WorkerRepository(self)

    @cached_property
    def budgets(self) -> BudgetRepository:
        """Budget ledgers: reserve, settle, read."""
        from agentmaestro.store.budgets import BudgetRepository

        return BudgetRepository(self)

    @cached_property
    def events(self) -> EventRepository:
        """Run events: a run's log, waits for new ones, the reads of live streams."""
        from agentmaestro.store.events import EventRepository

        return EventRepository(self)

    @cached_property
    def approvals(self) -> ApprovalRepository:
        """Pending and decided approvals of gated tool calls."""
        from agentmaestro.store.approvals import ApprovalRepository

        return ApprovalRepository(self)

    @cached_property
    def escalations(self) -> EscalationRepository:
        """Human requests (escalations) of runs."""
        from agentmaestro.store.escalations import EscalationRepository

        return EscalationRepository(self)

    @cached_property
    def keys(self) -> KeyRepository:
        """API keys."""
        from agentmaestro.store.keys import KeyRepository

        return KeyRepository(self)

    @cached_property
    def audit(self) -> AuditRepository:
        """The hash-chained audit log."""
        from agentmaestro.store.audit import AuditRepository

        return AuditRepository(self)

    @cached_property
    def usage(self) -> UsageRepository:
        """Usage and cost reports, quota figures."""
        from agentmaestro.store.usage import UsageRepository

        return UsageRepository(self)

    @cached_property
    def memory(self) -> MemoryRepository:
        """Agents' memory entries."""
        from agentmaestro.store.memory import MemoryRepository

        return MemoryRepository(self)

    @cached_property
    def workflows(self) -> WorkflowRepository:
        """Stored workflows."""
        from agentmaestro.store.workflows import WorkflowRepository

        return WorkflowRepository(self)

    @cached_property
    def knowledge(self) -> KnowledgeRepository:
        """Knowledge (RAG) collections and documents."""
        from agentmaestro.store.knowledge import KnowledgeRepository

        return KnowledgeRepository(self)

    @cached_property
    def objectives(self) -> ObjectiveRepository:
        """Objective runs' task graphs and commands."""
        from agentmaestro.store.objectives import ObjectiveRepository

        return ObjectiveRepository(self)

    @cached_property
    def webhooks(self) -> WebhookRepository:
        """Webhooks, their delivery queue and dispatcher claims."""
        from agentmaestro.store.webhooks import WebhookRepository

        return WebhookRepository(self)

    @cached_property
    def credentials(self) -> CredentialRepository:
        """Encrypted named credentials and OAuth states."""
        from agentmaestro.store.credentials import CredentialRepository

        return CredentialRepository(self)

    # ------------------------------------------------------------------------------- plumbing

    @property
    def closed(self) -> bool:
        """Whether :meth:`close_sync` has run."""
        return self._closed.is_set()

    @contextlib.contextmanager
    def _write_tx(self) -> Iterator[Connection]:
        """A write transaction (in the writer thread).

        SQLite: on one connection the writer thread keeps open (no pool check-out, check-in and reset
        per transaction: the embedded hot path). PostgreSQL: a pooled connection, so that a connection
        broken by a server restart is replaced by the pool (pre-ping) at the next transaction.
        """
        try:
            if self.dialect != "sqlite":
                with self._writer_engine.begin() as conn:
                    yield conn
                return
            if self._writer_conn is None:
                self._writer_conn = self._writer_engine.connect()
            conn = self._writer_conn
            with conn.begin():
                yield conn
        except self._writer_engine.dialect.loaded_dbapi.Error as exc:
            # The step commit calls the DBAPI's cursor directly; its errors still reach callers as
            # SQLAlchemy's DBAPIError family, so that a worker tells a database error (retry the run
            # elsewhere) from an engine bug (fail the run).
            raise DBAPIError.instance(None, None, exc, self._writer_engine.dialect.loaded_dbapi.Error) from exc

    def _tx(self, engine_kind: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if engine_kind != "w":
            with self._reader_engine.begin() as conn:
                return fn(conn, *args, **kwargs)
        with self._writer_queue, self._write_tx() as conn:
            conn.info.pop(_EVENT_RUNS, None)
            conn.info.pop(STATUSES_KEY, None)
            out = fn(conn, *args, **kwargs)
            touched = self._announce(conn)
            statuses = conn.info.pop(STATUSES_KEY, None)
        self._wake(touched, statuses)
        return out

    # --- event notifications (live streams) -------------------------------------------------------

    def _announce(self, conn: Connection) -> set[str]:
        """Inside a write transaction: the runs that got events; on PostgreSQL, NOTIFY them on commit."""
        touched: set[str] = conn.info.pop(_EVENT_RUNS, None) or set()
        if touched and self.dialect == "postgresql":
            chunk: list[str] = []
            size = 0
            for run_id in sorted(touched):
                if chunk and size + len(run_id) + 1 > _NOTIFY_PAYLOAD_MAX:
                    conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": EVENTS_CHANNEL, "p": ",".join(chunk)})
                    chunk, size = [self.origin], len(self.origin) + 1
                if not chunk:
                    chunk, size = [self.origin], len(self.origin) + 1
                chunk.append(run_id)
                size += len(run_id) + 1
            conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": EVENTS_CHANNEL, "p": ",".join(chunk)})
        return touched

    def _wake(self, run_ids: Collection[str], statuses: Mapping[str, RunStatus] | None = None) -> None:
        """After a commit: wake in-process waiters of the runs that got events (thread-safe).

        ``statuses``: the new status of the runs whose step commits these were (see :class:`StatusWatchers`).
        """
        if run_ids:
            self.waiters.notify([*(f"run:{r}" for r in run_ids), "any"])
            self.watchers.changed(run_ids, statuses)

    # ----------------------------------------------------------------------------------------------

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, partial(self._tx, "w", fn, *args, **kwargs))

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, partial(self._tx, "r", fn, *args, **kwargs))

    def _notify_runs(self, run_ids: Collection[str], runnable: bool = False, *, watchers: bool = True) -> None:
        keys = [f"run:{r}" for r in run_ids] + ["any"]
        if runnable:
            keys.append(RUNNABLE)
        self.waiters.notify(keys)
        if watchers:  # (step commits and claims told their status watchers the new status already)
            self.watchers.changed(run_ids)

    def _pg_notify(self, conn: Connection) -> None:
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_notify(:ch, '')"), {"ch": NOTIFY_CHANNEL})

    # ------------------------------------------------------------- group commit (steps, budgets)

    def _enqueue(self, item: Commit | Reservation) -> asyncio.Future[Any]:
        """Queue a step commit or a budget reservation for the next group-committed transaction."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((item, fut))
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = loop.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            commits = [c for c, _ in batch if isinstance(c, Commit)]
            reservations = [r for r, _ in batch if isinstance(r, Reservation)]
            try:
                out = await loop.run_in_executor(self._writer, partial(self._commit_batch, commits, reservations))
            except Exception as exc:  # a database error fails the whole batch; each caller sees it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            results, refusals = iter(out.results), iter(out.refusals)
            for item, fut in batch:
                res: Any = next(results) if isinstance(item, Commit) else next(refusals)
                if fut.done():
                    continue
                if isinstance(item, Commit) and res is None:
                    fut.set_exception(
                        LeaseLostError(
                            f"run {item.run_id!r}: lease epoch {item.epoch} of {item.owner!r} is no longer valid"
                        )
                    )
                else:
                    fut.set_result(res)
            if commits:
                self._notify_runs({c.run_id for c in commits}, runnable=any(c.release for c in commits), watchers=False)

    def _commit_batch(self, commits: list[Commit], reservations: list[Reservation]) -> _ops.BatchResult:
        with self._writer_queue, self._write_tx() as conn:
            conn.info.pop(_EVENT_RUNS, None)  # event notifications
            out = _ops.apply_commits(
                conn, commits, time.time(), reservations=reservations, known_ledgers=self._ledgers_known
            )
            if any(c.children or (c.parent_run_id and c.release) for c in commits):
                self._pg_notify(conn)  # sub-agent runs created, or a parent may have been resumed
            touched = self._announce(conn)  # event notifications
        self._ledgers_known.update(out.ledgers_written)  # only once the transaction has committed
        statuses = {c.run_id: c.state.status for c, r in zip(commits, out.results, strict=True) if r and c.state.status}
        self._wake(touched, statuses)
        return out

    # ------------------------------------------------------------------ PostgreSQL NOTIFY

    def _ensure_listener(self) -> None:
        if self.dialect != "postgresql" or self._listener is not None:
            return
        self._stop_channel = f"maestro_stop_{secrets.token_hex(8)}"  # close() wakes this listener at once
        self._listener = threading.Thread(target=self._listen, name="maestro-pg-listen", daemon=True)
        self._listener.start()

    def listen_deltas(self, callback: Callable[[str], None]) -> None:
        """On PostgreSQL, pass every ``maestro_deltas`` NOTIFY payload to ``callback`` (from the listener thread).

        Only processes that serve live viewers call this, so workers never receive delta traffic.
        """
        if self.dialect != "postgresql":
            return
        self._delta_listener = callback
        self._ensure_listener()

    def _listen(self) -> None:
        import psycopg

        dsn = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        while not self._closed.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")  # event notifications
                    conn.execute(f"LISTEN {self._stop_channel}")
                    deltas = False
                    while not self._closed.is_set():
                        if not deltas and self._delta_listener is not None:
                            conn.execute(f"LISTEN {DELTAS_CHANNEL}")
                            deltas = True
                        for n in conn.notifies(timeout=0.5):
                            if n.channel == EVENTS_CHANNEL:
                                origin, _, runs = n.payload.partition(",")
                                if origin != self.origin:  # this process woke its own waiters already
                                    self._wake([r for r in runs.split(",") if r])
                            elif n.channel == self._stop_channel:
                                break
                            elif n.channel == DELTAS_CHANNEL:
                                if self._delta_listener is not None:
                                    self._delta_listener(n.payload)
                            else:
                                self.waiters.notify([RUNNABLE])
            except Exception as exc:  # keep listening; polling covers the gap
                log.warning("LISTEN connection failed: %s", exc)
                self._closed.wait(1.0)
