"""One writer at a time on a SQLite ledger, handed over without sleeping.

SQLite admits one writer; a writer that finds the lock taken is put to sleep by
SQLite's busy handler in growing steps (1, 2, 5, 10 ... 100 ms; sqlite3.c,
sqliteDefaultBusyCallback), so under concurrent webhooks most of a request's
time is spent asleep after the lock was already free. The gate queues our own
writers instead: threads of a process on a lock, processes on an advisory
`flock` of a file beside the database, polled every half millisecond. SQLite's
own lock stays the guarantee (other programs writing the file still get the
busy timeout); the gate only makes our writers take turns promptly.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError

_POLL_S = 0.0005


class WriteGate:
    def __init__(self, database_path: str):
        self.lock_path = f"{database_path}-writer.lock"
        self._pid = -1
        self._thread_lock = threading.Lock()
        self._fd = -1

    def _for_this_process(self) -> tuple[threading.Lock, int]:
        # After a fork (gunicorn workers), the child needs its own lock and its own open
        # file: processes sharing one open file description would share the flock too.
        # Opened once per process, under a lock: two threads each opening a file would
        # each take a flock the other cannot release.
        with _gates_lock:
            if self._pid != os.getpid():
                self._thread_lock = threading.Lock()
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid = os.getpid()
            return self._thread_lock, self._fd

    def _timed_out(self, waited_s: float) -> OperationalError:
        return OperationalError(
            "BEGIN IMMEDIATE", None,
            sqlite3.OperationalError(f"database is locked (waited {waited_s * 1000:.0f} ms for the writer's turn)"),
        )

    @contextmanager
    def turn(self, timeout_s: float) -> Iterator[None]:
        thread_lock, fd = self._for_this_process()
        started = time.monotonic()
        if not thread_lock.acquire(timeout=timeout_s):
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
            thread_lock.release()


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
