"""One writer at a time on a SQLite ledger, handed over without sleeping.

SQLite admits one writer; a writer that finds the lock taken is put to sleep by
SQLite's busy handler in growing steps (1, 2, 5, 10 ... 100 ms; sqlite3.c,
sqliteDefaultBusyCallback), so under concurrent webhooks most of a request's
time is spent asleep after the lock was already free. The gate queues our own
writers instead: threads of a process on a lock, processes on an advisory
`flock` of a file beside the database, polled every half millisecond. SQLite's
own lock stays the guarantee (other programs writing the file still get the
busy timeout); the gate only makes our writers take turns promptly.

Webhooks go first. A request waits for its event's commit, so the receiver's
group commits are *urgent*: an urgent writer is let in before any other waiting
writer of its process, and while one waits or writes in any process (it holds a
shared `flock` on a second file, `-urgent.lock`), the delivery workers' writers
hold back before queueing. They hold back for `MAX_DEFER_S` at most and then
take their turn anyway, so a long burst of webhooks slows delivery but never
stops it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy.exc import OperationalError

_POLL_S = 0.0005
# The longest a non-urgent writer stands back for webhooks, before taking its turn regardless.
MAX_DEFER_S = 0.05


class _TurnsInProcess:
    """The process's own queue at the gate: one writer at a time, urgent writers first. A
    non-urgent writer that has waited MAX_DEFER_S is overdue: it goes next, before any urgent one."""

    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._taken = False
        self._urgent_waiting = 0
        self._overdue_waiting = 0

    def acquire(self, urgent: bool, timeout_s: float) -> bool:
        started = time.monotonic()
        overdue = False
        with self._state:
            if urgent:
                self._urgent_waiting += 1
            try:
                while True:
                    now = time.monotonic()
                    if not urgent and not overdue and now - started >= MAX_DEFER_S:
                        overdue = True
                        self._overdue_waiting += 1
                    may_go = not self._overdue_waiting if urgent else (overdue or not self._urgent_waiting)
                    if not self._taken and may_go:
                        self._taken = True
                        return True
                    left = timeout_s - (now - started)
                    if left <= 0:
                        return False
                    # A non-urgent writer wakes when it becomes overdue, even if nobody releases.
                    until_overdue = MAX_DEFER_S - (now - started)
                    self._state.wait(left if urgent or overdue else min(left, max(until_overdue, _POLL_S)))
            finally:
                if urgent:
                    self._urgent_waiting -= 1
                if overdue:
                    self._overdue_waiting -= 1
                    self._state.notify_all()  # urgent writers may go again

    def release(self) -> None:
        with self._state:
            self._taken = False
            self._state.notify_all()


class _UrgentMark:
    """This process's shared flock on `-urgent.lock`, held while any of its urgent writers waits or
    writes. A flock belongs to an open file description, not a thread: the first urgent writer
    takes it, the last one gives it back; non-urgent writers probe through a description of their
    own, so a probe never converts or releases the mark."""

    def __init__(self, path: str):
        self._mark_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._probe_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._holders = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                # Blocking: a probe holds the file exclusively only for an instant.
                fcntl.flock(self._mark_fd, fcntl.LOCK_SH)
            self._holders += 1

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                fcntl.flock(self._mark_fd, fcntl.LOCK_UN)

    def stand_back(self, started: float) -> None:
        """Wait while an urgent writer of any process (this one included) waits or writes, for
        MAX_DEFER_S from `started` at most."""
        while True:
            try:
                fcntl.flock(self._probe_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() - started >= MAX_DEFER_S:
                    return
                time.sleep(_POLL_S * 2)
                continue
            fcntl.flock(self._probe_fd, fcntl.LOCK_UN)
            return


class WriteGate:
    def __init__(self, database_path: str):
        self.lock_path = f"{database_path}-writer.lock"
        self.urgent_path = f"{database_path}-urgent.lock"
        self._pid = -1
        self._turns = _TurnsInProcess()
        self._fd = -1
        self._urgent: _UrgentMark | None = None

    def _for_this_process(self) -> tuple[_TurnsInProcess, int, _UrgentMark]:
        # After a fork (gunicorn workers), the child needs its own queue and its own open
        # files: processes sharing one open file description would share the flock too.
        # Opened once per process, under a lock: two threads each opening a file would
        # each take a flock the other cannot release.
        with _gates_lock:
            if self._pid != os.getpid() or self._urgent is None:
                self._turns = _TurnsInProcess()
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._urgent = _UrgentMark(self.urgent_path)
                self._pid = os.getpid()
            return self._turns, self._fd, self._urgent

    def _timed_out(self, waited_s: float) -> OperationalError:
        return OperationalError(
            "BEGIN IMMEDIATE", None,
            sqlite3.OperationalError(f"database is locked (waited {waited_s * 1000:.0f} ms for the writer's turn)"),
        )

    @contextmanager
    def turn(self, timeout_s: float, *, urgent: bool = False) -> Iterator[None]:
        turns, fd, urgent_mark = self._for_this_process()
        started = time.monotonic()
        with urgent_mark if urgent else nullcontext():
            if not urgent:
                urgent_mark.stand_back(started)
            if not turns.acquire(urgent, timeout_s - (time.monotonic() - started)):
                raise self._timed_out(time.monotonic() - started)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() - started > timeout_s:
                            raise self._timed_out(time.monotonic() - started) from None
                        time.sleep(_POLL_S)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                turns.release()


_gates: dict[str, WriteGate] = {}
_gates_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held this lock at the fork; the child starts afresh.
    global _gates_lock
    _gates_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def gate_for(database_path: str) -> WriteGate:
    """The process's gate for a database file (shared by every engine on that file)."""
    path = os.path.realpath(database_path)
    with _gates_lock:
        if path not in _gates:
            _gates[path] = WriteGate(path)
        return _gates[path]
