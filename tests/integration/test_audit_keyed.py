"""The keyed audit chain against someone who can write the database but does not hold the keyring.

Red-team finding (issue 14, item 4): with database access, an attacker edited an entry, recomputed every
later SHA-256 and moved the head, and ``maestro audit verify`` said ok; truncating the tail, appending a
forged entry and deleting a whole chain went unseen too. Each attack below runs as that attacker (on
PostgreSQL as a superuser who switches the append-only trigger off) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text

from agentmaestro.cli import main
from agentmaestro.crypto import Keyring, generate_key
from agentmaestro.errors import ValidationError
from agentmaestro.store import audit
from agentmaestro.store.audit import ChainReport
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import normalize_url

N = 30


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def fill(db_url: str, workspaces: tuple[str, ...] = ("default",), n: int = N) -> None:
    async def go() -> None:
        store = Store.open(db_url)
        try:
            for ws in workspaces:
                await store.workspaces.ensure(ws)
                for i in range(n):
                    await store.audit.append(ws, actor="key:ops", action="run.cancel", target=f"r{i}", detail={"i": i})
        finally:
            await store.close()

    run(go())


def verify(db_url: str, workspace: str | None = "default", checkpoint: dict[str, Any] | None = None) -> ChainReport:
    async def go() -> list[ChainReport]:
        store = Store.open(db_url)
        try:
            return await store.audit.verify(workspace, checkpoint=checkpoint)
        finally:
            await store.close()

    [report] = run(go())
    return report


def checkpoint(db_url: str, workspace: str | None = None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        store = Store.open(db_url)
        try:
            return await store.audit.checkpoint(workspace)
        finally:
            await store.close()

    return run(go())


class Attacker:
    """Raw SQL on the database, as someone with write access (a superuser on PostgreSQL; on MySQL the
    TRIGGER privilege: the append-only triggers are dropped meanwhile, MySQL cannot disable one)."""

    def __init__(self, db_url: str) -> None:
        self.engine = create_engine(normalize_url(db_url))
        self.pg = self.engine.dialect.name == "postgresql"
        self.mysql_triggers: list[str] = []

    def __enter__(self) -> Connection:
        self.conn = self.engine.connect()
        if self.pg:
            self.conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        if self.engine.dialect.name == "mysql":
            for name in [r[0] for r in self.conn.execute(text("SHOW TRIGGERS LIKE 'audit_log'"))]:
                self.mysql_triggers.append(self.conn.execute(text(f"SHOW CREATE TRIGGER {name}")).one()[2])
                self.conn.execute(text(f"DROP TRIGGER {name}"))
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.pg:
            self.conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        self.conn.commit()
        for ddl in self.mysql_triggers:
            self.conn.exec_driver_sql(ddl)
        self.conn.close()
        self.engine.dispose()


def rows(conn: Connection, workspace: str = "default") -> list[dict[str, Any]]:
    got = conn.execute(text("SELECT * FROM audit_log WHERE workspace_id = :w ORDER BY seq"), {"w": workspace})
    return [{**r._mapping, "detail": json.loads(r._mapping["detail"])} for r in got]


def rewrite(conn: Connection, chain: list[dict[str, Any]], *, scheme: int, key: Any = None) -> None:
    """Recompute every hash from the first row of ``chain`` on (linking to the row before it) and move the head."""
    prev = (
        conn.execute(
            text("SELECT hash FROM audit_log WHERE workspace_id = 'default' AND seq = :s"), {"s": chain[0]["seq"] - 1}
        ).scalar()
        or audit.GENESIS_HASH
    )
    for row in chain:
        if key is not None:
            row.update(prev_hash=prev, scheme=scheme, key_id=key.key_id)
            row["hash"] = audit.entry_hash(row, (key,))
        else:  # no key: the plain SHA-256 anyone can compute, whatever the row claims
            row.update(prev_hash=prev, scheme=scheme, key_id=row["key_id"] if scheme == audit.SCHEME_HMAC else None)
            row["hash"] = audit.entry_hash({**row, "scheme": audit.SCHEME_SHA256})
        conn.execute(
            text(
                "UPDATE audit_log SET actor = :actor, detail = :detail, prev_hash = :prev_hash, hash = :hash, "
                "scheme = :scheme, key_id = :key_id WHERE workspace_id = 'default' AND seq = :seq"
            ),
            {**row, "detail": audit.canonical_json(row["detail"])},
        )
        prev = row["hash"]
    conn.execute(
        text("UPDATE audit_heads SET seq = :s, hash = :h WHERE workspace_id = 'default'"), {"s": row["seq"], "h": prev}
    )


@pytest.fixture
def chain(db_url: str) -> Iterator[str]:
    fill(db_url)
    report = verify(db_url)
    assert report.ok and report.entries == N and report.legacy_entries == 0
    yield db_url


def test_entries_are_keyed_and_served_with_their_key_id(chain: str) -> None:
    with Attacker(chain) as conn:
        got = rows(conn)
    assert {r["scheme"] for r in got} == {audit.SCHEME_HMAC}
    assert {r["key_id"] for r in got} == {audit.chain_keys()[0].key_id}
    # the plain SHA-256 anyone can compute is not the entry's hash
    assert audit.entry_hash({**got[3], "scheme": audit.SCHEME_SHA256}) != got[3]["hash"]


def test_edit_and_rechain_with_sha256_is_detected(chain: str) -> None:
    """The red team's attack: edit entry 10, recompute every later hash (unkeyed) and move the head."""
    with Attacker(chain) as conn:
        tail = rows(conn)[9:]
        tail[0]["actor"] = "key:mallory"
        rewrite(conn, tail, scheme=audit.SCHEME_HMAC)  # keyed scheme, but no key: fails on entry 10
    report = verify(chain)
    assert not report.ok and report.broken_seq == 10, report


def test_downgrading_the_tail_to_unkeyed_entries_is_detected(chain: str) -> None:
    with Attacker(chain) as conn:
        tail = rows(conn)[9:]
        tail[0]["actor"] = "key:mallory"
        rewrite(conn, tail, scheme=audit.SCHEME_SHA256)
    report = verify(chain)
    assert not report.ok and report.broken_seq == 10 and "not keyed" in (report.reason or ""), report


def test_rewriting_the_whole_chain_unkeyed_is_detected(chain: str) -> None:
    with Attacker(chain) as conn:
        whole = rows(conn)
        whole[0]["actor"] = "key:mallory"
        rewrite(conn, whole, scheme=audit.SCHEME_SHA256)
    report = verify(chain)
    assert not report.ok and "no audit.seal vouches for them" in (report.reason or ""), report


def test_rechaining_with_a_key_of_ones_own_is_detected(chain: str) -> None:
    mine = Keyring([generate_key()]).derived(audit.CHAIN_PURPOSE)[0]
    with Attacker(chain) as conn:
        tail = rows(conn)[19:]
        tail[0]["detail"] = {"i": "forged"}
        rewrite(conn, tail, scheme=audit.SCHEME_HMAC, key=mine)
    report = verify(chain)
    assert not report.ok and report.broken_seq == 20 and "not in the keyring" in (report.reason or ""), report


def test_appending_a_forged_entry_is_detected(chain: str) -> None:
    with Attacker(chain) as conn:
        last = rows(conn)[-1]
        forged = {**last, "seq": N + 1, "actor": "key:mallory", "prev_hash": last["hash"]}
        forged["hash"] = audit.entry_hash({**forged, "scheme": audit.SCHEME_SHA256})
        conn.execute(
            text(
                "INSERT INTO audit_log (workspace_id, seq, at, actor, action, target, detail, prev_hash, hash, scheme,"
                " key_id) VALUES ('default', :seq, :at, :actor, :action, :target, :detail, :prev_hash, :hash,"
                " :scheme, :key_id)"
            ),
            {**forged, "detail": audit.canonical_json(forged["detail"])},
        )
        conn.execute(text("UPDATE audit_heads SET seq = :s, hash = :h"), {"s": N + 1, "h": forged["hash"]})
    report = verify(chain)
    assert not report.ok and report.broken_seq == N + 1, report


def test_truncation_and_a_vanished_chain_are_caught_by_a_checkpoint(db_url: str, tmp_path: Path) -> None:
    fill(db_url, ("default", "other"))
    cp = checkpoint(db_url)
    assert [(c["workspace_id"], c["head_seq"]) for c in cp["chains"]] == [("default", N), ("other", N)]
    assert verify(db_url, checkpoint=cp).ok
    with Attacker(db_url) as conn:
        survivor = rows(conn)[N - 6]
        conn.execute(text("DELETE FROM audit_log WHERE workspace_id = 'default' AND seq > :s"), {"s": N - 5})
        conn.execute(
            text("UPDATE audit_heads SET seq = :s, hash = :h WHERE workspace_id = 'default'"),
            {"s": N - 5, "h": survivor["hash"]},
        )
        conn.execute(text("DELETE FROM audit_log WHERE workspace_id = 'other'"))
        conn.execute(text("DELETE FROM audit_heads WHERE workspace_id = 'other'"))
    assert verify(db_url).ok  # the database alone cannot tell: this is what the checkpoint is for
    truncated = verify(db_url, checkpoint=cp)
    assert not truncated.ok and truncated.broken_seq == N - 4 and "truncated" in (truncated.reason or "")
    gone = verify(db_url, "other", checkpoint=cp)
    assert not gone.ok and "the chain is gone" in (gone.reason or ""), gone
    # later entries are fine: the checkpoint is a floor, not a ceiling
    fill(db_url, ("third",), n=2)
    assert verify(db_url, "third", checkpoint=cp).ok


def test_a_rewritten_head_entry_differs_from_the_checkpoint(chain: str) -> None:
    cp = checkpoint(chain)
    forged = {**cp, "chains": [{**cp["chains"][0], "head_seq": N - 1}]}
    with pytest.raises(ValidationError, match="signature does not match"):
        verify(chain, checkpoint=forged)
    with pytest.raises(ValidationError, match="not an audit checkpoint"):
        verify(chain, checkpoint={"chains": []})
    other_ring = Keyring([generate_key()])
    assert other_ring.derived("audit-checkpoint/v1")[0].key_id != cp["key_id"]
    with pytest.raises(ValidationError, match="not in the keyring"):
        verify(chain, checkpoint={**cp, "key_id": other_ring.derived("audit-checkpoint/v1")[0].key_id})


def test_a_broken_chain_gets_no_checkpoint(chain: str) -> None:
    with Attacker(chain) as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'x' WHERE seq = 3"))
    with pytest.raises(ValidationError, match="broken at entry 3"):
        checkpoint(chain)


def test_legacy_entries_verify_once_sealed(db_url: str) -> None:
    """Entries written before the chain was keyed (scheme 1) count only as the prefix a keyed entry seals."""
    fill(db_url, n=5)
    with Attacker(db_url) as conn:  # make it look like a chain written by the previous release
        rewrite(conn, rows(conn), scheme=audit.SCHEME_SHA256)
    unsealed = verify(db_url)
    assert not unsealed.ok and "maestro audit seal" in (unsealed.reason or "") and unsealed.legacy_entries == 5

    async def seal() -> list[dict[str, Any]]:
        store = Store.open(db_url)
        try:
            return await store.audit.seal("cli:ops")
        finally:
            await store.close()

    [sealed] = run(seal())
    assert sealed["action"] == "audit.seal" and sealed["seq"] == 6 and sealed["detail"] == {"sealed_seq": 5}
    assert run(seal()) == []  # nothing left to seal
    report = verify(db_url)
    assert report.ok and report.legacy_entries == 5 and report.entries == 6
    # after the seal, rewriting the legacy prefix (all SHA-256, head untouched) breaks at the seal
    with Attacker(db_url) as conn:
        legacy = rows(conn)[:5]
        legacy[1]["actor"] = "key:mallory"
        prev = audit.GENESIS_HASH
        for row in legacy:
            row.update(prev_hash=prev)
            row["hash"] = audit.entry_hash(row)
            conn.execute(
                text("UPDATE audit_log SET actor = :actor, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"),
                row,
            )
            prev = row["hash"]
    broken = verify(db_url)
    assert not broken.ok and broken.broken_seq == 6, broken


def test_cli_checkpoint_verify_and_seal(chain: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cp.json"
    with pytest.raises(SystemExit) as made:
        main(["--database-url", chain, "audit", "checkpoint", "--out", str(path)])
    assert made.value.code == 0 and f"default: head {N}" in capsys.readouterr().out
    assert json.loads(path.read_text())["chains"][0]["head_seq"] == N
    with pytest.raises(SystemExit) as ok:
        main(["--database-url", chain, "audit", "verify", "--checkpoint", str(path)])
    assert ok.value.code == 0 and f"default: ok ({N} entries; checkpoint at {N})" in capsys.readouterr().out
    with Attacker(chain) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq > 20"))
        conn.execute(text("UPDATE audit_heads SET seq = 20, hash = (SELECT hash FROM audit_log WHERE seq = 20)"))
    with pytest.raises(SystemExit) as bad:
        main(["--database-url", chain, "audit", "verify", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert bad.value.code == 1 and err.count("\n") == 1 and "truncated" in err
    path.write_text(path.read_text().replace(f'"head_seq": {N}', '"head_seq": 20'))
    with pytest.raises(SystemExit) as forged:
        main(["--database-url", chain, "audit", "verify", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert forged.value.code != 0 and err.startswith("error:") and "signature" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as missing:
        main(["--database-url", chain, "audit", "verify", "--checkpoint", str(tmp_path / "nope.json")])
    err = capsys.readouterr().err
    assert missing.value.code != 0 and err.startswith("error:") and err.count("\n") == 1
    with pytest.raises(SystemExit) as sealed:
        main(["--database-url", chain, "audit", "seal"])
    assert sealed.value.code == 0 and "nothing to seal" in capsys.readouterr().out


def test_upgrading_a_database_with_an_unkeyed_chain(db_url: str) -> None:
    """Migration 0013 on a chain written by the previous release: nothing rewritten, the chain sealed."""
    from alembic import command

    from agentmaestro.store import migrate

    engine = create_engine(normalize_url(db_url))
    try:
        cfg = migrate._config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0012")
        old = [audit.NewEntry(at=1_700_000_000.0 + i, actor="key:old", action="run.cancel") for i in range(4)]
        prev = audit.GENESIS_HASH
        with engine.begin() as conn:
            for i, e in enumerate(old, 1):
                row = {
                    "workspace_id": "default",
                    "seq": i,
                    "at": e.at,
                    "actor": e.actor,
                    "action": e.action,
                    "target": None,
                    "detail": {},
                    "prev_hash": prev,
                }
                row["hash"] = audit.entry_hash(row)  # the previous release's plain SHA-256
                conn.execute(
                    text(
                        "INSERT INTO audit_log (workspace_id, seq, at, actor, action, target, detail, prev_hash, hash)"
                        " VALUES (:workspace_id, :seq, :at, :actor, :action, :target, '{}', :prev_hash, :hash)"
                    ),
                    row,
                )
                prev = row["hash"]
            conn.execute(
                text("INSERT INTO audit_heads (workspace_id, seq, hash, updated_at) VALUES ('default', 4, :h, 0)"),
                {"h": prev},
            )
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    report = verify(db_url)  # the migration sealed the chain with a keyed entry
    assert report.ok and report.entries == 5 and report.legacy_entries == 4, report
    with Attacker(db_url) as conn:
        seal = rows(conn)[4]
        assert seal["action"] == "audit.seal" and seal["actor"] == "migration:0013"
        assert seal["detail"] == {"sealed_seq": 4} and seal["scheme"] == audit.SCHEME_HMAC
    fill(db_url, n=1)
    assert verify(db_url).ok


def test_a_chain_replaced_by_unkeyed_entries_is_not_laundered_by_the_next_entry(chain: str) -> None:
    """Wipe a keyed chain, write a history of one's own the old (unkeyed) way: the server's next entry
    does not vouch for it, only an audit.seal right after it would."""
    with Attacker(chain) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE workspace_id = 'default'"))
        conn.execute(text("DELETE FROM audit_heads WHERE workspace_id = 'default'"))
        prev = audit.GENESIS_HASH
        for i in range(1, 4):
            row = {
                "workspace_id": "default",
                "seq": i,
                "at": 1.0 * i,
                "actor": "key:mallory",
                "action": "key.create",
                "target": None,
                "detail": {},
                "prev_hash": prev,
            }
            row["hash"] = audit.entry_hash(row)
            conn.execute(
                text(
                    "INSERT INTO audit_log (workspace_id, seq, at, actor, action, target, detail, prev_hash, hash)"
                    " VALUES (:workspace_id, :seq, :at, :actor, :action, :target, '{}', :prev_hash, :hash)"
                ),
                row,
            )
            prev = row["hash"]
        conn.execute(
            text("INSERT INTO audit_heads (workspace_id, seq, hash, updated_at) VALUES ('default', 3, :h, 0)"),
            {"h": prev},
        )
    assert not verify(chain).ok  # unsealed
    fill(chain, n=1)  # the server goes on appending
    report = verify(chain)
    assert not report.ok and report.broken_seq == 4 and "without sealing them" in (report.reason or ""), report
