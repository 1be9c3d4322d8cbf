"""Database URLs and engines: SQLite (WAL, durable commits), PostgreSQL (psycopg 3) and MySQL/MariaDB (PyMySQL)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Float, Table, Text, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable

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
    """Accept ``sqlite:///path``, a bare ``.db`` path, ``postgres(ql)://...`` or ``mysql://`` / ``mariadb://...``.

    Returns a SQLAlchemy URL. MySQL and MariaDB both go through PyMySQL (``mysql+pymysql``) with the
    ``utf8mb4`` character set unless the URL names another.
    """
    raw = url.strip()
    if not raw:
        raise ConfigError("database URL is empty")
    if "://" not in raw:
        if raw.endswith((".db", ".sqlite", ".sqlite3")):
            return f"sqlite:///{raw}"
        raise ConfigError(
            f"database URL {url!r} is not a URL (expected sqlite:///PATH, postgresql://... or mysql://...)"
        )
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
    if backend in ("mysql", "mariadb"):
        if not parsed.database:
            raise ConfigError(f"database URL {redact_url(raw)!r} names no database (mysql://USER@HOST:PORT/DATABASE)")
        query = {} if "charset" in parsed.query else {"charset": "utf8mb4"}
        return parsed.set(drivername="mysql+pymysql").update_query_dict(query).render_as_string(hide_password=False)
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:///PATH, postgresql://... or mysql://...")


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"


@contextlib.contextmanager
def dbapi_cursor(conn: Connection, statement: str, params: Any = None) -> Iterator[Any]:
    """A raw DBAPI cursor of ``conn`` (no SQLAlchemy execution context: the engine's hot path).

    Errors of the driver are raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` family, as any other
    statement's would be, so callers (the worker tells a database error from an engine bug) see no difference.
    """
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, params, exc, dbapi.Error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


class DriverStatement:
    """A Core statement compiled once per dialect and run on the DBAPI cursor (see :func:`dbapi_cursor`).

    The step commit is the engine's hot path: SQLAlchemy's per-row parameter processing cost about as
    much CPU as the rest of the writer's work. Parameters are plain dicts keyed by bind parameter name;
    the ones named in ``json_params`` are serialized here (PostgreSQL casts the text to JSONB). Literal
    values in the statement (``None`` for a released lease, the RUNNING guard) keep their compiled
    defaults. ``stmt`` may be a function of the connection, for a dialect-specific statement (an upsert).
    """

    def __init__(self, stmt: Any, json_params: Collection[str] = ()) -> None:
        self.stmt = stmt
        self.json_params = frozenset(json_params)
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _prepare(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> tuple[str, Any]:
        compiled = self._compiled.get(conn.dialect.name)
        if compiled is None:
            stmt = self.stmt(conn) if callable(self.stmt) else self.stmt
            c = stmt.compile(dialect=conn.dialect)
            order = tuple(c.positiontup) if c.positional and c.positiontup else None
            compiled = self._compiled[conn.dialect.name] = (str(c), order, dict(c.params))
        sql, order, defaults = compiled
        prepared: list[dict[str, Any]] = []
        for row in rows:
            values = {**defaults, **row}
            for key in self.json_params:
                values[key] = compact_json(values[key])
            prepared.append(values)
        return sql, [tuple(v[k] for k in order) for v in prepared] if order is not None else prepared

    def executemany(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Run the statement once per row (one DBAPI ``executemany``)."""
        sql, params = self._prepare(conn, rows)
        with dbapi_cursor(conn, sql, params) as cursor:
            cursor.executemany(sql, params)

    def execute(self, conn: Connection, row: dict[str, Any]) -> int:
        """Run the statement once; the number of rows it changed."""
        sql, [params] = self._prepare(conn, [row])
        with dbapi_cursor(conn, sql, params) as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)


def compact_json(value: Any) -> str:
    """JSON as stored: no spaces after separators, UTF-8 text unescaped (about 10% smaller than the default)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
        writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=2)  # one kept by the writer thread
        reader = _sqlite_engine(url, begin="BEGIN", pool_size=4)
        return writer, reader
    if parsed.get_backend_name() == "mysql":
        return _mysql_engine(url, pool_size=2, max_overflow=2), _mysql_engine(url, pool_size=4, max_overflow=4)
    # Each session names its process, so that pg_stat_activity tells which maestro process holds what.
    args = {} if "application_name" in parsed.query else {"connect_args": {"application_name": application_name()}}
    # Every use is a `begin()` block that commits or rolls back itself: no reset round trip at check-in.
    opts: dict[str, Any] = {"pool_pre_ping": True, "pool_reset_on_return": None, "json_serializer": compact_json}
    writer = create_engine(url, pool_size=2, max_overflow=2, **opts, **args)
    reader = create_engine(url, pool_size=4, max_overflow=4, **opts, **args)
    return writer, reader


MYSQL_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
"""The ``sql_mode`` of every MySQL/MariaDB session: strict (a value too long for its column is an error,
never silently cut), whatever the server's default."""


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _mysql_engine(url: str, *, pool_size: int, max_overflow: int) -> Engine:
    """A MySQL/MariaDB engine: InnoDB row locks, ``READ COMMITTED``, strict SQL mode.

    ``READ COMMITTED`` rather than InnoDB's default ``REPEATABLE READ``: the claim and commit logic is
    written for PostgreSQL's semantics, where each statement sees what was committed before it and a
    guarded UPDATE re-checks the newest row version; under ``REPEATABLE READ`` InnoDB also takes gap
    locks on the ranges a locking read scans (``FOR UPDATE``), so two workers claiming at once would
    block or deadlock on each other's gaps instead of skipping locked rows.

    PyMySQL tries TLS on every new connection unless told otherwise, building a TLS context each time
    (~0.1 s of loading CA certificates); to a server on the loopback interface that buys nothing, so
    there it is off unless the URL has ``ssl_*`` settings of its own.
    """
    parsed = make_url(url)
    connect_args: dict[str, Any] = {"program_name": application_name()}
    if parsed.host in _LOOPBACK and not any(k.startswith("ssl") for k in parsed.query):
        connect_args["ssl_disabled"] = True
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_reset_on_return=None,  # every use is a `begin()` block that commits or rolls back itself
        json_serializer=compact_json,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cur:
            cur.execute(f"SET SESSION sql_mode = '{MYSQL_SQL_MODE}'")

    return engine


def application_name() -> str:
    """The PostgreSQL ``application_name`` (MySQL ``program_name``) of this process's sessions: ``maestro <pid>``."""
    return f"maestro {os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class SessionTimeouts:
    """Session limits that keep a frozen lock holder from blocking everyone else (PostgreSQL, MySQL/MariaDB).

    A process stopped (SIGSTOP, a debugger, a VM pause) inside a write transaction keeps its row
    locks; other workers' claims skip locked runs (``SKIP LOCKED``), so without a limit its runs could
    not be taken over until it woke up. Commits are fenced by the lease epoch, so cutting such a
    session off is always safe: its transaction rolls back and its worker's next commit is refused.
    """

    idle_in_transaction_s: float
    """``idle_in_transaction_session_timeout`` (MariaDB: ``idle_transaction_timeout``, whole seconds; MySQL
    has no such setting): the server ends a session idle inside a transaction for longer than this,
    rolling back and freeing its locks. 0 turns the limit off."""
    lock_timeout_s: float
    """``lock_timeout`` (MySQL/MariaDB: ``innodb_lock_wait_timeout``, whole seconds, at least 1): a statement
    waiting longer than this for a lock fails instead of waiting on (a worker's single writer connection
    would otherwise stall its heartbeats). 0 turns it off (MySQL: the server's default)."""

    @classmethod
    def for_lease(cls, lease_ttl_s: float) -> SessionTimeouts:
        """The defaults for workers with leases of ``lease_ttl_s``: idle one lease, lock wait a quarter.

        A worker whose writer sat inside one transaction for a whole lease has lost its leases anyway
        (its heartbeats queue behind that transaction); a quarter-lease lock wait delays a heartbeat
        (every third of a lease) by less than the lease it renews has left.
        """
        return cls(idle_in_transaction_s=lease_ttl_s, lock_timeout_s=lease_ttl_s / 4)

    def statements(self, dialect: str = "postgresql", *, mariadb: bool = False) -> tuple[str, ...]:
        """The ``SET`` statements that apply these limits to a session of ``dialect``."""
        if dialect == "mysql":
            lock_wait = _whole_s(self.lock_timeout_s) or "DEFAULT"
            out: tuple[str, ...] = (f"SET SESSION innodb_lock_wait_timeout = {lock_wait}",)
            if mariadb:
                out += (f"SET SESSION idle_transaction_timeout = {_whole_s(self.idle_in_transaction_s)}",)
            return out
        return (
            f"SET idle_in_transaction_session_timeout = {_ms(self.idle_in_transaction_s)}",
            f"SET lock_timeout = {_ms(self.lock_timeout_s)}",
        )


def _ms(seconds: float) -> int:
    """Whole milliseconds for a PostgreSQL timeout (0 stays 0, meaning off; anything else at least 1)."""
    if seconds <= 0:
        return 0
    return max(1, round(seconds * 1000))


def _whole_s(seconds: float) -> int:
    """Whole seconds for a MySQL timeout (0 stays 0, meaning off; anything else rounded up, at least 1)."""
    if seconds <= 0:
        return 0
    return max(1, math.ceil(seconds))


def apply_session_timeouts(engine: Engine, current: Callable[[], SessionTimeouts | None]) -> None:
    """Keep every pooled PostgreSQL or MySQL/MariaDB connection of ``engine`` at the limits ``current()`` returns.

    Checked at each checkout (a dictionary lookup); a connection whose limits differ gets one ``SET``
    round trip, committed so that the pool's reset on return does not roll it back.
    """
    dialect = engine.dialect.name

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        wanted = current()
        if wanted is None or record.info.get(_TIMEOUTS_KEY) == wanted:
            return
        try:
            with dbapi_connection.cursor() as cur:
                for stmt in wanted.statements(dialect, mariadb=_is_mariadb(dbapi_connection)):
                    cur.execute(stmt)
            dbapi_connection.commit()
        except Exception as exc:  # a dead connection (the server restarted): the pool opens a new one
            raise DisconnectionError(f"cannot set session timeouts: {exc}") from exc
        record.info[_TIMEOUTS_KEY] = wanted


_TIMEOUTS_KEY = "maestro.session_timeouts"


def _is_mariadb(dbapi_connection: Any) -> bool:
    """Whether a DBAPI connection is a MariaDB session (PyMySQL reports the server's version string)."""
    get_server_info = getattr(dbapi_connection, "get_server_info", None)
    return get_server_info is not None and "mariadb" in str(get_server_info()).lower()


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30.0},
        pool_size=pool_size,
        max_overflow=0,
        pool_reset_on_return=None,  # every use is a `begin()` block that commits or rolls back itself
        json_serializer=compact_json,
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


def upsert(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    *,
    key: Sequence[str],
    update: Callable[[Any], Mapping[str, Any]] | None = None,
) -> Any:
    """An INSERT of ``values`` that, when a row with the same ``key`` exists, does nothing or applies ``update``.

    ``update`` maps the proposed row (PostgreSQL's and SQLite's ``excluded``, MySQL's ``VALUES()``) to the
    columns to set. MySQL's ``ON DUPLICATE KEY UPDATE`` fires on a duplicate of *any* unique key of the
    table, not only ``key``: use it where the other unique keys cannot collide (fresh ids). There,
    "do nothing" sets the first key column to itself.
    """
    if conn.dialect.name == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        ins = mysql_insert(table).values(**values)
        changes = update(ins.inserted) if update is not None else {key[0]: table.c[key[0]]}
        return ins.on_duplicate_key_update(**changes)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table).values(**values)
        if update is None:
            return pg.on_conflict_do_nothing(index_elements=list(key))
        return pg.on_conflict_do_update(index_elements=list(key), set_=dict(update(pg.excluded)))
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(table).values(**values)
    if update is None:
        return lite.on_conflict_do_nothing(index_elements=list(key))
    return lite.on_conflict_do_update(index_elements=list(key), set_=dict(update(lite.excluded)))


_MYSQL_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY


def insert_unless_duplicate(conn: Connection, table: Table, values: Mapping[str, Any], *, key: Sequence[str]) -> bool:
    """Insert one row unless one with the same ``key`` exists; whether it was inserted.

    PostgreSQL and SQLite: ``ON CONFLICT DO NOTHING RETURNING``. MySQL has neither that nor an affected-row
    count that tells an insert from a no-op update, so the row is inserted plainly inside a savepoint and
    a duplicate-key error (only that one) means "already there".
    """
    if conn.dialect.name != "mysql":
        stmt = upsert(conn, table, values, key=key).returning(table.c[key[0]])
        return conn.execute(stmt).first() is not None
    from sqlalchemy.exc import IntegrityError

    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(**values))
    except IntegrityError as exc:
        if getattr(exc.orig, "args", (None,))[0] != _MYSQL_DUPLICATE_KEY:
            raise
        return False
    return True


# --- MySQL/MariaDB DDL: the same Core tables and migrations as on the other databases -----------------


@compiles(Float, "mysql")
def _mysql_double(_type: Float[Any], _compiler: Any, **_kw: Any) -> str:
    """``DOUBLE`` for every Float column: MySQL's ``FLOAT`` is single precision (Unix times would be off by minutes)."""
    return "DOUBLE"


@compiles(CreateTable, "mysql")
def _mysql_create_table(element: CreateTable, compiler: Any, **kw: Any) -> str:
    """Tables in ``utf8mb4`` with the binary collation, whatever the database's default.

    Keys compare as they do on PostgreSQL and SQLite: case and trailing spaces count (``Agent`` and ``agent``
    are two names), where MySQL's default collations would call them duplicates.
    """
    return f"{compiler.visit_create_table(element, **kw).rstrip()} DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin\n\n"


@compiles(Text, "mysql")
def _mysql_longtext(_type: Text, _compiler: Any, **_kw: Any) -> str:
    """``LONGTEXT`` for every Text column: MySQL's ``TEXT`` holds 64 KiB (a run's input or output can be longer)."""
    return "LONGTEXT"
