"""Group commit for incoming webhooks: concurrent requests share one transaction.

Each acknowledged event must be on disk first, and with `synchronous=FULL` every
commit is an fsync; SQLite also admits one writer at a time. Committing each
request on its own therefore makes requests queue for the write lock and pay an
fsync each. Here the request threads of a process take turns as *leader*: the
leader stores every event waiting at that moment in one transaction, wakes the
others with their results, and hands the lead to the next waiting request. A
lone request still commits at once (no timer, no added latency); under load, one
commit acknowledges many. Nothing is acknowledged before its transaction has
committed, and a failed transaction fails every request in it (each answers 503
and Svix sends it again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from connector.ledger.events import IncomingEvent, StoredEvent, record_events


@dataclass
class _Waiting:
    incoming: IncomingEvent
    ready: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next group, not with a result
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
    def __init__(self, engine: Engine, *, max_group: int = 128, wait_s: float = 10.0):
        self.engine = engine
        self.max_group = max_group
        self.wait_s = wait_s  # how long a request waits for a turn before answering "not stored"
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._leading = False

    def store(self, incoming: IncomingEvent) -> StoredEvent:
        """Store the event (or find it already stored); returns once committed."""
        me = _Waiting(incoming)
        with self._lock:
            self._queue.append(me)
            lead = not self._leading
            self._leading = True
        if not lead and not me.ready.wait(self.wait_s):
            with self._lock:
                if me in self._queue and not me.lead:
                    # Not yet in a group: give up without a trace, and answer "not stored".
                    self._queue.remove(me)
                    raise LedgerWriteTimeout(f"event {incoming.message_id} not stored within {self.wait_s:g} s")
            # Handed the lead, or in a group being committed right now: see it through.
            me.ready.wait()
        if lead or me.lead:
            self._lead_one_group()
        return me.result()

    def _lead_one_group(self) -> None:
        with self._lock:
            group = self._queue[: self.max_group]
            del self._queue[: self.max_group]
        try:
            results = record_events(self.engine, [waiting.incoming for waiting in group])
        except BaseException as error:  # every request of the group answers "not stored"
            for waiting in group:
                waiting.error = error
        else:
            for waiting, stored in zip(group, results):
                waiting.stored = stored
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
                if successor is not None:
                    successor.lead = True
            if successor is not None:
                successor.ready.set()
            for waiting in group:
                waiting.ready.set()
