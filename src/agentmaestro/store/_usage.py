"""Usage and cost of a workspace (from the steps table) and the figures its quotas are checked against.

A step's tokens and cost count once, in the run that made the call: steps a fork copied from its
source run keep their original time, earlier than the fork's creation, and are left out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import Connection, Integer, and_, case, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from agentmaestro.core.states import RunStatus, StepKind
from agentmaestro.errors import NotFoundError, ValidationError
from agentmaestro.store.schema import runs, steps, workspaces

GroupBy = Literal["agent", "model", "day", "user"]
GROUP_BY: tuple[GroupBy, ...] = ("agent", "model", "day", "user")
TERMINAL = [s.value for s in RunStatus if s.terminal]


def workspace_row(conn: Connection, workspace_id: str) -> dict[str, Any]:
    """A workspace's id, name, creation time and settings (NotFoundError if it does not exist)."""
    row = conn.execute(select(workspaces).where(workspaces.c.workspace_id == workspace_id)).first()
    if row is None:
        raise NotFoundError(f"workspace {workspace_id!r} not found")
    out = dict(row._mapping)
    out["settings"] = dict(out.get("settings") or {})
    return out


def month_start(now: float) -> float:
    """Unix time of the first instant of ``now``'s calendar month (UTC)."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(t.year, t.month, 1, tzinfo=dt.UTC).timestamp()


def next_month_start(now: float) -> float:
    """Unix time of the first instant of the calendar month after ``now``'s (UTC)."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()


def _day(conn: Connection) -> ColumnElement[Any]:
    days = steps.c.created_at / 86400.0
    if conn.dialect.name != "sqlite":  # (MySQL's CAST rounds to the nearest integer)
        return cast(func.floor(days), Integer)
    return cast(days, Integer)  # SQLite truncates toward zero, which is floor for times after 1970


def _aggregates() -> list[ColumnElement[Any]]:
    return [
        func.count(func.distinct(steps.c.run_id)).label("runs"),
        func.count().label("steps"),
        func.sum(case((steps.c.kind == StepKind.MODEL_CALL.value, 1), else_=0)).label("model_calls"),
        func.sum(case((steps.c.kind == StepKind.TOOL_CALL.value, 1), else_=0)).label("tool_calls"),
        func.coalesce(func.sum(steps.c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(steps.c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(steps.c.cost_usd), 0.0).label("cost_usd"),
    ]


def _figures(m: dict[str, Any]) -> dict[str, Any]:
    for k in ("runs", "steps", "model_calls", "tool_calls", "input_tokens", "output_tokens"):
        m[k] = int(m[k] or 0)
    m["tokens"] = m["input_tokens"] + m["output_tokens"]
    m["cost_usd"] = round(float(m["cost_usd"] or 0.0), 8)
    return m


def usage(
    conn: Connection, workspace_id: str, *, since: float, until: float, group_by: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tokens, calls and cost per agent, model, UTC day or user (largest cost first; days in date order), and totals.

    Grouped by model, only model calls count (tool calls have no model); the totals count every step.
    Grouped by user, the key is who started the run tree (``user:<sha256 of email>``, ``key:<name>``,
    ``cli:<login>``; ``""`` for runs started without one, e.g. from the Python SDK).
    """
    if group_by not in GROUP_BY:
        raise ValidationError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    key: ColumnElement[Any]
    if group_by == "agent":
        key = runs.c.agent_name
    elif group_by == "model":
        key = steps.c.name
    elif group_by == "user":
        key = runs.c.created_by
    else:
        key = _day(conn)
    scope = (
        steps.c.workspace_id == workspace_id,
        runs.c.workspace_id == workspace_id,
        steps.c.created_at >= since,
        steps.c.created_at < until,
        steps.c.created_at >= runs.c.created_at,
    )
    joined = steps.join(runs, runs.c.run_id == steps.c.run_id)
    q = select(key.label("key"), *_aggregates()).select_from(joined).where(*scope).group_by(key)
    if group_by == "model":
        q = q.where(steps.c.kind == StepKind.MODEL_CALL.value)
    groups = []
    for r in conn.execute(q):
        m = _figures(dict(r._mapping))
        if group_by == "day":
            m["key"] = dt.datetime.fromtimestamp(int(m["key"]) * 86400, dt.UTC).date().isoformat()
        else:
            m["key"] = str(m["key"]) if m["key"] is not None else ""
        groups.append(m)
    total = _figures(dict(conn.execute(select(*_aggregates()).select_from(joined).where(*scope)).one()._mapping))
    if group_by == "day":
        return sorted(groups, key=lambda m: m["key"]), total
    return sorted(groups, key=lambda m: (-m["cost_usd"], -m["tokens"], m["key"])), total


def cost_since(conn: Connection, workspace_id: str, since: float) -> float:
    """USD spent by a workspace's steps since ``since`` (copied fork steps excluded)."""
    q = (
        select(func.coalesce(func.sum(steps.c.cost_usd), 0.0))
        .select_from(steps.join(runs, runs.c.run_id == steps.c.run_id))
        .where(
            steps.c.workspace_id == workspace_id,
            steps.c.created_at >= since,
            steps.c.created_at >= runs.c.created_at,
        )
    )
    return float(conn.execute(q).scalar_one() or 0.0)


def quota_usage(conn: Connection, workspace_id: str, now: float, *, with_cost: bool = True) -> dict[str, Any]:
    """What a workspace's quotas are checked against, as of ``now``.

    Returns ``active_runs`` (not terminal), ``runs_last_hour``, ``oldest_in_hour`` (creation time of the
    oldest run of the last hour, or None) and ``month_cost_usd`` (this calendar month, UTC).
    """
    active = conn.execute(
        select(func.count())
        .select_from(runs)
        .where(runs.c.workspace_id == workspace_id, runs.c.status.not_in(TERMINAL))
    ).scalar_one()
    hour = conn.execute(
        select(func.count(), func.min(runs.c.created_at)).where(
            and_(runs.c.workspace_id == workspace_id, runs.c.created_at > now - 3600)
        )
    ).one()
    return {
        "active_runs": int(active),
        "runs_last_hour": int(hour[0]),
        "oldest_in_hour": None if hour[1] is None else float(hour[1]),
        "month_cost_usd": round(cost_since(conn, workspace_id, month_start(now)), 8) if with_cost else 0.0,
    }
