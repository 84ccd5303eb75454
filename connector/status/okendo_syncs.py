"""The overview's "Okendo API" section: each backfill and the reconciliation, in words.

Read from the `okendo_syncs` table (connector.backfill.syncs) in one SELECT of a handful of rows,
on the connection the rest of the page (or the scrape, connector.metrics) already holds. A row
`running` whose lease ran out is a run whose process died: the next run of that name goes on
from its cursor (a backfill that had stored a page) or starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from connector.backfill.syncs import FAILED, FINISHED, RETRY_S, RUNNING, STOPPED, SyncRow, next_due as due_at
from connector.ledger.models import OkendoSync, utcnow

if TYPE_CHECKING:
    from connector.config import ReconcileConfig

_syncs = OkendoSync.__table__

RECONCILE_NAME = "reconcile:reviews"  # connector.backfill.reconcile.SYNC_NAME (not imported: it loads the API client)
# connector.backfill.reviews.PLAN_NAME: which statuses a reviews backfill over several has finished.
# Bookkeeping only (no counts of its own; each status has its line), so neither shown nor exported.
PLAN_NAME = "backfill:reviews"
DIED = "died"  # a running row whose lease ran out


def read_rows(connection: Connection) -> list[SyncRow]:
    """Every run, by name: one SELECT (one row per backfill and one for the reconciliation)."""
    return [SyncRow(**row._mapping) for row in connection.execute(
        select(_syncs).where(_syncs.c.name != PLAN_NAME).order_by(_syncs.c.name))]


@dataclass(frozen=True)
class LastPass:
    """The figures of a run's last finished pass (kept when the next one starts or fails)."""

    started_at: datetime | None
    finished_at: datetime | None
    pages: int
    read: int
    stored: int
    missing: int
    different: int
    problems: int

    @classmethod
    def of(cls, row: SyncRow) -> LastPass | None:
        last = row.last_pass
        if not isinstance(last, dict):
            return None

        def moment(key: str) -> datetime | None:
            value = last.get(key)
            return _aware(datetime.fromisoformat(value)) if isinstance(value, str) else None

        return cls(moment("started_at"), moment("finished_at"),
                   *(int(last.get(key) or 0) for key in ("pages", "read", "stored", "missing", "different", "problems")))


def title(name: str) -> str:
    """`backfill:reviews:approved` -> `Backfill of approved reviews`."""
    kind, _, rest = name.partition(":")
    if kind == "backfill" and rest.startswith("reviews:"):
        return f"Backfill of {rest.partition(':')[2]} reviews"
    if name == "backfill:loyalty":
        return "Backfill of loyalty members"
    if name == RECONCILE_NAME:
        return "Reconciliation of reviews"
    return name


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def lease_alive(row: SyncRow, now: datetime) -> bool:
    """A live process holds the run right now."""
    expires = _aware(row.lease_expires_at)
    return row.state == RUNNING and bool(row.lease_owner) and expires is not None and expires > now


REVIEW_STATUSES = ("approved", "pending", "rejected")  # connector.backfill.reviews.STATUSES


def _since_flag(since: str | None) -> str:
    """` --since 2025-01-01` for the stored moment, as `--since` reads it (a date, or a date and time)."""
    if not since:
        return ""
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        return ""
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return f" --since {moment:%Y-%m-%d}"
    return f" --since {moment:%Y-%m-%dT%H:%M:%S}"


def _rerun(row: SyncRow, plan: SyncRow | None = None) -> str | None:
    """The command that goes on with this run: asked as the stopped run was (a stopped run goes on
    only when asked the same --since, shoppers and, for reviews over several statuses, the same
    statuses; asked otherwise, it would start afresh and read again what it had read)."""
    options = row.options or {}
    if row.name.startswith("backfill:reviews:"):
        status = row.name.rpartition(":")[2]
        statuses, since = [status], options.get("since")
        planned = (plan.options or {}) if plan is not None and plan.state != FINISHED else {}
        if status in (planned.get("statuses") or ()):
            statuses, since = list(planned["statuses"]), planned.get("since")
        # No --status asks for the three in this order; the stopped run's list must come back the same.
        flags = "" if statuses == list(REVIEW_STATUSES) else "".join(f" --status {s}" for s in statuses)
        return f"connector okendo backfill reviews{flags}{_since_flag(since)}"
    if row.name == "backfill:loyalty":
        path = options.get("path") if options.get("source") == "file" else None
        return "connector okendo backfill loyalty" + (f" --emails {path}" if path else "")
    return None


@dataclass(frozen=True)
class SyncLine:
    row: SyncRow
    title: str
    state: str  # running | finished | stopped | failed | died
    state_words: str  # "stopped, resumable", "died, resumes from its cursor", ...
    running: bool  # a live lease is held
    rerun: str | None  # the command that goes on with it (backfills that can go on)
    next_due_at: datetime | None = None  # the reconciliation's next pass, when configured
    last: LastPass | None = None  # the last finished pass (the current one's figures are the row's)
    retrying: bool = False  # the next pass is a retry of one that did not finish, sooner than the interval

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def is_reconciliation(self) -> bool:
        return self.row.name == RECONCILE_NAME

    @property
    def bad(self) -> bool:
        return self.state in (FAILED, DIED)

    def to_json(self) -> dict[str, Any]:
        row = self.row
        return {
            "name": row.name, "title": self.title, "state": self.state, "state_words": self.state_words,
            "running": self.running, "resumable": row.resumable, "started_at": row.started_at,
            "updated_at": row.updated_at, "finished_at": row.finished_at, "pages": row.pages, "read": row.read,
            "stored": row.stored, "missing": row.missing, "different": row.different, "problems": row.problems,
            "last_error": row.last_error, "lease_owner": row.lease_owner if self.running else None,
            "lease_expires_at": row.lease_expires_at if self.running else None, "rerun": self.rerun,
            "next_due_at": self.next_due_at, "retrying": self.retrying,
            "last_finished_pass": None if self.last is None else {
                "started_at": self.last.started_at, "finished_at": self.last.finished_at, "pages": self.last.pages,
                "read": self.last.read, "stored": self.last.stored, "missing": self.last.missing,
                "different": self.last.different, "problems": self.last.problems},
        }


def describe(row: SyncRow, now: datetime, reconcile: ReconcileConfig | None = None,
             plan: SyncRow | None = None) -> SyncLine:
    """`plan`: the run over several review statuses (PLAN_NAME), which the rerun of a status goes on with."""
    running = lease_alive(row, now)
    reconciliation = row.name == RECONCILE_NAME
    if row.state == RUNNING and not running:
        state = DIED
        if reconciliation:
            words = "died; the next pass starts afresh"
        elif row.resumable:
            words = "died, resumes from its cursor"
        else:
            words = "died before its first page; starts afresh next time"
    elif row.state == RUNNING:
        state, words = RUNNING, "running"
    elif row.state in (STOPPED, FAILED):
        state = row.state
        words = f"{row.state}, resumable" if row.resumable and not reconciliation else row.state
    else:
        state, words = row.state, row.state
    rerun = _rerun(row, plan) if state in (STOPPED, FAILED, DIED) and row.resumable else None
    next_due, retrying = None, False
    if reconciliation and reconcile is not None:
        # As connector.backfill.syncs.acquire_if_due judges it: once per interval after the last
        # pass started, or sooner, a short doubling wait after one that did not finish.
        every = timedelta(minutes=reconcile.every_minutes)
        next_due = _aware(due_at(row, every, timedelta(seconds=RETRY_S))) or now
        started = _aware(row.started_at)
        retrying = row.state != FINISHED and started is not None and next_due < started + every
    return SyncLine(row, title(row.name), state, words, running, rerun, next_due, LastPass.of(row), retrying)


@dataclass
class OkendoApiSection:
    lines: list[SyncLine] = field(default_factory=list)  # every run but the reconciliation, by name
    reconciliation: SyncLine | None = None
    reconcile: ReconcileConfig | None = None  # None: not configured
    now: datetime = field(default_factory=utcnow)

    @property
    def shown(self) -> bool:
        return bool(self.lines or self.reconciliation or self.reconcile)

    @property
    def reconciliation_due_now(self) -> bool:
        line = self.reconciliation
        return bool(self.reconcile and line and line.next_due_at and line.next_due_at <= self.now
                    and not line.running)

    @property
    def schedule(self) -> str:
        """`every 60 minutes, reviews created in the last 30 days: approved, pending`."""
        config = self.reconcile
        if config is None:
            return ""
        return (f"every {config.every_minutes:g} minutes, reviews created in the last {config.window_days:g} days: "
                f"{', '.join(config.statuses)}")

    def to_json(self) -> dict[str, Any]:
        reconcile = None
        if self.reconcile is not None:
            reconcile = {"every_minutes": self.reconcile.every_minutes, "window_days": self.reconcile.window_days,
                         "statuses": list(self.reconcile.statuses),
                         "next_due_at": (self.reconciliation.next_due_at if self.reconciliation else self.now)}
        return {"configured": self.reconcile is not None, "reconcile": reconcile,
                "reconciliation": self.reconciliation.to_json() if self.reconciliation else None,
                "syncs": [line.to_json() for line in self.lines]}


def section(connection: Connection, reconcile: ReconcileConfig | None, now: datetime | None = None) -> OkendoApiSection:
    now = now or utcnow()
    result = OkendoApiSection(reconcile=reconcile, now=now)
    plan = next((SyncRow(**found._mapping) for found in connection.execute(
        select(_syncs).where(_syncs.c.name == PLAN_NAME))), None)
    for row in read_rows(connection):
        line = describe(row, now, reconcile, plan)
        if line.is_reconciliation:
            result.reconciliation = line
        else:
            result.lines.append(line)
    return result
