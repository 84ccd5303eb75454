"""One planner at a time per ledger, and the others go on delivering.

Planning maps a batch of received events outside any transaction, then inserts their deliveries
where they are still `received`. Every delivery thread of every process plans before it claims, and
they all pick the oldest received events: without a turn, four threads mapped the same batch and
three threw their work away (mapping was most of a drain's CPU). A planner that finds the turn
taken does not wait for it: it skips planning this pass and claims, since the one planning will
have deliveries ready soon.

PostgreSQL: a transaction-scoped advisory lock, taken with `pg_try_advisory_xact_lock`
(https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS), keyed by
the schema too, so ledgers in one database never wait for each other. SQLite: a non-blocking
`flock` of a file beside the database, held by the planning thread; an in-memory database has one
process, so a thread lock does.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

_PLANNING_LOCK_KEY = 0x0C0FFEF  # pg_try_advisory_xact_lock(key, hashtext(current_schema()))
_thread_turns: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextmanager
def planning_turn(engine: Engine) -> Iterator[bool]:
    """Yields whether this caller has the turn to plan (held until the block ends)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection, connection.begin():
            yield bool(connection.execute(text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"),
                                          {"key": _PLANNING_LOCK_KEY}).scalar())
        return
    database = engine.url.database
    with _guard:
        lock = _thread_turns.setdefault(database or ":memory:", threading.Lock())
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        if not database or database == ":memory:":
            yield True
            return
        fd = os.open(f"{database}-planner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is planning
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the flock
    finally:
        lock.release()
