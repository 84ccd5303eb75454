"""Engines for the ledger: SQLite by default, PostgreSQL to scale out.

SQLite is set up for several gunicorn workers writing at once: WAL so readers
never block the writer (nor wait for it, even while another process holds the
write lock), a busy timeout so writers queue instead of failing, and
`synchronous=FULL` so an acknowledged event survives a power loss. On
PostgreSQL every lock wait is bounded: writes wait `busy_timeout_ms`, reads a
quarter of a second, so a locked table answers at once instead of hanging.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Dialect, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from connector.config import ConfigError, DatabaseConfig, Settings
from connector.ledger.gate import WriteGate, gate_for


def normalize_url(raw: str, base_dir: Path | None = None) -> URL:
    """Pick our drivers and resolve a relative SQLite path against the config's folder."""
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        # psycopg 3 is the driver we install; SQLAlchemy's default would be psycopg2.
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.is_absolute() and base_dir is not None:
            url = url.set(database=str(base_dir / path))
    return url


SUPPORTED_BACKENDS = ("sqlite", "postgresql")
WRITE_OPTION = "ledger_write"


_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def conflict_insert(dialect: Dialect, table: Table) -> Any:
    """An INSERT with ON CONFLICT for the ledger's backend: SQLite and PostgreSQL each have their
    own construct (`on_conflict_do_nothing`, `on_conflict_do_update`, `excluded`), with one API."""
    return _DIALECT_INSERTS[dialect.name](table)


def upsert_all(connection: Connection, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Insert the rows, or update the other columns of those already there (by `keys`), as one
    executemany: a single statement shape whatever the number of rows."""
    if not rows:
        return
    insert = conflict_insert(connection.dialect, table)
    updated = [name for name in rows[0] if name not in keys]
    connection.execute(insert.on_conflict_do_update(
        index_elements=list(keys), set_={name: insert.excluded[name] for name in updated}), rows)


# SQLite file ledgers: the gate our writers queue at, and how long each engine waits there.
_write_gates: WeakKeyDictionary[Engine, tuple[WriteGate, float]] = WeakKeyDictionary()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it holds the write lock from the start,
    taken in turn with the other writers of this ledger (see gate.py)."""
    gated = _write_gates.get(engine)
    with gated[0].turn(gated[1]) if gated else nullcontext():
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
            yield connection


class KeptConnection:
    """A pooled DBAPI connection one thread keeps between its driver_write_transactions (the
    receiver's writer thread, while webhooks keep coming): no pool checkout, and on PostgreSQL no
    pre-ping round trip, per group. Dropped (invalidated) after any error, and given back to the
    pool by close()."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._connection: Any = None

    def take(self) -> Any:
        if self._connection is None:
            self._connection = self.engine.raw_connection()  # a failed connect raises the driver's error
        return self._connection

    def drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # a broken or unknown state: never back to the pool
            except Exception:  # already gone
                pass

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


@contextmanager
def driver_write_transaction(engine: Engine, kept: KeptConnection | None = None) -> Iterator[Any]:
    """The shortest write transaction there is, for the receiver's group commit: the gate's turn
    (SQLite), a pooled connection's own DBAPI cursor, BEGIN, the caller's statements, COMMIT.

    It skips what a SQLAlchemy Connection adds per transaction (events, savepoint bookkeeping, the
    compiled-statement cache): a webhook's insert is one statement, and every microsecond spent
    here holds the ledger's only write lock. The same lock waits apply as in write_transaction.
    `kept`: the connection to use, kept by the caller between transactions.
    """
    gated = _write_gates.get(engine)
    # Urgent: a request waits for this commit, and goes before the delivery workers' writes (gate.py).
    with gated[0].turn(gated[1], urgent=True) if gated else nullcontext():
        own = kept or KeptConnection(engine)
        try:
            connection = own.take()
            cursor = connection.cursor()
            if engine.dialect.name == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")  # isolation_level None: we begin (see _on_connect)
            else:
                cursor.execute(f"SET LOCAL lock_timeout = {_WRITE_LOCK_WAITS_MS[engine]}")
            try:
                yield cursor
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
        except engine.dialect.loaded_dbapi.Error as error:
            own.drop()
            # The driver's own error, wrapped as SQLAlchemy wraps it everywhere else (callers tell a
            # lock timeout from a broken ledger by it: is_lock_timeout).
            raise DBAPIError.instance(None, None, error, engine.dialect.loaded_dbapi.Error) from error
        except BaseException:
            own.drop()
            raise
        finally:
            if kept is None:
                own.close()  # back to the pool


def is_lock_timeout(error: BaseException) -> bool:
    """Whether a database error means "locked by someone else for too long", not "broken"."""
    cause = getattr(error, "orig", None) or error
    # PostgreSQL's lock_not_available, raised when lock_timeout expires:
    # https://www.postgresql.org/docs/current/errcodes-appendix.html
    if getattr(cause, "sqlstate", None) == "55P03":
        return True
    return isinstance(cause, sqlite3.OperationalError) and "database is locked" in str(cause)


def write_lock_free(engine: Engine, table: Table, wait_s: float) -> bool:
    """Whether a write to `table` could start within `wait_s`: take the lock that writing needs and
    give it back at once, writing nothing. False when someone else holds it that long; any other
    error propagates. For readiness probes: it waits behind no queue of writers but its own turn."""
    try:
        if engine.dialect.name == "sqlite":
            _take_sqlite_write_lock(engine, wait_s)
        else:
            _take_postgres_write_lock(engine, table, wait_s)
    except (OperationalError, sqlite3.OperationalError) as error:
        if is_lock_timeout(error):
            return False
        raise
    return True


def _take_sqlite_write_lock(engine: Engine, wait_s: float) -> None:
    gated = _write_gates.get(engine)
    if gated is None:  # an in-memory ledger: no other connection can hold its lock
        return
    gate, busy_timeout_s = gated
    started = time.monotonic()
    with gate.turn(wait_s), engine.connect() as connection:
        # The driver's own connection, so that SQLAlchemy begins nothing; the busy timeout is the
        # connection's, so it is put back before the connection returns to the pool.
        sqlite_connection = connection.connection.driver_connection
        left_ms = max(int((wait_s - (time.monotonic() - started)) * 1000), 1)
        sqlite_connection.execute(f"PRAGMA busy_timeout = {left_ms}")
        try:
            sqlite_connection.execute("BEGIN IMMEDIATE")
            sqlite_connection.execute("ROLLBACK")
        finally:
            sqlite_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")


def _take_postgres_write_lock(engine: Engine, table: Table, wait_s: float) -> None:
    # ROW EXCLUSIVE is the table lock every INSERT takes: it waits only for the locks that would make
    # a webhook's insert wait (LOCK TABLE, ALTER TABLE, VACUUM FULL ...), never for other writers.
    # https://www.postgresql.org/docs/current/explicit-locking.html
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {max(int(wait_s * 1000), 1)}")
            connection.exec_driver_sql(
                f"LOCK TABLE {connection.dialect.identifier_preparer.format_table(table)} IN ROW EXCLUSIVE MODE")
        finally:
            transaction.rollback()


def _install_sqlite_pragmas(engine: Engine, config: DatabaseConfig) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions start,
        # so writers can take the lock up front with BEGIN IMMEDIATE.
        # https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {config.sqlite_synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock at BEGIN: a deferred transaction that
        # reads first and writes later can fail with SQLITE_BUSY without
        # waiting for the busy timeout. Readers stay deferred (WAL lets them
        # run beside the writer).
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# How long a PostgreSQL read waits for a table lock (an ALTER TABLE, a LOCK TABLE, a VACUUM FULL):
# a read that waited longer would hold one of gunicorn's few threads, and the webhooks, probes and
# status pages queued behind it would wait too. https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-LOCK-TIMEOUT
READ_LOCK_WAIT_MS = 250


def _postgres_lock_waits_ms(config: DatabaseConfig) -> tuple[int, int]:
    """(reads, writes): at least 1 ms, as PostgreSQL's lock_timeout = 0 would wait forever."""
    write_ms = max(int(config.busy_timeout_ms), 1)
    return min(READ_LOCK_WAIT_MS, write_ms), write_ms


# PostgreSQL engines: how long their writers wait for a lock (busy_timeout_ms).
_WRITE_LOCK_WAITS_MS: WeakKeyDictionary[Engine, int] = WeakKeyDictionary()


def _install_postgres_lock_waits(engine: Engine, config: DatabaseConfig) -> None:
    write_ms = _postgres_lock_waits_ms(config)[1]
    _WRITE_LOCK_WAITS_MS[engine] = write_ms

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers wait for busy_timeout_ms, for this transaction only (SET LOCAL).
        if connection.get_execution_options().get(WRITE_OPTION, False):
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {write_ms}")


def create_ledger_engine(settings: Settings) -> Engine:
    config = settings.database
    url = normalize_url(config.url, settings.base_dir)
    backend = url.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"{settings.source}: database.url: the {backend!r} backend is not supported; "
            "use sqlite:///path/to/ledger.db or postgresql://user@host/dbname"
        )
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": config.busy_timeout_ms / 1000, "check_same_thread": False}
        kwargs["pool_size"] = config.pool_size
        kwargs["max_overflow"] = config.pool_size
        kwargs["pool_timeout"] = max(config.busy_timeout_ms / 1000, 1)
    elif backend == "postgresql":
        # Bound every lock wait, so a locked table answers 503 instead of hanging: reads briefly (see
        # _install_postgres_lock_waits), writes for busy_timeout_ms. Keep any `?options=` the user put
        # in the URL (a search_path, say).
        read_ms = _postgres_lock_waits_ms(config)[0]
        options = " ".join(filter(None, [url.query.get("options"), f"-c lock_timeout={read_ms}"]))
        url = url.difference_update_query(["options"])
        kwargs["connect_args"] = {"connect_timeout": config.connect_timeout_s, "options": options}
        kwargs["pool_size"] = config.pool_size
        kwargs["max_overflow"] = config.pool_size
        kwargs["pool_timeout"] = max(config.busy_timeout_ms / 1000, 1)
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if backend == "sqlite":
        _install_sqlite_pragmas(engine, config)
        if url.database and url.database != ":memory:":
            _write_gates[engine] = (gate_for(url.database), config.busy_timeout_ms / 1000)
    else:
        _install_postgres_lock_waits(engine, config)
    return engine
