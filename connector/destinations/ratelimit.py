"""Per-destination limits: one request window and one concurrency cap per CRM account, shared by every
thread of every process on the ledger.

HubSpot counts requests in a rolling ten-second window per private app
(https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines);
Salesforce limits long-running concurrent requests
(https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html).
Normal operation stays under both, and a 429 seen by any process pauses every process of that account
until the window has passed.

The window is kept as evenly spaced slots (`per_seconds / requests` apart): a window of any
`per_seconds` then holds at most `requests` of them, whatever the number of processes, and one
atomic statement hands out a slot (connector.ledger.rate_limits). `RateLimiter` is the same contract
for one process, used where there is no ledger (one-off commands, tests of a single destination).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.ledger.rate_limits import RateLimitStore, store_for

log = logging.getLogger(__name__)


class Limiter(Protocol):
    def request(self) -> AbstractContextManager[None]:
        """Wrap one CRM request: returns when it may be sent."""

    def pause(self, seconds: float) -> None:
        """Hold every caller back for `seconds` (after a 429 or a Retry-After)."""


class RateLimiter:
    """One process's limiter: a rolling window and a concurrency semaphore."""

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
        if self._slots is not None:
            self._slots.acquire()
        try:
            self._wait_for_window()
            yield
        finally:
            if self._slots is not None:
                self._slots.release()


# Slots are spaced a little wider than `per_seconds / requests`: a request reaches the CRM some
# milliseconds after its slot (a sleep that overshoots, a busy host, clocks of several hosts a few
# milliseconds apart), and the CRM counts arrivals. 2% plus 50 ms per window covers that.
WINDOW_MARGIN_SHARE = 0.02
WINDOW_MARGIN_S = 0.05
# A request whose slot is further away than this looks again, before it is sent, whether a 429 seen
# elsewhere paused the account meanwhile (a nearer one is sent as granted: one statement per request).
RECHECK_PAUSE_AFTER_S = 0.5


class SharedRateLimiter:
    """Every process's limiter for one CRM account, its state in the ledger (see RateLimitStore)."""

    def __init__(self, store: RateLimitStore, account: str, destination: str, max_requests: int | None,
                 per_seconds: float, max_concurrency: int | None = None, *, lease_s: float = 60.0,
                 clock=time.time, sleep=time.sleep, holder: str | None = None):  # type: ignore[no-untyped-def]
        self.store = store
        self.account = account
        self.destination = destination
        window = per_seconds * (1 + WINDOW_MARGIN_SHARE) + WINDOW_MARGIN_S
        self.spacing = window / max_requests if max_requests else 0.0
        self.max_concurrency = max_concurrency
        self.lease_s = lease_s
        self._clock = clock  # wall-clock seconds: slots are compared across processes and hosts
        self._sleep = sleep
        self._holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._paused_until = 0.0  # this process's own last pause, known without asking the ledger
        # Never poll the ledger for more concurrent slots than the account has.
        self._local_slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None

    def pause(self, seconds: float) -> None:
        until = self._clock() + seconds
        self._paused_until = max(self._paused_until, until)
        try:
            self.store.pause(self.account, self.destination, until, self._holder)
        except SQLAlchemyError as error:  # this process still waits; the others may be answered 429 too
            log.warning("destination %s: could not share a %.1f s rate-limit pause through the ledger (%s)",
                        self.destination, seconds, error.__class__.__name__)

    @contextmanager
    def request(self) -> Iterator[None]:
        lease = self._lease() if self.max_concurrency else None
        try:
            self._wait_for_slot()
            yield
        finally:
            if lease is not None:
                self._release(*lease)

    def _unavailable(self, error: SQLAlchemyError) -> DeliveryError:
        # Nothing was sent: the delivery is simply tried again later, like any CRM call that could not go out.
        return DeliveryError(ErrorClass.RETRY_SOON, f"destination {self.destination}: the shared rate limit in the "
                             f"ledger could not be read ({type(error).__name__}), so nothing was sent; check that the "
                             "ledger's database is reachable (`okendo doctor`)", code="RATE_LIMIT_UNAVAILABLE")

    def _wait_for_slot(self) -> None:
        try:
            self._wait_for_slot_in_ledger()
        except SQLAlchemyError as error:
            raise self._unavailable(error) from error

    def _wait_for_slot_in_ledger(self) -> None:
        while True:
            slot = self.store.take_slot(self.account, self.destination, self.spacing, self._clock())
            wait = slot - self._clock()
            if wait > 0:
                self._sleep(wait)
            if self._paused_until > slot:
                continue  # this process saw a 429 after the slot was granted: take one after the pause
            if wait > RECHECK_PAUSE_AFTER_S and self.store.paused_until(self.account) > slot:
                continue  # another process did
            return

    def _lease(self) -> tuple[int, str]:
        assert self._local_slots is not None and self.max_concurrency is not None
        self._local_slots.acquire()
        try:
            holder = f"{self._holder}:{uuid.uuid4().hex[:8]}"
            delay = 0.01
            while (slot := self.store.lease(self.account, self.max_concurrency, holder, self._clock(),
                                            self.lease_s)) is None:
                self._sleep(random.uniform(delay / 2, delay))  # jitter: waiters on several hosts do not poll in step
                delay = min(delay * 2, 0.25)
            return slot, holder
        except SQLAlchemyError as error:
            self._local_slots.release()
            raise self._unavailable(error) from error
        except BaseException:
            self._local_slots.release()
            raise

    def _release(self, slot: int, holder: str) -> None:
        try:
            self.store.release(self.account, slot, holder)
        except SQLAlchemyError as error:  # the lease expires by itself after lease_s
            log.warning("destination %s: could not give back concurrency slot %d (%s); it frees itself in %.0f s",
                        self.destination, slot, error.__class__.__name__, self.lease_s)
        finally:
            assert self._local_slots is not None
            self._local_slots.release()


def account_key(config: HubSpotDestinationConfig | SalesforceDestinationConfig) -> str:
    """Which CRM account a destination spends the limits of, as a hash (the credential is never stored).

    HubSpot limits each private app, i.e. each access token; Salesforce each org, reached here through
    one instance or login URL and one user or connected app.
    """
    if isinstance(config, HubSpotDestinationConfig):
        parts = ["hubspot", config.base_url.rstrip("/"), config.access_token or ""]
    else:
        parts = ["salesforce", (config.instance_url or config.login_url).rstrip("/"),
                 config.username or config.client_id or config.access_token or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


_local: dict[tuple[str, int | None, float, int | None], RateLimiter] = {}
_local_lock = threading.Lock()


def shared_limiter(destination: str, max_requests: int | None, per_seconds: float,
                   max_concurrency: int | None) -> RateLimiter:
    """One process-local limiter per destination and settings (no ledger to share it through)."""
    key = (destination, max_requests, per_seconds, max_concurrency)
    with _local_lock:
        if key not in _local:
            _local[key] = RateLimiter(max_requests, per_seconds, max_concurrency)
        return _local[key]


def limiter_for(name: str, config: HubSpotDestinationConfig | SalesforceDestinationConfig,
                ledger: Engine | None) -> Limiter:
    """The limiter a destination's calls go through: shared through the ledger when there is one
    (every limiter object of the account, in this process or another, then draws on the same row)."""
    limit = config.rate_limit
    store = store_for(ledger) if ledger is not None else None
    if store is None:
        return shared_limiter(name, limit.requests, limit.per_seconds, limit.max_concurrency)
    # A lease outlives the longest call it covers (connect + read timeouts), then frees itself.
    lease_s = config.connect_timeout_s + config.timeout_s + 15.0
    return SharedRateLimiter(store, account_key(config), name, limit.requests, limit.per_seconds,
                             limit.max_concurrency, lease_s=lease_s)
