"""Reconciliation: the worker reads Okendo's recent reviews now and then, and heals missed webhooks.

Svix gives up on a message after its retry schedule (about 27 hours) and disables an endpoint
that failed for 5 days (https://docs.svix.com/retries): an outage longer than that loses events for
good. With `okendo.reconcile` configured, one worker (any, on any host: a lease in the ledger
decides) reads the reviews created in the last `window_days`, newest first, and stops at the first
older one, so a pass costs only the pages the window needs (100 reviews each, at Okendo's 2
requests per second shared with any backfill). Every review the ledger has never seen, or whose
content differs from the newest state the ledger holds, is stored as a snapshot event (origin:
reconcile) and delivered like a webhook, in order (connector.backfill.snapshots): a missed
webhook is healed within one interval. A pass that fails (Okendo down, a 429 not waited out) or is
stopped is tried again after RETRY_S, doubled after each failure in a row up to the interval, so
one bad minute does not cost a whole interval of healing, and a long outage costs a request now
and then, not a burst.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.backfill import syncs
from connector.backfill.reviews import ORDER, PAGE_SIZE, check_next, review_date
from connector.backfill.snapshots import Snapshot, store_snapshots
from connector.config import ConfigError, ReconcileConfig, Settings
from connector.ledger.models import EventOrigin, utcnow

log = logging.getLogger(__name__)

SYNC_NAME = "reconcile:reviews"
LEASE_S = 300.0
CHECK_EVERY_S = 30.0  # how often each worker looks whether a pass is due (one statement)
RETRY_S = syncs.RETRY_S


@dataclass(frozen=True)
class PassResult:
    pages: int
    read: int
    stored: int
    missing: int
    different: int


class Stopped(syncs.Interrupted):
    """The worker is stopping: the pass ends after the page it stored."""


def reconcile_once(settings: Settings, engine: Engine, owner: str, *, api=None,  # type: ignore[no-untyped-def]
                   force: bool = False, stopping=lambda: False, retry_s: float = RETRY_S) -> PassResult | None:
    """Run a pass if one is due (or `force`) and no other process runs one; None when not run."""
    config = settings.okendo.reconcile
    if config is None:
        return None
    options = {"window_days": config.window_days, "every_minutes": config.every_minutes,
               "statuses": list(config.statuses)}
    every = timedelta(0) if force else timedelta(minutes=config.every_minutes)
    if syncs.acquire_if_due(engine, SYNC_NAME, owner, LEASE_S, every, options=options,
                            retry=timedelta(seconds=retry_s)) is None:
        return None
    own_api = api is None
    try:
        if api is None:
            from connector.backfill.api import open_api

            api = open_api(settings, engine)
        result = _pass(engine, api, owner, config, stopping, settings.receiver.max_body_bytes)
    except BaseException as error:
        syncs.finish_after(engine, SYNC_NAME, owner, error)
        raise
    finally:
        if own_api and api is not None:
            api.close()
    syncs.finish(engine, SYNC_NAME, owner, syncs.FINISHED)
    log.info("reconciliation of reviews: %d page(s), %d review(s) read, %d stored (%d missing, %d different)",
             result.pages, result.read, result.stored, result.missing, result.different)
    return result


def _pass(engine: Engine, api, owner: str, config: ReconcileConfig,  # type: ignore[no-untyped-def]
          stopping, max_body_bytes: int) -> PassResult:
    since = utcnow() - timedelta(days=config.window_days)
    pages = read = stored = missing = different = 0
    for status in config.statuses:
        next_url = None
        seen: set[str] = set()
        while True:
            page = api.review_page(status, next_url=next_url, order_by=ORDER, limit=PAGE_SIZE)
            in_window = [review for review in page.reviews if (review_date(review) or since) >= since]
            counts = store_snapshots(engine, [Snapshot("review", review, page.requested_at, page.request,
                                                       EventOrigin.RECONCILE) for review in in_window],
                                     max_body_bytes=max_body_bytes)
            problems = page.problems + counts.refused
            pages += 1
            read += counts.read
            stored += counts.stored
            missing += counts.missing
            different += counts.different
            syncs.advance(engine, SYNC_NAME, owner, LEASE_S, cursor=None,
                          counts={"pages": 1, "read": counts.read, "stored": counts.stored,
                                  "missing": counts.missing, "different": counts.different,
                                  "problems": len(problems)})
            for problem in problems:
                log.warning("reconciliation of %s reviews: Okendo sent an unusable review: %s", status, problem)
            if page.next_url is None or len(in_window) < len(page.reviews):
                break
            if stopping():
                raise Stopped()
            check_next(status, page.next_url, seen)
            next_url = page.next_url
    return PassResult(pages, read, stored, missing, different)


class ReconcileLoop:
    """A worker's thread: every CHECK_EVERY_S, a pass if one is due (the lease picks one worker)."""

    def __init__(self, settings: Settings, engine: Engine, owner: str, *, check_every_s: float = CHECK_EVERY_S,
                 retry_s: float = RETRY_S):
        self.settings = settings
        self.engine = engine
        self.owner = f"{owner}:reconcile"
        self.check_every_s = check_every_s
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ReconcileLoop:
        self._thread = threading.Thread(target=self._run, name="okendo-reconcile", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop looking; a pass in progress ends with its current page (its lease frees the name)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from connector.okendo_api import OkendoApiError

        while not self._stop.wait(self.check_every_s):
            try:
                reconcile_once(self.settings, self.engine, self.owner, stopping=self._stop.is_set,
                               retry_s=self.retry_s)
            except Stopped:
                return
            except (OkendoApiError, ConfigError) as error:
                log.error("reconciliation of reviews failed: %s; trying again in %s", error, self._retry_words())
            except SQLAlchemyError as error:
                log.warning("reconciliation of reviews: ledger unavailable (%s); trying again",
                            error.__class__.__name__)
            except Exception:  # keep the thread alive: the next pass may succeed
                log.exception("reconciliation of reviews: unexpected error")

    def _retry_words(self) -> str:
        """When the pass that just failed is tried again (as syncs.next_due judges it)."""
        config = self.settings.okendo.reconcile
        row = syncs.read(self.engine, SYNC_NAME)
        failures = row.failures if row is not None else 1
        wait = syncs.retry_wait(failures, timedelta(minutes=config.every_minutes),  # type: ignore[union-attr]
                                timedelta(seconds=self.retry_s)).total_seconds()
        return f"{wait:g} s" if wait < 90 else f"{wait / 60:g} minute(s)"
