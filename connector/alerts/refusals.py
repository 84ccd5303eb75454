"""Webhooks answered 503, counted where they happen and added to the ledger when it answers again.

A 503 is the receiver's answer when the ledger is unavailable or locked (or no secret is set),
so it cannot be written down at that moment. Each process counts its own in memory (the
receiver's answer timing hook, connector.metrics.webhook_answered, calls `count`), and the alert
loop of that process adds the count to the ledger's `alert_counters` row at its next tick,
keeping it in memory while the ledger still refuses. Every process and host adds to the same
row, and a message takes from it, so each 503 is reported once.

Limits: a process that dies loses the 503s it had not yet added (at most one tick's worth), and
a web process without an alert loop (`worker.embedded: false`) adds none: for those, and for an
outage of the ledger itself, the Prometheus rule on the webhook answers' 5xx count is the alert.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime

from sqlalchemy import Engine

from connector.ledger.models import utcnow

_lock = threading.Lock()
_count = 0
_first: datetime | None = None
_last: datetime | None = None


def count(status: int) -> None:
    """Called for every webhook answer; counts the 503s."""
    global _count, _first, _last
    if status != 503:
        return
    now = utcnow()
    with _lock:
        _count += 1
        _first = _first or now
        _last = now


def pending() -> int:
    with _lock:
        return _count


def flush(engine: Engine, counter: str) -> int:
    """Add this process's count to the ledger's `counter`; returns how many were added.

    When the ledger refuses, the count goes back into memory (with any counted meanwhile) and the
    error is raised, so the next tick tries again.
    """
    global _count, _first, _last
    from connector.alerts.outbox import add_to_counter

    with _lock:
        taken, first, last = _count, _first, _last
        _count, _first, _last = 0, None, None
    if not taken:
        return 0
    try:
        add_to_counter(engine, counter, taken, first or utcnow(), last or utcnow())
    except Exception:
        with _lock:
            _count += taken
            _first = min(filter(None, (_first, first)), default=None)
            _last = max(filter(None, (_last, last)), default=None)
        raise
    return taken


def reset() -> None:
    """Forget this process's count (a forked child's start; a test's)."""
    global _lock, _count, _first, _last
    # A forked gunicorn worker starts with no count of its own, and a lock no thread of the parent holds.
    _lock = threading.Lock()
    _count, _first, _last = 0, None, None


os.register_at_fork(after_in_child=reset)
