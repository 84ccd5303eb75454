"""The shared state behind every process's rate limiter: one row per CRM account, one statement per grant.

Each statement runs on its own, in autocommit, and returns at once: nothing is locked while the
CRM call runs. On PostgreSQL the rows live in the ledger (tables `rate_limit_windows` and
`rate_limit_leases`, migration 0009), so every process on every host shares them. On SQLite they
live in a small file of their own beside the ledger (`<ledger>-rate-limits`): a grant is a write,
and writes to the ledger itself queue at its single write lock with every webhook's insert
(fsynced, `synchronous=FULL`); in a file of its own, with `synchronous=OFF` (it holds nothing that
must survive a power loss), a grant costs tens of microseconds and a webhook never waits behind one.
Only the processes of one host can share a SQLite ledger, so that is all this file has to cover.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Float, create_engine, event, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from connector.ledger.models import RateLimitLease, RateLimitWindow

_windows = RateLimitWindow.__table__
_leases = RateLimitLease.__table__
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

# A grant waits for a row another grant holds (PostgreSQL) or for the file's write lock (SQLite) for
# microseconds; a longer wait (a lock_timeout, "database is locked") is tried again this many times.
_ATTEMPTS = 5


class RateLimitStore:
    """Grants request slots, pauses and concurrency leases for CRM accounts, across processes."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._greatest = func.greatest if engine.dialect.name == "postgresql" else func.max
        self._known: set[tuple[str, int]] = set()  # (account, leases) rows this process made sure exist

    def take_slot(self, account: str, destination: str, spacing: float, now: float) -> float:
        """The instant (epoch seconds) this caller may send its request: the account's next free slot,
        not before `now` nor before a pause ends. The following slot is `spacing` later."""
        start = self._greatest(_windows.c.next_slot_at, literal(now, Float), _windows.c.paused_until)
        statement = (update(_windows).where(_windows.c.account_key == account)
                     .values(next_slot_at=start + spacing).returning(_windows.c.next_slot_at))
        for _ in range(2):
            row = self._run(statement).first()
            if row is not None:
                return float(row[0]) - spacing
            self._create_window(account, destination)
        raise RuntimeError(f"rate limit row for destination {destination!r} vanished while in use")

    def pause(self, account: str, destination: str, until: float, holder: str) -> None:
        """No slot of this account starts before `until` (a 429 or Retry-After seen by `holder`)."""
        statement = (update(_windows).where(_windows.c.account_key == account)
                     .values(paused_until=self._greatest(_windows.c.paused_until, literal(until, Float)),
                             paused_by=holder[:128]))
        if self._run(statement).rowcount == 0:
            self._create_window(account, destination)
            self._run(statement)

    def paused_until(self, account: str) -> float:
        value = self._run(select(_windows.c.paused_until).where(_windows.c.account_key == account)).scalar()
        return float(value or 0.0)

    def lease(self, account: str, slots: int, holder: str, now: float, lease_s: float) -> int | None:
        """One of the account's `slots` concurrent-request slots for `holder`, or None if all are held.
        A lease past its expiry (its process died mid-call) counts as free."""
        if (account, slots) not in self._known:
            rows = [{"account_key": account, "slot": slot, "holder": None, "expires_at": 0.0} for slot in range(slots)]
            self._run(_INSERTS[self.engine.dialect.name](_leases).on_conflict_do_nothing(), rows)
            self._known.add((account, slots))
        # SKIP LOCKED: two processes after a free slot at once take different ones instead of queueing
        # (https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE); SQLite
        # serialises writers anyway and renders no FOR UPDATE.
        free = (select(_leases.c.slot)
                .where(_leases.c.account_key == account, _leases.c.slot < slots,
                       or_(_leases.c.holder.is_(None), _leases.c.expires_at < now))
                .order_by(_leases.c.slot).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        statement = (update(_leases).where(_leases.c.account_key == account, _leases.c.slot == free)
                     .values(holder=holder[:128], expires_at=now + lease_s).returning(_leases.c.slot))
        row = self._run(statement).first()
        return None if row is None else int(row[0])

    def release(self, account: str, slot: int, holder: str) -> None:
        self._run(update(_leases)
                  .where(_leases.c.account_key == account, _leases.c.slot == slot, _leases.c.holder == holder[:128])
                  .values(holder=None, expires_at=0.0))

    def _create_window(self, account: str, destination: str) -> None:
        insert = _INSERTS[self.engine.dialect.name](_windows).on_conflict_do_nothing()
        self._run(insert, {"account_key": account, "destination": destination[:64], "next_slot_at": 0.0,
                           "paused_until": 0.0, "paused_by": None})

    def _run(self, statement: Any, parameters: Any = None) -> Any:
        for attempt in range(_ATTEMPTS):
            try:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    result = connection.execute(statement, parameters)
                    # Read the RETURNING row before the connection goes back to the pool.
                    return _Buffered(result.fetchall() if result.returns_rows else [], result.rowcount)
            except (OperationalError, IntegrityError):
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.02) * 2 ** attempt)
        raise AssertionError("unreachable")


class _Buffered:
    def __init__(self, rows: list[Any], rowcount: int):
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


# --- where the state lives -------------------------------------------------------------------------

# One engine per side file for the process. NullPool: a connection to a local SQLite file costs
# microseconds, and no test or reload leaves file handles open behind it.
_side_engines: dict[Path, Engine] = {}
_side_engines_lock = threading.Lock()


def store_for(ledger: Engine) -> RateLimitStore | None:
    """The shared store for a ledger; None for an in-memory SQLite ledger (one process: a local limiter does)."""
    if ledger.dialect.name == "postgresql":
        return RateLimitStore(ledger)
    database = ledger.url.database
    if not database or database == ":memory:":
        return None
    path = Path(f"{database}-rate-limits")
    with _side_engines_lock:
        if path not in _side_engines:
            _side_engines[path] = _side_file_engine(path)
        return RateLimitStore(_side_engines[path])


def _side_file_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool,
                           connect_args={"timeout": 2.0, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # each statement its own transaction
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 2000")
        cursor.execute("PRAGMA synchronous = OFF")
        cursor.close()

    for attempt in range(_ATTEMPTS):
        try:
            with engine.connect() as connection:  # WAL is kept in the file: set once
                connection.exec_driver_sql("PRAGMA journal_mode = WAL")
            RateLimitWindow.metadata.create_all(engine, tables=[_windows, _leases])
            break
        except OperationalError:  # another process created them (or held the lock) at the same moment
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return engine
