"""Slowing down password guessing on the status page and its API.

Failed sign-ins (the login form and HTTP Basic alike) are counted per client address and over
all addresses in moving one-minute windows, with the `limits` library, in this process's memory
(each gunicorn worker keeps its own count, so the effective allowance is that many times the
limit; a restart forgets them). Past the limit every attempt from that address, right or wrong,
is answered 429 with Retry-After until the window has moved on; a right password resets the
address's count. https://limits.readthedocs.io/en/stable/strategies.html#moving-window
"""

from __future__ import annotations

import logging
import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from connector import metrics

log = logging.getLogger(__name__)

_NAMESPACE = "status-sign-in-failures"
_EVERYONE = "*"


class SignInThrottle:
    def __init__(self, per_address: str = "5/minute", overall: str = "100/minute"):
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_address = parse(per_address)
        self._overall = parse(overall)

    def wait_for(self, address: str) -> float | None:
        """Seconds this address must wait before its next attempt counts, or None: it may try now."""
        for item, key in ((self._per_address, address), (self._overall, _EVERYONE)):
            if not self._limiter.test(item, _NAMESPACE, key):
                reset = self._limiter.get_window_stats(item, _NAMESPACE, key).reset_time
                return float(max(math.ceil(reset - time.time()), 1))
        return None

    def failed(self, address: str, kind: str) -> None:
        """A wrong password (`kind`: login or basic): logged with the address, never the password."""
        self._limiter.hit(self._per_address, _NAMESPACE, address)
        self._limiter.hit(self._overall, _NAMESPACE, _EVERYONE)
        metrics.status_sign_in_failed(kind)
        log.warning("status page: wrong password (%s) from %s", kind, address,
                    extra={"client_address": address, "sign_in": kind})

    def refused(self, address: str, kind: str, wait: float) -> None:
        metrics.status_sign_in_throttled(kind)
        log.warning("status page: sign-in from %s refused for %.0f s: too many wrong passwords", address, wait,
                    extra={"client_address": address, "sign_in": kind})

    def succeeded(self, address: str) -> None:
        self._limiter.clear(self._per_address, _NAMESPACE, address)
