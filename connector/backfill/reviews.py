"""`connector okendo backfill reviews`: every review Okendo holds, into the ledger as events.

Pages through `GET /reviews` (https://docs.okendo.io/merchant-rest-api/endpoints/reviews), one
status at a time (the endpoint lists one status per request, `approved` unless asked), newest
first: `--since` then ends the scan at the first older review, and a review written while the
backfill runs reaches the connector by webhook anyway. Each page is stored in one transaction
(connector.backfill.snapshots decides what is new), then its cursor is kept in the ledger
(connector.backfill.syncs), so a run stopped by Ctrl-C, a crash or an error goes on from the page
after the last one stored. A run over several statuses is one run too (`backfill:reviews`, its
plan): after a stop, the next run over the same statuses skips those it finished and goes on
with the one it was reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine

from connector.backfill import syncs
from connector.backfill.snapshots import MAX_BODY_BYTES, Snapshot, SnapshotCounts, store_snapshots
from connector.ledger.models import EventOrigin, utcnow
from connector.okendo_api import OkendoApiError

STATUSES = ("approved", "pending", "rejected")  # the endpoint's `status` values
ORDER = "date desc"
PAGE_SIZE = 100  # the most `limit` allows
LEASE_S = 300.0  # a page (with Okendo's retries) takes seconds; a dead run frees its name after this
PLAN_NAME = "backfill:reviews"  # the run over several statuses: which of them it finished


@dataclass(frozen=True)
class PageReport:
    """What one stored page adds, for the command's progress line."""

    status: str
    page: int  # pages read by this run
    read: int  # reviews read by this run
    stored: int  # of those, stored as events
    per_second: float  # reviews read per second in this run
    eta_s: float | None  # estimated seconds left for this status, from the review dates reached
    reached: str | None  # the dateCreated of the last review read


@dataclass
class StatusSummary:
    status: str
    resumed: bool  # went on from an earlier run's cursor
    finished: bool  # read to the last page (or to --since)
    skipped: bool = False  # finished by the run this one went on from: not read again
    pages: int = 0
    counts: SnapshotCounts = field(default_factory=SnapshotCounts)
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    # With the earlier runs this one went on from (as the ledger counts them); this run's own when fresh.
    pages_in_all: int = 0
    read_in_all: int = 0


def sync_name(status: str) -> str:
    return f"backfill:reviews:{status}"


class CursorRefused(OkendoApiError):
    """Okendo refuses the page an earlier run stopped at: only --restart goes on."""


class PageLoop(OkendoApiError):
    """Okendo sent, as the next page, one already read: following it would never end."""


def check_next(status: str, next_url: str | None, seen: set[str]) -> None:
    """Raise PageLoop when `next_url` is a page this scan has already asked for."""
    if next_url is not None and next_url in seen:
        raise PageLoop(f"{status} reviews: Okendo answered the nextUrl of a page already read ({next_url[:200]}); "
                       "stopped rather than read the same pages forever. What was stored stays; run with --restart "
                       "later, and tell Okendo's support if it happens again")
    if next_url is not None:
        seen.add(next_url)


def review_date(review: dict[str, Any]) -> datetime | None:
    value = review.get("dateCreated")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class ReviewBackfill:
    def __init__(self, engine: Engine, api: Any, *, owner: str, dry_run: bool = False, restart: bool = False,
                 since: datetime | None = None, origin: str = EventOrigin.BACKFILL,
                 on_page: Callable[[PageReport], None] | None = None, lease_s: float = LEASE_S,
                 max_body_bytes: int = MAX_BODY_BYTES,
                 on_set_aside: Callable[[str, dict[str, Any]], None] | None = None):
        self.engine = engine
        self.api = api
        self.owner = owner
        self.dry_run = dry_run
        self.restart = restart
        self.since = since
        self.origin = origin
        self.on_page = on_page or (lambda report: None)
        self.lease_s = lease_s
        self.max_body_bytes = max_body_bytes
        # Told when an unfinished earlier run of a status was asked otherwise (--since) and is not gone on from.
        self.on_set_aside = on_set_aside or (lambda status, options: None)

    def _since_text(self) -> str | None:
        return self.since.isoformat() if self.since else None

    def _options(self, status: str) -> dict[str, Any]:
        return {"status": status, "since": self._since_text()}

    def run(self, statuses: Sequence[str] = STATUSES,
            on_done: Callable[[StatusSummary], None] | None = None) -> list[StatusSummary]:
        """Each status in turn, as one run: a status the unfinished run this one goes on from had
        finished is skipped (its summary from the ledger), unless `restart`."""
        on_done = on_done or (lambda summary: None)
        if self.dry_run:
            summaries = []
            for status in statuses:
                summaries.append(self.run_status(status))
                on_done(summaries[-1])
            return summaries
        plan = syncs.acquire(self.engine, PLAN_NAME, self.owner, self.lease_s, restart=self.restart,
                             options={"statuses": list(statuses), "since": self._since_text()})
        summaries = []
        try:
            for status in statuses:
                summary = self._done_in(plan, status) if plan.went_on else None
                if summary is None:
                    syncs.advance(self.engine, PLAN_NAME, self.owner, self.lease_s, cursor=status, counts={})
                    # One status can take longer than a lease: the run over all of them is renewed with each
                    # page, or a second `backfill reviews` would take it over and end this one (SyncLost).
                    summary = self.run_status(status, renew_plan=True)
                summaries.append(summary)
                on_done(summary)
        except BaseException as error:
            if not isinstance(error, syncs.SyncLost):
                syncs.finish_after(self.engine, PLAN_NAME, self.owner, error)
            raise
        syncs.finish(self.engine, PLAN_NAME, self.owner, syncs.FINISHED)
        return summaries

    def _done_in(self, plan: syncs.SyncRow, status: str) -> StatusSummary | None:
        """The summary of `status` when the run `plan` goes on from finished it, else None."""
        row = syncs.read(self.engine, sync_name(status))
        if (row is None or row.state != syncs.FINISHED or row.finished_at is None or plan.started_at is None
                or row.finished_at < plan.started_at or row.options != self._options(status)):
            return None
        summary = StatusSummary(status, resumed=True, finished=True, skipped=True, pages=row.pages)
        summary.counts.read, summary.counts.stored = row.read, row.stored
        summary.counts.missing, summary.counts.different = row.missing, row.different
        summary.pages_in_all, summary.read_in_all = row.pages, row.read
        return summary

    def run_status(self, status: str, *, renew_plan: bool = False) -> StatusSummary:
        """Read one status to its end. Raises what stops it (an Okendo error, Ctrl-C, a lost lease),
        after keeping the cursor, so the next run goes on from there. `renew_plan`: renew the lease of
        the run over all statuses (run()) with each page too."""
        name = sync_name(status)
        cursor = None
        if not self.dry_run:
            row = syncs.acquire(self.engine, name, self.owner, self.lease_s, restart=self.restart,
                                options=self._options(status))
            cursor = row.cursor
            if row.set_aside is not None:
                self.on_set_aside(status, row.set_aside)
        summary = StatusSummary(status, resumed=cursor is not None, finished=False)
        started = time.monotonic()
        first_fraction: float | None = None
        seen: set[str] = set()
        try:
            lower_bound = self.since or self._oldest_date(status)
            next_url = self._resolve(cursor)
            check_next(status, next_url, seen)
            while True:
                page = self._page(status, next_url, kept=next_url is not None and summary.pages == 0)
                reviews = page.reviews
                ended = page.next_url is None
                if self.since is not None:
                    kept = [r for r in reviews if (review_date(r) or self.since) >= self.since]
                    ended = ended or len(kept) < len(reviews)
                    reviews = kept
                counts = store_snapshots(self.engine, [
                    Snapshot("review", review, page.requested_at, page.request, self.origin) for review in reviews],
                    dry_run=self.dry_run, max_body_bytes=self.max_body_bytes)
                summary.pages += 1
                summary.counts.add(counts)
                problems = page.problems + counts.refused
                summary.problems += problems
                next_url = None if ended else page.next_url
                check_next(status, next_url, seen)
                if not self.dry_run:
                    syncs.advance(self.engine, name, self.owner, self.lease_s, cursor=self._relative(next_url),
                                  counts={"pages": 1, "read": counts.read, "stored": counts.stored,
                                          "missing": counts.missing, "different": counts.different,
                                          "problems": len(problems)})
                    if renew_plan:
                        syncs.advance(self.engine, PLAN_NAME, self.owner, self.lease_s, cursor=status, counts={})
                reached = next((r.get("dateCreated") for r in reversed(page.reviews) if r.get("dateCreated")), None)
                fraction = _fraction_done(review_date(page.reviews[-1]) if page.reviews else None, lower_bound)
                if first_fraction is None:
                    first_fraction = fraction
                elapsed = time.monotonic() - started
                self.on_page(PageReport(status, summary.pages, summary.counts.read, summary.counts.stored,
                                        summary.counts.read / elapsed if elapsed > 0 else 0.0,
                                        _eta(elapsed, first_fraction, fraction, ended), reached))
                if next_url is None:
                    break
        except BaseException as error:
            if not self.dry_run and not isinstance(error, syncs.SyncLost):
                syncs.finish_after(self.engine, name, self.owner, error)
            raise
        summary.finished = True
        summary.elapsed_s = time.monotonic() - started
        summary.pages_in_all, summary.read_in_all = summary.pages, summary.counts.read
        if not self.dry_run:
            row = syncs.read(self.engine, name)
            if row is not None:
                summary.pages_in_all, summary.read_in_all = row.pages, row.read
            syncs.finish(self.engine, name, self.owner, syncs.FINISHED)
        return summary

    def _page(self, status: str, next_url: str | None, *, kept: bool):  # type: ignore[no-untyped-def]
        """One page; `kept`: its URL is the cursor an earlier run stopped at, which Okendo may refuse
        (a cursor of another API version, or one it no longer accepts): then only --restart goes on."""
        try:
            return self.api.review_page(status, next_url=next_url, order_by=ORDER, limit=PAGE_SIZE)
        except OkendoApiError as error:
            if kept and error.status in (400, 422):
                raise CursorRefused(
                    f"{status} reviews: Okendo refused the page the earlier run stopped at (HTTP {error.status}); "
                    f"run the same command with --restart to start from the first page (what was stored stays, "
                    "and is not stored twice)", error.status, error.details) from None
            raise

    def _oldest_date(self, status: str) -> datetime | None:
        """The store's oldest review of this status (one request): what the ETA measures progress against."""
        page = self.api.review_page(status, order_by="date asc", limit=1)
        return review_date(page.reviews[0]) if page.reviews else None

    # The cursor is kept relative to the API's base URL: the credentials never follow a stored URL to
    # another host, and a changed okendo.api_base_url (a test emulator, then production) starts over.
    def _relative(self, next_url: str | None) -> str | None:
        base = self.api.base_url
        if next_url is None:
            return None
        return next_url[len(base):] if next_url.startswith(base + "/") else next_url

    def _resolve(self, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        if cursor.startswith("/"):
            return self.api.base_url + cursor
        return None  # stored under another base URL: start from the first page


def _fraction_done(reached: datetime | None, lower_bound: datetime | None) -> float | None:
    """How far newest-first paging has come, by review dates: from now back to the oldest review."""
    if reached is None or lower_bound is None:
        return None
    now = utcnow()
    span = (now - lower_bound).total_seconds()
    if span <= 0:
        return None
    return min(max((now - reached).total_seconds() / span, 0.0), 1.0)


def _eta(elapsed: float, first: float | None, now: float | None, ended: bool) -> float | None:
    if ended:
        return 0.0
    if first is None or now is None or now <= first or elapsed <= 0:
        return None
    return elapsed * (1.0 - now) / (now - first)
