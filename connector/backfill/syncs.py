"""Backfill and reconciliation runs in the ledger (the `okendo_syncs` table).

Each run has a name (`backfill:reviews:approved`, `reconcile:reviews`) and one row: the lease that
keeps a second run of that name from starting on any host while one is alive (it expires by itself
when its process dies), the cursor of the next page (a stopped or crashed run goes on from there),
and the counts the command prints and the status page shows. Every write is one short statement,
taken after each page is stored: a crash loses at most the page being read, which the next run
reads again and stores nothing twice (snapshot message ids are deterministic).

Besides the current run's counts (reset when a run starts afresh) the row keeps totals that are
never reset (/metrics exports them as counters), the last finished run's figures (the status page
shows them while the next runs, or after it failed) and how many runs failed in a row (a failed
reconciliation is tried again after a short, doubling wait instead of a whole interval).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from connector.ledger.database import conflict_insert, write_transaction
from connector.ledger.models import OkendoSync, utcnow

_syncs = OkendoSync.__table__

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"
COUNTS = ("pages", "read", "stored", "missing", "different", "problems")
TOTALS = {name: f"{name}_total" for name in COUNTS}
RETRY_S = 60.0  # the reconciliation's first wait after a pass that did not finish (retry_wait)


@dataclass(frozen=True)
class SyncRow:
    name: str
    state: str
    cursor: str | None
    options: dict[str, Any] | None
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    pages: int
    read: int
    stored: int
    missing: int
    different: int
    problems: int
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    pages_total: int = 0
    read_total: int = 0
    stored_total: int = 0
    missing_total: int = 0
    different_total: int = 0
    problems_total: int = 0
    failures: int = 0
    last_pass: dict[str, Any] | None = None
    # Not columns: what acquire() decided. `went_on`: it goes on from the cursor of an earlier run;
    # `set_aside`: the options of an unfinished earlier run it did not go on from (asked otherwise).
    went_on: bool = False
    set_aside: dict[str, Any] | None = None

    @property
    def resumable(self) -> bool:
        """Stopped (Ctrl-C, a crash, an error) with a page still to read."""
        return self.state != FINISHED and self.cursor is not None


class SyncBusy(Exception):
    """Another process holds the run's lease."""

    def __init__(self, row: SyncRow):
        until = row.lease_expires_at.strftime("%H:%M:%S UTC") if row.lease_expires_at else "?"
        super().__init__(f"{row.name} is already running ({row.lease_owner}, lease until {until}); "
                         "wait for it to finish, or for its lease to run out if that process is gone")
        self.row = row


class SyncLost(Exception):
    """This process's lease was taken over (it stalled past its lease): stop, the other run goes on."""


def dead_on_this_host(owner: str) -> bool:
    """Whether a lease owner (`host:pid:…`, as every run names itself) is a process of this host that is
    gone. Another host's process cannot be seen from here: its lease runs out instead."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process, alive
        return False
    return False


def read(engine: Engine, name: str) -> SyncRow | None:
    with engine.connect() as connection:
        row = connection.execute(select(_syncs).where(_syncs.c.name == name)).first()
    return SyncRow(**row._mapping) if row is not None else None


def read_all(engine: Engine, prefix: str = "") -> list[SyncRow]:
    with engine.connect() as connection:
        rows = connection.execute(select(_syncs).where(_syncs.c.name.startswith(prefix))
                                  .order_by(_syncs.c.name)).all()
    return [SyncRow(**row._mapping) for row in rows]


def acquire(engine: Engine, name: str, owner: str, lease_s: float, *, options: dict[str, Any] | None = None,
            restart: bool = False, now: datetime | None = None) -> SyncRow:
    """Take the run's lease. A run that stopped with a page left goes on from its cursor and its counts
    when it was asked the same `options` (unless `restart`): a cursor means nothing for another list
    or another --since; any other starts afresh. Raises SyncBusy while another live process holds it.
    `options` must survive JSON unchanged (lists, not tuples), as they are compared with the stored ones."""
    row = _acquire(engine, name, owner, lease_s, options=options, restart=restart, now=now or utcnow())
    assert row is not None
    return row


def retry_wait(failures: int, every: timedelta, retry: timedelta) -> timedelta:
    """How long after an unfinished run the next is tried: `retry`, doubled for each failed run in a
    row, never longer than the interval (a failing pass costs a request or two, not a burst)."""
    return min(retry * 2 ** min(max(failures - 1, 0), 30), every)


def next_due(row: SyncRow, every: timedelta, retry: timedelta | None = None) -> datetime | None:
    """When acquire_if_due() starts the next run: `every` after the last one started, or sooner, a
    `retry` wait after a run that did not finish (failed, stopped, or died: its lease ran out)."""
    if row.started_at is None:
        return None
    due = row.started_at + every
    if retry is not None and row.state != FINISHED and row.updated_at is not None:
        due = min(due, row.updated_at + retry_wait(row.failures, every, retry))
    return due


def acquire_if_due(engine: Engine, name: str, owner: str, lease_s: float, every: timedelta, *,
                   options: dict[str, Any] | None = None, retry: timedelta | None = None,
                   now: datetime | None = None) -> SyncRow | None:
    """Start a fresh run when it is due (next_due) and no live process holds the lease; else None.
    Checked and taken in one transaction holding the row, so two workers that look at the same
    moment start one run between them."""
    now = now or utcnow()
    try:
        return _acquire(engine, name, owner, lease_s, options=options, restart=True, now=now, due=(every, retry))
    except SyncBusy:
        return None


def _acquire(engine: Engine, name: str, owner: str, lease_s: float, *, options: dict[str, Any] | None,
             restart: bool, now: datetime,
             due: tuple[timedelta, timedelta | None] | None = None) -> SyncRow | None:
    s = _syncs
    with write_transaction(engine) as connection:
        connection.execute(conflict_insert(connection.dialect, s).values(
            name=name, state=STOPPED, pages=0, read=0, stored=0, missing=0, different=0, problems=0)
            .on_conflict_do_nothing(index_elements=["name"]))
        free = or_(s.c.lease_owner.is_(None), s.c.lease_expires_at.is_(None), s.c.lease_expires_at <= now,
                   s.c.lease_owner == owner)
        query = select(s).where(s.c.name == name)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        current = SyncRow(**connection.execute(query).one()._mapping)
        if current.lease_owner and current.lease_owner != owner and dead_on_this_host(current.lease_owner):
            # Killed (kill -9, a crash, a closed terminal) on this machine: no need to wait out its lease.
            free = or_(free, s.c.lease_owner == current.lease_owner)
        if due is not None:
            # Judged on the row read above, which this transaction holds (FOR UPDATE on PostgreSQL,
            # SQLite's write lock): no other worker changes it before the update below.
            due_at = next_due(current, *due)
            if due_at is not None and due_at > now:
                return None
        taken = connection.execute(update(s).where(s.c.name == name, free).values(
            lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))).rowcount
        if not taken and due is not None:
            return None
        if not taken:
            raise SyncBusy(current)
        asked_otherwise = options is not None and current.options != options
        fresh = restart or not current.resumable or asked_otherwise
        values: dict[str, Any] = {"state": RUNNING, "updated_at": now, "last_error": None, "finished_at": None}
        if fresh:
            values.update({name: 0 for name in COUNTS}, cursor=None, started_at=now, options=options)
        connection.execute(update(s).where(s.c.name == name).values(**values))
        row = SyncRow(**connection.execute(select(s).where(s.c.name == name)).one()._mapping)
        set_aside = current.options if current.resumable and asked_otherwise and not restart else None
        return replace(row, went_on=not fresh, set_aside=set_aside)


def advance(engine: Engine, name: str, owner: str, lease_s: float, *, cursor: str | None,
            counts: dict[str, int], now: datetime | None = None) -> None:
    """After a page is stored: its cursor, the counts it adds, and a renewed lease. Raises SyncLost
    when another process has taken the run over."""
    now = now or utcnow()
    s = _syncs
    values: dict[str, Any] = {"cursor": cursor, "updated_at": now, "lease_expires_at": now + timedelta(seconds=lease_s)}
    for column in COUNTS:
        if counts.get(column):
            values[column] = s.c[column] + counts[column]
            values[TOTALS[column]] = s.c[TOTALS[column]] + counts[column]
    with write_transaction(engine) as connection:
        if not connection.execute(update(s).where(and_(s.c.name == name, s.c.lease_owner == owner))
                                  .values(**values)).rowcount:
            raise SyncLost(f"{name}: another process took this run over (this one stalled past its lease)")


def finish(engine: Engine, name: str, owner: str, state: str, *, error: str | None = None,
           now: datetime | None = None) -> None:
    """End the run: finished (its cursor cleared, its figures kept as the last finished run's), stopped
    or failed (its cursor kept, to go on from; a failure counted), and give the lease back."""
    now = now or utcnow()
    s = _syncs
    values: dict[str, Any] = {"state": state, "updated_at": now, "lease_owner": None, "lease_expires_at": None,
                              "last_error": error}
    mine = and_(s.c.name == name, s.c.lease_owner == owner)
    with write_transaction(engine) as connection:
        if state == FINISHED:
            row = connection.execute(select(s).where(mine)).first()
            if row is None:
                return
            last = {"started_at": row.started_at.isoformat() if row.started_at else None,
                    "finished_at": now.isoformat(), **{column: getattr(row, column) for column in COUNTS}}
            values.update(cursor=None, finished_at=now, failures=0, last_pass=last)
        elif state == FAILED:
            values["failures"] = s.c.failures + 1
        connection.execute(update(s).where(mine).values(**values))


class Interrupted(Exception):
    """The process is stopping: the run ends as stopped (resumable), not failed."""


def finish_after(engine: Engine, name: str, owner: str, error: BaseException) -> None:
    """End a run that `error` interrupted: stopped (Ctrl-C) or failed, its cursor kept. Best effort:
    when the ledger itself is what failed, the lease simply runs out, and the error that stopped the
    run is the one to report, not this one."""
    stopped = isinstance(error, (KeyboardInterrupt, SystemExit, Interrupted))
    try:
        finish(engine, name, owner, STOPPED if stopped else FAILED,
               error=None if stopped else f"{type(error).__name__}: {error}"[:2000])
    except SQLAlchemyError:
        pass
