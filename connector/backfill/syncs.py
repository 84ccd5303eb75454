"""Backfill and reconciliation runs in the ledger (the `okendo_syncs` table).

Each run has a name (`backfill:reviews:approved`, `reconcile:reviews`) and one row: the lease that
keeps a second run of that name from starting on any host while one is alive (it expires by itself
when its process dies), the cursor of the next page (a stopped or crashed run goes on from there),
and the counts the command prints and the status page shows. Every write is one short statement,
taken after each page is stored: a crash loses at most the page being read, which the next run
reads again and stores nothing twice (snapshot message ids are deterministic).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from connector.ledger.database import conflict_insert, write_transaction
from connector.ledger.models import OkendoSync, utcnow

_syncs = OkendoSync.__table__

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"
COUNTS = ("pages", "read", "stored", "missing", "different", "problems")


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
    (unless `restart`); any other starts afresh. Raises SyncBusy while another live process holds it."""
    row = _acquire(engine, name, owner, lease_s, options=options, restart=restart, now=now or utcnow())
    assert row is not None
    return row


def acquire_if_due(engine: Engine, name: str, owner: str, lease_s: float, every: timedelta, *,
                   options: dict[str, Any] | None = None, now: datetime | None = None) -> SyncRow | None:
    """Start a fresh run when none has started within `every` (whatever became of it) and no live
    process holds the lease; else None. Checked and taken in one statement, so two workers that look
    at the same moment start one run between them."""
    now = now or utcnow()
    try:
        return _acquire(engine, name, owner, lease_s, options=options, restart=True, now=now, due_before=now - every)
    except SyncBusy:
        return None


def _acquire(engine: Engine, name: str, owner: str, lease_s: float, *, options: dict[str, Any] | None,
             restart: bool, now: datetime, due_before: datetime | None = None) -> SyncRow | None:
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
        if due_before is not None:
            free = and_(free, or_(s.c.started_at.is_(None), s.c.started_at <= due_before))
        taken = connection.execute(update(s).where(s.c.name == name, free).values(
            lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))).rowcount
        if not taken and due_before is not None:
            return None
        if not taken:
            raise SyncBusy(current)
        fresh = restart or not current.resumable
        values: dict[str, Any] = {"state": RUNNING, "updated_at": now, "last_error": None, "finished_at": None}
        if fresh:
            values.update({name: 0 for name in COUNTS}, cursor=None, started_at=now, options=options)
        connection.execute(update(s).where(s.c.name == name).values(**values))
        return SyncRow(**connection.execute(select(s).where(s.c.name == name)).one()._mapping)


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
    with write_transaction(engine) as connection:
        if not connection.execute(update(s).where(and_(s.c.name == name, s.c.lease_owner == owner))
                                  .values(**values)).rowcount:
            raise SyncLost(f"{name}: another process took this run over (this one stalled past its lease)")


def finish(engine: Engine, name: str, owner: str, state: str, *, error: str | None = None,
           now: datetime | None = None) -> None:
    """End the run: finished (its cursor cleared), stopped or failed (its cursor kept, to go on from),
    and give the lease back."""
    now = now or utcnow()
    s = _syncs
    values: dict[str, Any] = {"state": state, "updated_at": now, "lease_owner": None, "lease_expires_at": None,
                              "last_error": error}
    if state == FINISHED:
        values.update(cursor=None, finished_at=now)
    with write_transaction(engine) as connection:
        connection.execute(update(s).where(s.c.name == name, s.c.lease_owner == owner).values(**values))


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
