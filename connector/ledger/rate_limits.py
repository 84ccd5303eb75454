"""The shared state behind every process's rate limiter: one row per CRM account, one statement per grant.

Each statement runs on its own, in autocommit, and returns at once: nothing is locked while the
CRM call runs. On PostgreSQL the rows live in the ledger (tables `rate_limit_windows` and
`rate_limit_leases`, migration 0009), so every process on every host shares them. On SQLite they
live in a small file of their own beside the ledger (`<ledger>-rate-limits`): a grant is a write,
and writes to the ledger itself queue at its single write lock with every webhook's insert
(fsynced, `synchronous=FULL`); in a file of its own, with `synchronous=OFF` (it holds nothing that
must survive a power loss), a grant costs about 0.2 ms and a webhook never waits behind one. On
PostgreSQL a grant (one UPDATE on an UNLOGGED table) costs 0.75-1.0 ms, against CRM calls of 50 ms
and more.
Only the processes of one host can share a SQLite ledger, so that is all this file has to cover.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Float, bindparam, create_engine, event, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from connector.ledger.database import conflict_insert
from connector.ledger.models import RateLimitLease, RateLimitWindow

_windows = RateLimitWindow.__table__
_leases = RateLimitLease.__table__

# A grant waits for a row another grant holds (PostgreSQL) or for the file's write lock (SQLite) for
# microseconds; a longer wait (a lock_timeout, "database is locked") is tried again this many times.
_ATTEMPTS = 5


class RateLimitStore:
    """Grants request slots, pauses and concurrency leases for CRM accounts, across processes."""

    def __init__(self, engine: Engine):
        self.engine = engine
        greatest = func.greatest if engine.dialect.name == "postgresql" else func.max
        self._known: set[tuple[str, int]] = set()  # (account, leases) rows this process made sure exist
        # Built once: a grant then costs the statement's execution only (SQLAlchemy caches its compiled form).
        account = bindparam("account")
        start = greatest(_windows.c.next_slot_at, bindparam("now", type_=Float), _windows.c.paused_until)
        self._take = (update(_windows).where(_windows.c.account_key == account)
                      .values(next_slot_at=start + bindparam("spacing", type_=Float))
                      .returning(_windows.c.next_slot_at))
        self._pause = (update(_windows).where(_windows.c.account_key == account)
                       .values(paused_until=greatest(_windows.c.paused_until, bindparam("until", type_=Float)),
                               paused_by=bindparam("pauser")))
        self._read_pause = select(_windows.c.paused_until).where(_windows.c.account_key == account)
        # SKIP LOCKED: two processes after a free slot at once take different ones instead of queueing
        # (https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE); SQLite
        # serialises writers anyway and renders no FOR UPDATE.
        free = (select(_leases.c.slot)
                .where(_leases.c.account_key == account, _leases.c.slot < bindparam("slots"),
                       or_(_leases.c.holder.is_(None), _leases.c.expires_at < bindparam("now", type_=Float)))
                .order_by(_leases.c.slot).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        self._lease = (update(_leases).where(_leases.c.account_key == account, _leases.c.slot == free)
                       .values(holder=bindparam("owner"), expires_at=bindparam("lease_until", type_=Float))
                       .returning(_leases.c.slot))
        self._release = (update(_leases)
                         .where(_leases.c.account_key == account, _leases.c.slot == bindparam("slot_number"),
                                _leases.c.holder == bindparam("owner"))
                         .values(holder=None, expires_at=0.0))

    def take_slot(self, account: str, destination: str, spacing: float, now: float) -> float:
        """The instant (epoch seconds) this caller may send its request: the account's next free slot,
        not before `now` nor before a pause ends. The following slot is `spacing` later."""
        for _ in range(2):
            row = self._run(self._take, {"account": account, "now": now, "spacing": spacing}).first()
            if row is not None:
                return float(row[0]) - spacing
            self._create_window(account, destination)
        raise RuntimeError(f"rate limit row for destination {destination!r} vanished while in use")

    def pause(self, account: str, destination: str, until: float, holder: str) -> None:
        """No slot of this account starts before `until` (a 429 or Retry-After seen by `holder`)."""
        parameters = {"account": account, "until": until, "pauser": holder[:128]}
        if self._run(self._pause, parameters).rowcount == 0:
            self._create_window(account, destination)
            self._run(self._pause, parameters)

    def paused_until(self, account: str) -> float:
        return float(self._run(self._read_pause, {"account": account}).scalar() or 0.0)

    def lease(self, account: str, slots: int, holder: str, now: float, lease_s: float) -> int | None:
        """One of the account's `slots` concurrent-request slots for `holder`, or None if all are held.
        A lease past its expiry (its process died mid-call) counts as free."""
        if (account, slots) not in self._known:
            rows = [{"account_key": account, "slot": slot, "holder": None, "expires_at": 0.0} for slot in range(slots)]
            self._run(conflict_insert(self.engine.dialect, _leases).on_conflict_do_nothing(), rows)
            self._known.add((account, slots))
        row = self._run(self._lease, {"account": account, "slots": slots, "now": now, "owner": holder[:128],
                                      "lease_until": now + lease_s}).first()
        return None if row is None else int(row[0])

    def release(self, account: str, slot: int, holder: str) -> None:
        self._run(self._release, {"account": account, "slot_number": slot, "owner": holder[:128]})

    def _create_window(self, account: str, destination: str) -> None:
        insert = conflict_insert(self.engine.dialect, _windows).on_conflict_do_nothing()
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

# One engine per side file for the process; it keeps two connections open (more while threads wait).
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
    engine = create_engine(f"sqlite:///{path}", isolation_level="AUTOCOMMIT", pool_size=2, max_overflow=16,
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
