"""Synchronous database operations, each run inside a transaction the caller opened.

The async :class:`~agentmaestro.store.base.Store` runs these in its writer thread (writes) or
reader threads (reads). Every status change goes through the reducer in ``core.events`` and is
applied with a guarded UPDATE in the same transaction as its events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, bindparam, case, func, insert, or_, select, tuple_, update

from agentmaestro.core.events import Event, RunState, apply_event, fold
from agentmaestro.core.states import TERMINAL_STATUSES, EventType, RunStatus, StepKind
from agentmaestro.errors import ConflictError, InvalidTransitionError
from agentmaestro.store import _budget, _rows
from agentmaestro.store._children import active_descendants, resume_parents
from agentmaestro.store.records import (
    RUN_KINDS,
    Claim,
    Commit,
    CommitResult,
    HeartbeatResult,
    NewRun,
    Refusal,
    Reservation,
    RunRecord,
    StepRow,
)

__all__ = ["NewRun"]  # re-exported: historically defined here
from agentmaestro.store.dialects import DriverStatement, compact_json, dbapi_cursor, upsert
from agentmaestro.store.schema import (
    DEFAULT_WORKSPACE,
    agents,
    approvals,
    human_requests,
    run_events,
    runs,
    steps,
    workspaces,
)

_CHUNK = 500


# ------------------------------------------------------------------------------------ workspaces


def ensure_workspace(conn: Connection, workspace_id: str, name: str | None, now: float) -> None:
    """Create the workspace if it does not exist."""
    exists = conn.execute(select(workspaces.c.workspace_id).where(workspaces.c.workspace_id == workspace_id)).first()
    if exists is None:
        # An upsert that does nothing: another process may create the same workspace at the same moment.
        values = {"workspace_id": workspace_id, "name": name or workspace_id, "created_at": now, "settings": {}}
        conn.execute(upsert(conn, workspaces, values, key=["workspace_id"]))


def list_workspaces(conn: Connection) -> list[dict[str, Any]]:
    """All workspaces."""
    rows = conn.execute(select(workspaces).order_by(workspaces.c.workspace_id))
    return [{"workspace_id": r.workspace_id, "name": r.name, "created_at": r.created_at} for r in rows]


def upsert_agent(conn: Connection, workspace_id: str, name: str, spec: dict[str, Any], now: float) -> None:
    """Store (or replace) an agent definition (one statement: safe when processes race)."""
    values = {"workspace_id": workspace_id, "name": name, "spec": spec, "created_at": now, "updated_at": now}
    changes = lambda new: {"spec": new.spec, "updated_at": now}  # noqa: E731
    conn.execute(upsert(conn, agents, values, key=["workspace_id", "name"], update=changes))


def list_agents(conn: Connection, workspace_id: str) -> list[tuple[str, dict[str, Any], float]]:
    """Stored agent definitions of a workspace."""
    rows = conn.execute(
        select(agents.c.name, agents.c.spec, agents.c.updated_at)
        .where(agents.c.workspace_id == workspace_id)
        .order_by(agents.c.name)
    )
    return [(r.name, r.spec, r.updated_at) for r in rows]


# ----------------------------------------------------------------------------------------- runs


def create_runs(conn: Connection, new_runs: Sequence[NewRun], now: float) -> list[RunRecord]:
    """Insert runs in status PENDING, each with its RUN_CREATED event."""
    run_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    records: list[RunRecord] = []
    parents = {n.parent_run_id for n in new_runs if n.parent_run_id and n.created_by is None}
    inherited: dict[str, str | None] = {}
    if parents:  # sub-runs are on behalf of whoever started the tree
        q = select(runs.c.run_id, runs.c.created_by).where(runs.c.run_id.in_(sorted(parents)))
        inherited = {r.run_id: r.created_by for r in conn.execute(q)}
    for n in new_runs:
        created_by = n.created_by if n.created_by is not None else inherited.get(n.parent_run_id or "")
        created = Event(
            run_id=n.run_id,
            seq=1,
            type=EventType.RUN_CREATED,
            created_at=now,
            payload={
                "agent": n.agent_name,
                "input": n.input,
                "policy": n.policy,
                "parent_run_id": n.parent_run_id,
                "max_attempts": n.max_attempts or int((n.spec.get("retry") or {}).get("max_attempts", 4)),
            },
        )
        state = apply_event(RunState(), created)
        run_rows.append(
            {
                "run_id": n.run_id,
                "workspace_id": n.workspace_id,
                "agent_name": n.agent_name,
                "parent_run_id": n.parent_run_id,
                "created_by": created_by,
                "input": n.input,
                "spec": n.spec,
                "version": 1,
                "lease_epoch": 0,
                "cancel_requested": False,
                "created_at": now,
                "updated_at": now,
                **_rows.snapshot_columns(state),
            }
        )
        event_rows.extend(_rows.event_rows(n.workspace_id, [created]))
        records.append(
            RunRecord(
                run_id=n.run_id,
                workspace_id=n.workspace_id,
                agent_name=n.agent_name,
                parent_run_id=n.parent_run_id,
                input=n.input,
                spec=n.spec,
                state=state,
                version=1,
                lease_owner=None,
                lease_epoch=0,
                lease_expires_at=None,
                cancel_requested=False,
                cancel_reason=None,
                created_at=now,
                updated_at=now,
                finished_at=None,
                created_by=created_by,
            )
        )
    if run_rows:
        conn.execute(insert(runs), run_rows)
        conn.execute(insert(run_events), event_rows)
    return records


def list_runs(
    conn: Connection,
    *,
    workspace_id: str | None,
    statuses: Collection[str] | None = None,
    agent: str | None = None,
    parent_run_id: str | None = None,
    top_level: bool = False,
    kind: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """Runs, newest first; ``before`` is a run id cursor (run ids sort by creation time).

    ``top_level`` keeps runs without a parent; ``kind`` (see :func:`run_kind`) filters on the spec's kind.
    """
    q = select(runs)
    if workspace_id is not None:
        q = q.where(runs.c.workspace_id == workspace_id)
    if statuses:
        q = q.where(runs.c.status.in_(list(statuses)))
    if agent:
        q = q.where(runs.c.agent_name == agent)
    if parent_run_id:
        q = q.where(runs.c.parent_run_id == parent_run_id)
    if top_level:
        q = q.where(runs.c.parent_run_id.is_(None))
    if kind:
        spec_kind = runs.c.spec["kind"].as_string()
        if kind == "agent":
            q = q.where(or_(spec_kind.is_(None), spec_kind.not_in(list(RUN_KINDS))))
        else:
            q = q.where(spec_kind.in_([k for k, v in RUN_KINDS.items() if v == kind] or [kind]))
    if before:
        q = q.where(runs.c.run_id < before)
    q = q.order_by(runs.c.run_id.desc()).limit(limit)
    return [_rows.record_from_row(r) for r in conn.execute(q)]


def count_children(conn: Connection, run_ids: Collection[str]) -> dict[str, tuple[int, int]]:
    """``{run_id: (children, finished children)}`` for those of ``run_ids`` that have child runs."""
    if not run_ids:
        return {}
    finished = func.sum(case((runs.c.status.in_([s.value for s in TERMINAL_STATUSES]), 1), else_=0))
    q = (
        select(runs.c.parent_run_id, func.count(), finished)
        .where(runs.c.parent_run_id.in_(list(run_ids)))
        .group_by(runs.c.parent_run_id)
    )
    return {parent: (int(n), int(done or 0)) for parent, n, done in conn.execute(q)}


def count_runs_by_status(conn: Connection, workspace_id: str | None) -> dict[str, int]:
    """Number of runs per status."""
    q = select(runs.c.status, func.count()).group_by(runs.c.status)
    if workspace_id is not None:
        q = q.where(runs.c.workspace_id == workspace_id)
    return {status: int(n) for status, n in conn.execute(q)}


def run_statuses(conn: Connection, run_ids: Sequence[str]) -> dict[str, RunStatus]:
    """The current status of each of ``run_ids`` that exists."""
    out: dict[str, RunStatus] = {}
    for i in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[i : i + _CHUNK]
        for run_id, status in conn.execute(select(runs.c.run_id, runs.c.status).where(runs.c.run_id.in_(chunk))):
            out[run_id] = RunStatus(status)
    return out


def list_events(conn: Connection, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[Event]:
    """A run's events with seq greater than ``after_seq``, in order."""
    q = select(run_events).where(run_events.c.run_id == run_id, run_events.c.seq > after_seq).order_by(run_events.c.seq)
    if limit is not None:
        q = q.limit(limit)
    return [_rows.event_from_row(r) for r in conn.execute(q)]


def list_steps(conn: Connection, run_id: str) -> list[StepRow]:
    """A run's finished steps, in order."""
    q = select(steps).where(steps.c.run_id == run_id).order_by(steps.c.step_index)
    return [
        StepRow(
            step_index=r.step_index,
            kind=StepKind(r.kind),
            name=r.name,
            status=r.status,
            seq=r.seq,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cost_usd=r.cost_usd,
            duration_ms=r.duration_ms,
            created_at=r.created_at,
        )
        for r in conn.execute(q)
    ]


# ------------------------------------------------------------------------------ claims and leases


def claim_runs(
    conn: Connection,
    *,
    owner: str,
    limit: int,
    lease_ttl: float,
    now: float,
    agent_names: Collection[str] | None,
    run_ids: Collection[str] | None,
    skip_locked: bool,
) -> list[Claim]:
    """Lease up to ``limit`` runnable runs: PENDING ones, and RUNNING ones whose lease expired.

    Each claim bumps the fencing epoch, so a commit from the previous holder no longer matches.
    """
    runnable = or_(
        runs.c.status == RunStatus.PENDING.value,
        and_(
            runs.c.status == RunStatus.RUNNING.value,
            or_(runs.c.lease_expires_at.is_(None), runs.c.lease_expires_at < now),
        ),
    )
    filters = []
    if agent_names is not None:
        filters.append(runs.c.agent_name.in_(list(agent_names)))
    if run_ids is not None:
        filters.append(runs.c.run_id.in_(list(run_ids)))
    q = select(runs).where(runnable, *filters).order_by(runs.c.created_at).limit(limit)
    if skip_locked:
        q = q.with_for_update(skip_locked=True)
    rows: Sequence[Any]
    if skip_locked and conn.dialect.name == "mysql" and run_ids is None:  # (given ids: found by key, few rows)
        rows = _claimable_rows_mysql(conn, runnable.clauses, filters, limit)
    else:
        rows = conn.execute(q).all()
    claims: list[Claim] = []
    updates: list[dict[str, Any]] = []
    new_events: list[dict[str, Any]] = []
    for row in rows:
        rec = _rows.record_from_row(row)
        epoch = rec.lease_epoch + 1
        seq = rec.state.last_seq + 1
        if rec.status is RunStatus.PENDING:
            ev: Event | None = Event(
                run_id=rec.run_id,
                seq=seq,
                type=EventType.RUN_STARTED,
                created_at=now,
                payload={"worker": owner, "epoch": epoch},
            )
            recovered_from = None
        elif rec.lease_owner is None:
            # A RUNNING run nobody holds: a human just resumed it (approval, escalation). No event.
            ev = None
            recovered_from = None
        else:
            ev = Event(
                run_id=rec.run_id,
                seq=seq,
                type=EventType.LEASE_RECOVERED,
                created_at=now,
                payload={"worker": owner, "epoch": epoch, "previous_worker": rec.lease_owner},
            )
            recovered_from = rec.lease_owner or "(none)"
        state = apply_event(rec.state, ev) if ev is not None else rec.state
        updates.append(
            {
                "b_run_id": rec.run_id,
                "b_version": rec.version,
                "version": rec.version + 1,
                "lease_owner": owner,
                "lease_epoch": epoch,
                "lease_expires_at": now + lease_ttl,
                "updated_at": now,
                **_rows.snapshot_columns(state),
            }
        )
        if ev is not None:
            new_events.extend(_rows.event_rows(rec.workspace_id, [ev]))
        claims.append(
            Claim(
                record=dataclasses.replace(
                    rec,
                    state=state,
                    version=rec.version + 1,
                    lease_owner=owner,
                    lease_epoch=epoch,
                    lease_expires_at=now + lease_ttl,
                    updated_at=now,
                ),
                recovered_from=recovered_from,
                events=(ev,) if ev is not None else (),
            )
        )
    if not claims:
        return []
    stmt = (
        update(runs)
        .where(runs.c.run_id == bindparam("b_run_id"), runs.c.version == bindparam("b_version"))
        .values({k: bindparam(k) for k in updates[0] if not k.startswith("b_")})
    )
    result = conn.execute(stmt, updates)
    if result.rowcount != len(updates):
        # Another process changed a candidate between our read and write (only possible without
        # row locks); give up this round, the caller retries.
        raise ConflictError("claim raced with another writer")
    if new_events:
        conn.execute(insert(run_events), new_events)
    return claims


def _claimable_rows_mysql(conn: Connection, kinds: Sequence[Any], filters: Sequence[Any], limit: int) -> list[Any]:
    """MySQL: the oldest ``limit`` claimable rows, locked, each kind of runnable run read in index order.

    InnoDB locks every row a locking read fetches, and with ``ORDER BY created_at`` over both statuses it
    fetches all of them for a filesort before ``LIMIT`` applies: one claim would lock every runnable run,
    and every other worker's ``SKIP LOCKED`` would find nothing. Read in ``ix_runs_claim`` order one status
    at a time, a locking read stops after ``limit`` rows (rows that fail the rest of the condition are
    unlocked again under ``READ COMMITTED``); at most ``limit`` extra rows stay locked until the claim
    commits.
    """
    rows: list[Any] = []
    for kind in kinds:  # PENDING; RUNNING with an expired lease
        q = (
            select(runs)
            .with_hint(runs, "FORCE INDEX (ix_runs_claim)", "mysql")
            .where(kind, *filters)
            .order_by(runs.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows.extend(conn.execute(q).all())
    return sorted(rows, key=lambda r: r.created_at)[:limit]


def heartbeat(
    conn: Connection, *, owner: str, leases: Sequence[tuple[str, int]], lease_ttl: float, now: float
) -> HeartbeatResult:
    """Extend exactly the leases ``(run_id, epoch)`` this worker still drives; report lost ones and cancel requests.

    A run the worker holds but no longer drives (dropped after a database error) is not in ``leases``,
    so its lease is not renewed and another worker can take it over once it expires.
    """
    renewed: dict[str, bool] = {}
    pairs = list(leases)
    for i in range(0, len(pairs), _CHUNK):
        chunk = pairs[i : i + _CHUNK]
        held = (
            # run_id IN (...) as well: MariaDB does not look a one-pair row IN up by primary key; it scanned
            # (and locked) every RUNNING run through ix_runs_claim, deadlocking with other workers' commits.
            runs.c.run_id.in_([run_id for run_id, _ in chunk]),
            tuple_(runs.c.run_id, runs.c.lease_epoch).in_(chunk),
            runs.c.lease_owner == owner,
            runs.c.status == RunStatus.RUNNING.value,
        )
        stmt = update(runs).where(*held).values(lease_expires_at=now + lease_ttl)
        if conn.dialect.update_returning:
            rows = conn.execute(stmt.returning(runs.c.run_id, runs.c.cancel_requested))
        else:  # MySQL: read the renewed rows back (locked by this transaction now; no other can have come to match)
            conn.execute(stmt)
            rows = conn.execute(select(runs.c.run_id, runs.c.cancel_requested).where(*held))
        renewed.update((r.run_id, bool(r.cancel_requested)) for r in rows)
    lost = frozenset(run_id for run_id, _ in pairs if run_id not in renewed)
    cancel = frozenset(run_id for run_id, wanted in renewed.items() if wanted)
    return HeartbeatResult(lost=lost, cancel_requested=cancel)


def release_leases(
    conn: Connection, *, owner: str, leases: Sequence[tuple[str, int]], now: float = 0.0, delay_s: float = 0.0
) -> None:
    """Let other workers claim these runs (at once, or ``delay_s`` after ``now``): shutdown, or a run dropped."""
    expires = now + delay_s if delay_s > 0 else 0.0
    for run_id, epoch in sorted(leases):  # (in key order, as every other multi-run lock is taken)
        conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.lease_owner == owner, runs.c.lease_epoch == epoch)
            .values(lease_expires_at=expires)
        )


# ---------------------------------------------------------------------------------------- commits


_SNAPSHOT_COLUMNS = ("state", "status", "phase", "steps", "tool_calls", "tokens", "cost_usd", "output", "error")


def _commit_update(release: bool) -> Any:
    values: dict[str, Any] = {c: bindparam(c) for c in (*_SNAPSHOT_COLUMNS, "last_seq", "version", "updated_at")}
    values["finished_at"] = bindparam("finished_at")
    if release:
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    return (
        update(runs)
        .where(
            runs.c.run_id == bindparam("g_run_id"),
            runs.c.status == RunStatus.RUNNING.value,
            runs.c.lease_owner == bindparam("g_owner"),
            runs.c.lease_epoch == bindparam("g_epoch"),
            runs.c.version == bindparam("g_version"),
        )
        .values(values)
    )


EVENT_RUNS_KEY = "maestro.event_runs"
"""``conn.info`` key: the runs that got events in this transaction (see ``Store._announce``)."""


_COMMIT_KEEP = DriverStatement(_commit_update(release=False), json_params=("state",))
_COMMIT_RELEASE = DriverStatement(_commit_update(release=True), json_params=("state",))
"""Guarded step commits, built once; a batch runs them as executemany with per-commit parameters."""
_INSERT_EVENTS = DriverStatement(insert(run_events), json_params=("payload",))
_INSERT_STEPS = DriverStatement(insert(steps))


def _lock_runs_in_key_order(conn: Connection, run_ids: list[str]) -> None:
    """MySQL: lock a commit batch's run rows in primary-key order before its guarded updates.

    InnoDB makes a guarded UPDATE by primary key wait for a row another transaction holds (no re-check of
    the last committed version, as it does for scans), and a batch updates its runs in no particular
    order while heartbeats lock theirs in key order: a worker whose lease was taken over, committing at
    the moment its successor renews, deadlocked with it, and the whole batch failed. Taking the locks in
    key order first makes every such wait an ordered one.
    """
    for i in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[i : i + _CHUNK]
        sql = f"SELECT run_id FROM runs WHERE run_id IN ({', '.join(['%s'] * len(chunk))}) ORDER BY run_id FOR UPDATE"
        with dbapi_cursor(conn, sql, chunk) as cursor:
            cursor.execute(sql, tuple(chunk))


_MYSQL_GUARD = ("g_run_id", "g_owner", "g_epoch", "g_version")
_MYSQL_SET = (*_SNAPSHOT_COLUMNS, "last_seq", "version", "updated_at", "finished_at")


def _commit_updates_mysql(conn: Connection, rows: list[dict[str, Any]], *, release: bool) -> None:
    """MySQL: a batch's guarded snapshot updates as one statement per 500 runs (a join with the new values).

    PyMySQL sends an ``executemany`` UPDATE as one round trip per row; a busy worker process (its event
    loop holding the GIL between them) then kept its row locks for a second or more per batch, and other
    workers' lock waits ran out. The guard is the same as :func:`_commit_update`'s, row by row.
    """
    cols = (*_MYSQL_GUARD, *_MYSQL_SET)
    sets = ", ".join(f"r.{c} = v.{c}" for c in _MYSQL_SET)
    if release:
        sets += ", r.lease_owner = NULL, r.lease_expires_at = NULL"
    first = "SELECT " + ", ".join(f"%s AS {c}" for c in cols)
    more = " UNION ALL SELECT " + ", ".join(["%s"] * len(cols))
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        sql = (
            f"UPDATE runs AS r JOIN ({first}{more * (len(chunk) - 1)}) AS v ON r.run_id = v.g_run_id SET {sets} "
            f"WHERE r.status = 'RUNNING' AND r.lease_owner = v.g_owner AND r.lease_epoch = v.g_epoch "
            f"AND r.version = v.g_version"
        )
        params = [compact_json(row[c]) if c == "state" else row[c] for row in chunk for c in cols]
        with dbapi_cursor(conn, sql, params) as cursor:
            cursor.execute(sql, params)


_READ_BACK = "SELECT run_id, version, lease_owner, lease_epoch, cancel_requested FROM runs WHERE run_id IN ({})"


class _ReadBack(NamedTuple):
    version: int
    lease_owner: str | None
    lease_epoch: int
    cancel_requested: Any


def _read_back(conn: Connection, run_ids: list[str]) -> dict[str, _ReadBack]:
    """(version, lease owner, epoch, cancel flag) of the committed runs, by run id: plain SQL, no compiling."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    out: dict[str, Any] = {}
    for i in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[i : i + _CHUNK]
        sql = _READ_BACK.format(", ".join([mark] * len(chunk)))
        with dbapi_cursor(conn, sql, chunk) as cursor:
            cursor.execute(sql, tuple(chunk))
            for run_id, version, owner, epoch, cancel in cursor.fetchall():
                out[run_id] = _ReadBack(version, owner, epoch, cancel)
    return out


def apply_commits(
    conn: Connection,
    commits: Sequence[Commit],
    now: float,
    *,
    reservations: Sequence[Reservation] = (),
    known_ledgers: _budget.KnownLedgers | None = None,
) -> BatchResult:
    """Apply step commits and budget reservations in one transaction.

    ``results`` has ``None`` for each commit whose guard failed (lease lost or stale version). All
    guarded UPDATEs of the batch run as one executemany; a read-back of (version, lease owner, epoch)
    under the same write lock tells which of them matched. This is sound because every writer bumps
    ``version`` on every change and every claim bumps ``lease_epoch``. Then, for the commits that
    held: settlements of finished model calls, the reservations they carry for their next model
    call, and ``reservations`` made on their own (a run's first model call), in that order.
    """
    keep: list[dict[str, Any]] = []
    release: list[dict[str, Any]] = []
    for c in commits:
        row = _rows.snapshot_columns(c.state)
        row.update(
            version=c.version + 1,
            updated_at=now,
            finished_at=c.finished_at,
            g_run_id=c.run_id,
            g_owner=c.owner,
            g_epoch=c.epoch,
            g_version=c.version,
        )
        (release if c.release else keep).append(row)
    if conn.dialect.name == "mysql":
        if commits:
            _lock_runs_in_key_order(conn, sorted({c.run_id for c in commits}))
        _commit_updates_mysql(conn, keep, release=False)
        _commit_updates_mysql(conn, release, release=True)
    else:
        if keep:
            _COMMIT_KEEP.executemany(conn, keep)
        if release:
            _COMMIT_RELEASE.executemany(conn, release)
    current = _read_back(conn, [c.run_id for c in commits])
    results: list[CommitResult | None] = []
    held: list[Commit] = []
    event_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    for c in commits:
        r = current.get(c.run_id)
        expected_owner = None if c.release else c.owner
        if r is None or r.version != c.version + 1 or r.lease_owner != expected_owner or r.lease_epoch != c.epoch:
            results.append(None)
            continue
        results.append(CommitResult(version=c.version + 1, cancel_requested=bool(r.cancel_requested)))
        held.append(c)
        event_rows.extend(_rows.event_rows(c.workspace_id, c.events))
        step_rows.extend(_rows.step_rows(c.run_id, c.workspace_id, c.steps))
    if event_rows:
        _INSERT_EVENTS.executemany(conn, event_rows)
        conn.info.setdefault(EVENT_RUNS_KEY, set()).update(r["run_id"] for r in event_rows)
    if step_rows:
        _INSERT_STEPS.executemany(conn, step_rows)
    approval_rows = [c.approval for c, r in zip(commits, results, strict=True) if r is not None and c.approval]
    if approval_rows:
        conn.execute(insert(approvals), approval_rows)
    human_rows = [c.human_request for c, r in zip(commits, results, strict=True) if r is not None and c.human_request]
    if human_rows:
        conn.execute(insert(human_requests), human_rows)
    budget = _apply_budget(conn, held, reservations, now, known_ledgers)
    if budget.commit_refusals:
        for i, (c, done) in enumerate(zip(commits, results, strict=True)):
            if done is not None and c.run_id in budget.commit_refusals:
                results[i] = dataclasses.replace(done, refusal=budget.commit_refusals[c.run_id])
    children = [child for c, r in zip(commits, results, strict=True) if r is not None for child in c.children]
    if children:
        create_runs(conn, children, now)
    parents = [
        c.parent_run_id
        for c, r in zip(commits, results, strict=True)
        if r is not None and c.parent_run_id and c.state.status is not None and c.state.status.terminal
    ]
    # A run that just started waiting may wait for a child that already ended (objectives re-wait
    # for the children still in flight): check it in the same transaction.
    parents += [
        c.run_id
        for c, r in zip(commits, results, strict=True)
        if r is not None and c.state.status is RunStatus.WAITING_FOR_CHILDREN
    ]
    if parents:
        resume_parents(conn, parents, now)
    return BatchResult(results=results, refusals=budget.refusals, ledgers_written=budget.ledgers_written)


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """What one group-committed transaction did."""

    results: list[CommitResult | None]
    """Per commit: its result, or None when its guard failed."""
    refusals: list[Refusal | None]
    """Per stand-alone reservation: None when reserved, else why it was refused."""
    ledgers_written: _budget.KnownLedgers
    """Ledger limits written by this transaction (valid once it has committed)."""


@dataclass(frozen=True, kw_only=True)
class _BudgetOutcome:
    commit_refusals: dict[str, Refusal]
    refusals: list[Refusal | None]
    ledgers_written: _budget.KnownLedgers


def _apply_budget(
    conn: Connection,
    held: Sequence[Commit],
    reservations: Sequence[Reservation],
    now: float,
    known: _budget.KnownLedgers | None,
) -> _BudgetOutcome:
    settle = [e for c in held for e in c.budget_settle]
    carried = [c for c in held if c.reserve is not None]
    if not settle and not carried and not reservations:
        return _BudgetOutcome(commit_refusals={}, refusals=[], ledgers_written={})
    all_reservations = [c.reserve for c in carried if c.reserve is not None] + list(reservations)
    _budget.lock(conn, [e["ledger_id"] for e in settle] + [lg.ledger_id for r in all_reservations for lg in r.ledgers])
    if settle:
        _budget.settle(conn, settle, now)
    outcomes, written = _budget.reserve_all(conn, all_reservations, now, known)
    commit_refusals = {
        c.run_id: refusal for c, refusal in zip(carried, outcomes[: len(carried)], strict=True) if refusal is not None
    }
    return _BudgetOutcome(commit_refusals=commit_refusals, refusals=outcomes[len(carried) :], ledgers_written=written)


def backfill_step_rows(conn: Connection) -> int:
    """Insert the ``steps`` rows missing for finished steps; returns how many.

    Steps finished outside a worker (a person's answer to an uncertain call, a rejected approval, a
    sub-run's result) got no row before migration 0016; their events hold what the row needs.
    """
    e, s = run_events, steps
    missing = (
        select(e)
        .select_from(e.outerjoin(s, and_(s.c.run_id == e.c.run_id, s.c.step_index == e.c.step_index)))
        .where(
            e.c.type.in_([EventType.STEP_COMPLETED.value, EventType.STEP_FAILED.value]),
            e.c.step_index.is_not(None),
            s.c.run_id.is_(None),
        )
        .order_by(e.c.run_id, e.c.seq)
    )
    rows: list[dict[str, Any]] = []
    for r in conn.execute(missing):
        row = _rows.step_row_of(_rows.event_from_row(r))
        if row is not None:
            rows.extend(_rows.step_rows(r.run_id, r.workspace_id, [row]))
    for i in range(0, len(rows), _CHUNK):
        conn.execute(insert(steps), rows[i : i + _CHUNK])
    return len(rows)


def request_cancel(
    conn: Connection, run_id: str, workspace_id: str | None, reason: str, by: str, now: float, cascade: bool = True
) -> tuple[RunRecord, bool]:
    """Cancel a run. Returns (record, immediate).

    A RUNNING run gets a cancel request that its worker records at the next step (cooperative);
    PENDING and waiting runs are cancelled at once. Terminal runs raise ConflictError.
    """
    rec = _rows.get_run(conn, run_id, workspace_id)
    if rec.status.terminal:
        raise ConflictError(f"run {run_id!r} is already {rec.status.value}")
    if rec.status is RunStatus.RUNNING:
        res = conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.status == RunStatus.RUNNING.value)
            .values(cancel_requested=True, cancel_reason=f"{reason} (by {by})", updated_at=now)
        )
        if res.rowcount != 1:
            raise ConflictError(f"run {run_id!r} changed concurrently; try again")
        if cascade:
            _after_cancel(conn, rec, reason, by, now)
        return dataclasses.replace(rec, cancel_requested=True), False
    ev = Event(
        run_id=run_id,
        seq=rec.state.last_seq + 1,
        type=EventType.RUN_CANCELLED,
        created_at=now,
        payload={"reason": reason, "by": by},
    )
    out = _rows.append_guarded(
        conn, rec, [ev], now, finished_at=now, lease_owner=None, lease_expires_at=None, cancel_requested=False
    )
    _close_open_requests(conn, run_id, reason, by, now)
    if cascade:
        _after_cancel(conn, rec, reason, by, now)
    elif rec.parent_run_id:
        resume_parents(conn, [rec.parent_run_id], now)
    return dataclasses.replace(out, finished_at=now, lease_owner=None, lease_expires_at=None), True


def _close_open_requests(conn: Connection, run_id: str, reason: str, by: str, now: float) -> None:
    """A cancelled run's pending approval and escalation leave the human queue (nothing left to decide)."""
    why = f"run cancelled: {reason}"
    conn.execute(
        update(approvals)
        .where(approvals.c.run_id == run_id, approvals.c.status == "pending")
        .values(status="expired", decided_at=now, decided_by=by, decision_reason=why)
    )
    conn.execute(
        update(human_requests)
        .where(human_requests.c.run_id == run_id, human_requests.c.status == "pending")
        .values(status="resolved", resolved_at=now, resolved_by=by, resolution={"action": "cancelled", "reason": why})
    )


def _after_cancel(conn: Connection, rec: RunRecord, reason: str, by: str, now: float) -> None:
    """Cancel the run's sub-agent runs, and resume its parent if it was the last child running."""
    for child_id in active_descendants(conn, rec.run_id):
        child = _rows.get_run(conn, child_id)
        if child.status.terminal:
            continue
        request_cancel(conn, child_id, None, f"parent run {rec.run_id} cancelled: {reason}", by, now, cascade=False)
    if rec.parent_run_id:
        resume_parents(conn, [rec.parent_run_id], now)


def resume_run(
    conn: Connection, run_id: str, workspace_id: str | None, by: str, policy: dict[str, Any] | None, now: float
) -> RunRecord:
    """Move a FAILED or CANCELLED run back to PENDING; it continues from its last completed step."""
    rec = _rows.get_run(conn, run_id, workspace_id)
    if rec.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise InvalidTransitionError(
            f"run {run_id!r} is {rec.status.value}; only FAILED or CANCELLED runs can be resumed"
        )
    payload: dict[str, Any] = {"by": by}
    if policy:
        payload["policy"] = rec.state.policy.merged(policy).to_json()
    ev = Event(run_id=run_id, seq=rec.state.last_seq + 1, type=EventType.RUN_RESUMED, created_at=now, payload=payload)
    out = _rows.append_guarded(conn, rec, [ev], now, finished_at=None, cancel_requested=False, cancel_reason=None)
    return dataclasses.replace(out, finished_at=None, cancel_requested=False, cancel_reason=None)


def fork_run(
    conn: Connection,
    run_id: str,
    workspace_id: str | None,
    at_seq: int,
    new_run_id: str,
    by: str,
    now: float,
    policy: dict[str, Any] | None = None,
) -> RunRecord:
    """Create a new PENDING run whose history is a copy of ``run_id``'s events up to ``at_seq``."""
    src = _rows.get_run(conn, run_id, workspace_id)
    if at_seq < 1 or at_seq > src.state.last_seq:
        raise InvalidTransitionError(f"seq {at_seq} is outside run {run_id!r} (events 1..{src.state.last_seq})")
    history = list_events(conn, run_id, 0, at_seq)
    # A step that started but did not finish is dropped: the fork makes that call afresh.
    while history and history[-1].type is EventType.STEP_STARTED:
        history.pop()
    copied = [dataclasses.replace(e, run_id=new_run_id) for e in history]
    state = fold(copied)
    assert state.status is not None
    if state.status.terminal:
        raise InvalidTransitionError(
            f"run {run_id!r} is {state.status.value} at seq {at_seq}; fork at an earlier event to continue it"
        )
    forked = Event(
        run_id=new_run_id,
        seq=state.last_seq + 1,
        type=EventType.RUN_FORKED,
        created_at=now,
        payload={"source_run_id": run_id, "at_seq": at_seq, "by": by},
    )
    if policy:
        forked.payload["policy"] = state.policy.merged(policy).to_json()
    state = apply_event(state, forked)
    conn.execute(
        insert(runs).values(
            run_id=new_run_id,
            workspace_id=src.workspace_id,
            agent_name=src.agent_name,
            parent_run_id=src.parent_run_id,
            created_by=by,
            input=src.input,
            spec=src.spec,
            version=1,
            lease_epoch=0,
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            **_rows.snapshot_columns(state),
        )
    )
    conn.execute(insert(run_events), _rows.event_rows(src.workspace_id, [*copied, forked]))
    src_steps = [s for s in list_steps(conn, run_id) if s.seq <= forked.seq - 1 and s.step_index < state.steps]
    if src_steps:
        conn.execute(insert(steps), _rows.step_rows(new_run_id, src.workspace_id, src_steps))
    return _rows.get_run(conn, new_run_id)


def default_workspace() -> str:
    """The workspace used when none is given."""
    return DEFAULT_WORKSPACE
