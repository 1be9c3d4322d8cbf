"""Database URLs and engines: SQLite (WAL, durable commits) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from agentmaestro.errors import ConfigError

DEFAULT_HOME = ".maestro"


def default_database_url() -> str:
    """``MAESTRO_DATABASE_URL``, else an SQLite file under ``$MAESTRO_HOME`` (default ``./.maestro``)."""
    url = os.environ.get("MAESTRO_DATABASE_URL")
    if url:
        return url
    home = Path(os.environ.get("MAESTRO_HOME", DEFAULT_HOME))
    return f"sqlite:///{home / 'maestro.db'}"


def normalize_url(url: str) -> str:
    """Accept ``sqlite:///path``, a bare ``.db`` path, or ``postgres(ql)://...``; return a SQLAlchemy URL."""
    raw = url.strip()
    if not raw:
        raise ConfigError("database URL is empty")
    if "://" not in raw:
        if raw.endswith((".db", ".sqlite", ".sqlite3")):
            return f"sqlite:///{raw}"
        raise ConfigError(f"database URL {url!r} is not a URL (expected sqlite:///PATH or postgresql://...)")
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {url!r} is not valid: {exc}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError("an in-memory SQLite database cannot be shared by workers; give a file path")
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"


def create_engines(url: str) -> tuple[Engine, Engine]:
    """Build the (writer, reader) engines for a normalized URL.

    SQLite: the writer opens ``BEGIN IMMEDIATE`` transactions (so a write never has to upgrade a
    read lock), the reader plain ``BEGIN``; both connections use WAL, ``synchronous=FULL`` (a commit
    is on disk when it returns) and a busy timeout so that several processes can share the file.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
        reader = _sqlite_engine(url, begin="BEGIN", pool_size=4)
        return writer, reader
    writer = create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
    reader = create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
    return writer, reader


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30.0},
        pool_size=pool_size,
        max_overflow=0,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class WriterQueue:
    """Orders the write transactions of all processes on one SQLite file: an ``flock`` of ``<file>-writer.lock``.

    SQLite lets one writer in at a time and makes the others wait in its busy handler, which sleeps
    in growing steps (up to 100 ms) instead of waking when the lock is released: with several worker
    processes on one file, a waiting writer spent much of its time asleep after the lock had been
    freed. Writers take this lock around a whole write transaction (``BEGIN IMMEDIATE`` to COMMIT or
    ROLLBACK) and wait for it in steps of at most 2 ms; the kernel drops it if the process dies.

    It only orders the queue; SQLite's own locking still guards the data. So that a frozen holder (a
    stopped or hung process) can never block the others for longer than SQLite itself would, a writer
    that waited ``max_wait_s`` goes on without it, and skips it for ``bypass_s`` after that (back to
    SQLite's busy handler alone). On PostgreSQL it does nothing.
    """

    def __init__(self, database: Path | None, *, max_wait_s: float = 0.25, bypass_s: float = 5.0) -> None:
        self._path = None if database is None else database.with_name(database.name + "-writer.lock")
        self.max_wait_s = max_wait_s
        self.bypass_s = bypass_s
        self._fd: int | None = None
        self._pid = 0
        self._held = False
        self._bypass_until = 0.0

    def __enter__(self) -> None:
        if self._path is None or time.monotonic() < self._bypass_until:
            return
        if self._fd is None or self._pid != os.getpid():  # a forked child must not share the parent's lock
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        deadline = time.monotonic() + self.max_wait_s
        delay = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._bypass_until = time.monotonic() + self.bypass_s
                    return  # the holder is stuck: rely on SQLite's own lock for a while
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
            else:
                self._held = True
                return

    def __exit__(self, *_exc: object) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (after the last transaction)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def writer_queue(url: str) -> WriterQueue:
    """The :class:`WriterQueue` for a normalized database URL (a no-op one for PostgreSQL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return WriterQueue(None)
    return WriterQueue(Path(parsed.database))


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT for ``table`` that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
