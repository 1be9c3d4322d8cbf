"""PostgreSQL: end the sessions of stalled lock holders, so that their runs can be taken over.

A worker frozen inside a write transaction (SIGSTOP, a paused VM, a debugger) keeps the row locks of
the runs it was writing, and other workers' claims skip locked rows (``FOR UPDATE SKIP LOCKED``).
``idle_in_transaction_session_timeout`` ends such a session when it is idle between statements, but
a process frozen in the middle of a pipelined batch (psycopg sends ``executemany`` as a pipeline)
leaves its session *active*, waiting for the rest of the pipeline, and no server timeout applies
before PostgreSQL 17's ``transaction_timeout``. So the other workers end it themselves: a maestro
session whose transaction is older than the limit, holds the row of a run whose lease has expired,
and waits for its client to send something is terminated with ``pg_terminate_backend``. That is
safe because commits are fenced: the frozen worker has lost that lease, and whatever it sends after
waking is refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

_STALLED = text(
    """
    SELECT a.pid, a.application_name, pg_terminate_backend(a.pid) AS ended
    FROM pg_stat_activity a
    WHERE a.datname = current_database()
      AND a.pid <> pg_backend_pid()
      AND a.application_name LIKE 'maestro %'
      AND a.wait_event = 'ClientRead'
      AND a.xact_start < now() - make_interval(secs => :older_than)
      AND a.backend_xid IN (
          SELECT r.xmax FROM runs r
          WHERE r.status = 'RUNNING' AND r.lease_expires_at < :now
      )
    """
)


def end_stalled_holders(conn: Connection, *, older_than_s: float, now: float) -> list[dict[str, Any]]:
    """Terminate maestro sessions whose transaction (older than ``older_than_s``) locks an expired run.

    Only a session waiting for its client (``ClientRead``: the process sends nothing) is ended, never
    one busy running a statement. A locked row's ``xmax`` is the transaction id of the session
    holding it (for a single holder, which a run's row only ever has). Returns the sessions ended:
    ``pid``, ``application_name``.
    """
    rows = conn.execute(_STALLED, {"older_than": older_than_s, "now": now}).mappings().all()
    return [{"pid": r["pid"], "application_name": r["application_name"]} for r in rows if r["ended"]]
