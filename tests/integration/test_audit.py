"""The hash-chained audit log: appends, verification, tampering, concurrency, the PostgreSQL trigger."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from agentmaestro.cli import main
from agentmaestro.store import audit
from agentmaestro.store.audit import ChainReport
from agentmaestro.store.base import Store

N = 10_000


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def sqlite_path(url: str) -> str:
    db = make_url(url).database
    assert db is not None
    return db


def pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def entries(n: int, start: float = 1_700_000_000.0) -> list[audit.NewEntry]:
    return [
        audit.NewEntry(
            at=start + i * 0.001,
            actor=f"key:k{i % 7}",
            action=audit.ACTIONS[i % len(audit.ACTIONS)],
            target=f"run_{i:06d}",
            detail={"i": i, "note": "é ✓", "cost": i / 3},
        )
        for i in range(n)
    ]


def insert_chain(conn: sqlite3.Connection | psycopg.Connection, workspace: str, n: int) -> None:
    """Insert ``n`` chained entries with one executemany (chain computed in Python) and move the head."""
    rows = audit.chain_rows(workspace, 0, audit.GENESIS_HASH, entries(n))
    cols = ("workspace_id", "seq", "at", "actor", "action", "target", "detail", "prev_hash", "hash", "scheme", "key_id")
    mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    sql = f"INSERT INTO audit_log ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
    cur = conn.cursor()
    cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows])
    cur.execute(
        f"INSERT INTO audit_heads (workspace_id, seq, hash, updated_at) VALUES ({mark}, {mark}, {mark}, {mark})",
        (workspace, rows[-1]["seq"], rows[-1]["hash"], time.time()),
    )
    conn.commit()


def verify(url: str, workspace: str | None = None) -> list[ChainReport]:
    async def go() -> list[ChainReport]:
        store = Store.open(url)
        try:
            return await store.audit.verify(workspace)
        finally:
            await store.close()

    return run(go())


def test_append_list_and_verify(db_url: str) -> None:
    async def go() -> None:
        store = Store.open(db_url)
        try:
            await store.workspaces.ensure("w1")
            for i in range(5):
                await store.audit.append("default", actor="key:a", action="run.cancel", target=f"r{i}", detail={"i": i})
            await store.audit.append("w1", actor="cli:ann", action="workspace.create", target="w1")
            rows = await store.audit.page("default")
            assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
            assert rows[0]["prev_hash"] == audit.GENESIS_HASH and rows[1]["prev_hash"] == rows[0]["hash"]
            assert rows[2]["detail"] == {"i": 2} and rows[2]["target"] == "r2"
            assert audit.entry_hash(rows[4]) == rows[4]["hash"]  # the served entry re-hashes as is
            newest = await store.audit.page("default", newest_first=True, limit=2)
            assert [r["seq"] for r in newest] == [5, 4]
            assert [r["seq"] for r in await store.audit.page("default", after_seq=3)] == [4, 5]
            reports = await store.audit.verify()
            assert [(r.workspace_id, r.entries, r.ok) for r in reports] == [("default", 5, True), ("w1", 1, True)]
            assert (await store.audit.verify("nowhere"))[0].ok
        finally:
            await store.close()

    run(go())


def test_concurrent_appenders_never_fork_the_chain(db_url: str) -> None:
    """Two stores (two engines, two writer threads: like two API processes) append at once."""

    async def go() -> None:
        a, b = Store.open(db_url), Store.open(db_url)
        try:
            await asyncio.gather(
                *(
                    s.audit.append("default", actor=f"s{j}", action="run.cancel", target=str(i))
                    for i in range(40)
                    for j, s in enumerate((a, b))
                )
            )
            [report] = await a.audit.verify("default")
            assert report.ok and report.entries == 80 and report.head_seq == 80
        finally:
            await a.close()
            await b.close()

    run(go())


@pytest.fixture(scope="module")
def chain_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database holding a valid chain of 10,000 entries (copied for each tamper)."""
    path = tmp_path_factory.mktemp("audit") / "template.db"
    Store.open(f"sqlite:///{path}").close_sync()
    with closing(sqlite3.connect(path)) as conn:
        insert_chain(conn, "default", N)
    return path


TAMPERS: dict[str, tuple[Callable[[sqlite3.Connection], None], int, str]] = {
    "edit": (lambda c: c.execute("UPDATE audit_log SET actor = 'key:mallory' WHERE seq = 5000"), 5000, "hash"),
    "edit_detail": (lambda c: c.execute("""UPDATE audit_log SET detail = '{"i":1}' WHERE seq = 1234"""), 1234, "hash"),
    "edit_and_rehash": (
        lambda c: c.execute(
            "UPDATE audit_log SET hash = ? WHERE seq = 7000",
            (audit.entry_hash({**_row(c, 7000), "actor": "x", "detail": {}}),),
        ),
        7000,
        "hash",
    ),
    "delete": (lambda c: c.execute("DELETE FROM audit_log WHERE seq = 4321"), 4321, "missing"),
    "delete_first": (lambda c: c.execute("DELETE FROM audit_log WHERE seq = 1"), 1, "missing"),
    "delete_last": (lambda c: c.execute(f"DELETE FROM audit_log WHERE seq = {N}"), N, "missing"),
    "reorder": (
        lambda c: c.executescript(
            "UPDATE audit_log SET seq = -1 WHERE seq = 3000;"
            "UPDATE audit_log SET seq = 3000 WHERE seq = 3001;"
            "UPDATE audit_log SET seq = 3001 WHERE seq = -1;"
        ),
        3000,
        "hash",
    ),
}


def _row(conn: sqlite3.Connection, seq: int) -> dict[str, object]:
    conn.row_factory = sqlite3.Row
    r = conn.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    conn.row_factory = None
    return dict(r)


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampering_among_10000_entries_is_detected(chain_template: Path, tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "tampered.db"
    shutil.copy(chain_template, path)
    url = f"sqlite:///{path}"
    [clean] = verify(url)
    assert clean.ok and clean.entries == N
    fn, seq, word = TAMPERS[tamper]
    with closing(sqlite3.connect(path)) as conn:
        fn(conn)
        conn.commit()
    [report] = verify(url, "default")
    assert not report.ok and report.broken_seq == seq and word in (report.reason or ""), report


def test_rehashed_edit_breaks_the_next_link(chain_template: Path, tmp_path: Path) -> None:
    """Editing an entry and fixing its own hash still breaks the link from the entry after it."""
    path = tmp_path / "t.db"
    shutil.copy(chain_template, path)
    with closing(sqlite3.connect(path)) as conn:
        row = _row(conn, 600)
        forged = {**row, "actor": "key:mallory", "detail": {"i": 599, "note": "é ✓", "cost": 599 / 3}}
        conn.execute(
            "UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 600", ("key:mallory", audit.entry_hash(forged))
        )
        conn.commit()
    [report] = verify(f"sqlite:///{path}")
    assert not report.ok and report.broken_seq == 601 and "entry 600" in (report.reason or "")


def test_cli_audit_verify(chain_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.db"
    shutil.copy(chain_template, path)
    url = f"sqlite:///{path}"
    with pytest.raises(SystemExit) as ok:
        main(["--database-url", url, "audit", "verify"])
    assert ok.value.code == 0 and f"default: ok ({N} entries)" in capsys.readouterr().out
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 9999")
        conn.commit()
    with pytest.raises(SystemExit) as bad:
        main(["--database-url", url, "audit", "verify", "--workspace", "default"])
    captured = capsys.readouterr()
    assert bad.value.code == 1
    assert "BROKEN at entry 9999" in captured.out
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: audit chain of workspace 'default'")


def test_verify_is_fast(chain_template: Path) -> None:
    t0 = time.perf_counter()
    [report] = verify(f"sqlite:///{chain_template}")
    assert report.ok and time.perf_counter() - t0 < 10


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_refuses_update_delete_truncate(db_url: str) -> None:
    Store.open(db_url).close_sync()
    with psycopg.connect(pg_dsn(db_url)) as conn:
        insert_chain(conn, "default", 1000)
    for sql in (
        "UPDATE audit_log SET actor = 'x' WHERE seq = 10",
        "DELETE FROM audit_log WHERE seq = 10",
        "TRUNCATE audit_log",
    ):
        with psycopg.connect(pg_dsn(db_url)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
            conn.execute(sql)
        assert "append-only" in str(exc.value)
    [report] = verify(db_url)
    assert report.ok and report.entries == 1000
    # A superuser can switch the trigger off; verification still catches the edit.
    with psycopg.connect(pg_dsn(db_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute("UPDATE audit_log SET detail = '{}' WHERE seq = 500")
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
    [report] = verify(db_url)
    assert not report.ok and report.broken_seq == 500
