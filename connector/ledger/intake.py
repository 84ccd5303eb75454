"""Group commit for incoming webhooks, with a bound on every answer.

Each acknowledged event must be on disk first, and with `synchronous=FULL` every
commit is an fsync; SQLite also admits one writer at a time. So one writer
thread per process stores every event waiting at that moment in one
transaction and wakes their requests with the results: a lone request commits
at once (no timer, no added latency); under load, one commit acknowledges many.

Request threads only wait, each until its own deadline, which the receiver
counts from the request's start (Svix gives up on an attempt after 15 s,
https://docs.svix.com/retries). A waiting request holds one of gunicorn's few
threads, and /healthz, /readyz and the status page queue behind those threads.
So once the write in progress has taken longer than `stall_s` (the ledger locked
by another process, a database that does not answer), the ledger counts as
stalled: the waiting requests and every new one answer "not stored" at once
and their threads are free again; the write goes on trying, and the first one
that finishes ends the stall.

Nothing is acknowledged before its transaction has committed, and a failed
transaction fails every request in it. A request that gave up while its event
was in the write in progress may still see that event committed: Svix's retry
of it is then answered as a redelivery (200), so nothing is stored twice and
nothing acknowledged is lost.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass, field

from sqlalchemy import Engine

from connector.ledger.database import KeptConnection
from connector.ledger.events import IncomingEvent, StoredEvent, record_events

# Half a second: a probe queued behind every thread of a worker still answers within a second.
STALL_S = 0.5
# The writer thread ends after this long without work and starts again with the next webhook.
_IDLE_EXIT_S = 5.0

# When this process last stored a webhook (time.monotonic()): its delivery threads make way
# while webhooks arrive (connector/worker/make_way.py).
_last_stored_at = float("-inf")


def webhooks_stored_within(seconds: float) -> bool:
    """Whether this process stored a webhook in the last `seconds`."""
    return time.monotonic() - _last_stored_at < seconds


@dataclass(eq=False)
class _Waiting:
    incoming: IncomingEvent
    ready: threading.Event = field(default_factory=threading.Event)
    stored: StoredEvent | None = None
    error: BaseException | None = None

    def result(self) -> StoredEvent:
        if self.error is not None:
            raise self.error
        assert self.stored is not None
        return self.stored


class LedgerWriteTimeout(Exception):
    """The event was not stored within the bound: the caller must not acknowledge it."""


class EventIntake:
    def __init__(self, engine: Engine, *, max_group: int = 128, stall_s: float = STALL_S):
        self.engine = engine
        self.max_group = max_group
        self.stall_s = stall_s
        self._start_afresh()
        _intakes.add(self)

    def _start_afresh(self) -> None:
        self._state = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing_since: float | None = None  # monotonic start of the write in progress
        self._writer: threading.Thread | None = None
        self._closed = False

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new webhooks, let the writer store what is queued, and wait for it to end (at most
        `timeout` seconds) with its connection given back. True when it ended in time.

        Called when the process stops serving (gunicorn's `worker_exit`) and before a ledger is
        dropped: a writer still inside its insert would otherwise hold locks on the tables."""
        with self._state:
            self._closed = True
            writer = self._writer
            self._state.notify_all()
        if writer is not None:
            writer.join(timeout)
            return not writer.is_alive()
        return True

    def store(self, incoming: IncomingEvent, *, deadline: float) -> StoredEvent:
        """Store the event (or find it already stored) and return once committed; raise
        LedgerWriteTimeout at `deadline` (time.monotonic()) or as soon as the ledger is stalled."""
        me = _Waiting(incoming)
        with self._state:
            if self._closed:
                raise LedgerWriteTimeout(f"event {incoming.message_id} not stored: this process is shutting down")
            self._refuse_if_stalled(incoming)
            self._queue.append(me)
            if self._writer is None:
                self._start_writer()
            self._state.notify()
        while not me.ready.wait(self._until_next_check(deadline)):
            with self._state:
                if me.ready.is_set():
                    break
                if time.monotonic() < deadline and self.stalled_for() is None:
                    continue
                if me in self._queue:  # not in a write yet: it leaves no trace
                    self._queue.remove(me)
                raise _not_stored(incoming, self.stalled_for())
        return me.result()

    def stalled_for(self) -> float | None:
        """How long the write in progress has taken, once that is longer than `stall_s`; else None."""
        started = self._writing_since
        if started is None:
            return None
        taken = time.monotonic() - started
        return taken if taken >= self.stall_s else None

    def _refuse_if_stalled(self, incoming: IncomingEvent) -> None:
        stalled = self.stalled_for()
        if stalled is not None:
            raise _not_stored(incoming, stalled)

    def _until_next_check(self, deadline: float) -> float:
        # Wake at the deadline, or when the write in progress (or the one about to start) would
        # count as stalled.
        now = time.monotonic()
        started = self._writing_since
        return max(min(deadline, (started if started is not None else now) + self.stall_s) - now, 0.0)

    def _write_while_work_waits(self) -> None:
        kept = KeptConnection(self.engine)  # one connection for as long as the webhooks keep coming
        try:
            while True:
                with self._state:
                    if not self._state.wait_for(lambda: self._queue or self._closed, timeout=_IDLE_EXIT_S):
                        return
                    if not self._queue:  # closed, and nothing left to store
                        return
                    group = self._queue[: self.max_group]
                    del self._queue[: self.max_group]
                    self._writing_since = time.monotonic()
                def joining(group: list[_Waiting] = group) -> list[IncomingEvent]:
                    # What arrived while this write waited for the lock (another process's commit)
                    # goes in the same commit: under load, one fsync for many more webhooks.
                    with self._state:
                        joined = self._queue[: self.max_group - len(group)]
                        del self._queue[: len(joined)]
                    group.extend(joined)
                    return [waiting.incoming for waiting in joined]

                try:
                    results = record_events(self.engine, [waiting.incoming for waiting in group], kept=kept,
                                            joining=joining)
                except Exception as error:  # every request of the group answers "not stored"
                    for waiting in group:
                        waiting.error = error
                else:
                    global _last_stored_at
                    _last_stored_at = time.monotonic()
                    for waiting, stored in zip(group, results):
                        waiting.stored = stored
                finally:
                    with self._state:
                        self._writing_since = None
                    for waiting in group:
                        waiting.ready.set()
        finally:
            kept.close()
            with self._state:
                self._writer = None
                if self._queue and not self._closed:  # arrived as this thread was leaving: hand over
                    self._start_writer()

    def _start_writer(self) -> None:  # with self._state held
        self._writer = threading.Thread(target=self._write_while_work_waits, name="ledger-intake", daemon=True)
        self._writer.start()


def _not_stored(incoming: IncomingEvent, stalled: float | None) -> LedgerWriteTimeout:
    why = (f"the ledger write in progress has taken {stalled:.1f} s (the ledger is locked or not answering)"
           if stalled is not None else "its answer is due")
    return LedgerWriteTimeout(f"event {incoming.message_id} not stored: {why}")


_intakes: weakref.WeakSet[EventIntake] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child has none of the parent's threads: no writer, no waiting request, and a lock
    # that one of them may have held at the fork.
    for intake in list(_intakes):
        intake._start_afresh()


os.register_at_fork(after_in_child=_after_fork_in_child)
