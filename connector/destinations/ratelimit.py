"""Per-destination limits shared by every thread of a process.

HubSpot counts requests in a rolling ten-second window
(https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines);
Salesforce limits long-running concurrent requests
(https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html).
The limiter keeps normal operation under both, and a 429 pauses every thread
of the destination until the window has passed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class RateLimiter:
    def __init__(self, max_requests: int | None, per_seconds: float, max_concurrency: int | None = None,
                 clock=time.monotonic, sleep=time.sleep):  # type: ignore[no-untyped-def]
        self.max_requests = max_requests
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None

    def pause(self, seconds: float) -> None:
        """Hold every caller back for `seconds` (after a 429 or a Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _wait_for_window(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.per_seconds:
                    self._sent.popleft()
                wait = self._paused_until - now
                if wait <= 0 and (self.max_requests is None or len(self._sent) < self.max_requests):
                    self._sent.append(now)
                    return
                if wait <= 0:
                    wait = self._sent[0] + self.per_seconds - now
            self._sleep(max(wait, 0.001))

    @contextmanager
    def request(self) -> Iterator[None]:
        """Wrap each CRM request: waits for a slot in the window and, if capped, a concurrency slot."""
        if self._slots is not None:
            self._slots.acquire()
        try:
            self._wait_for_window()
            yield
        finally:
            if self._slots is not None:
                self._slots.release()


_shared: dict[tuple[str, int | None, float, int | None], RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(destination: str, max_requests: int | None, per_seconds: float,
                   max_concurrency: int | None) -> RateLimiter:
    """One limiter per destination and settings, for the whole process."""
    key = (destination, max_requests, per_seconds, max_concurrency)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = RateLimiter(max_requests, per_seconds, max_concurrency)
        return _shared[key]
