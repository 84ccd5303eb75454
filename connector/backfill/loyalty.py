"""`connector okendo backfill loyalty`: each known shopper's loyalty state, from Okendo's API.

`GET /loyalty/customers?email=…` (or `?loyaltyCustomerId=…`) answers a member's points balance,
status and VIP tiers, or 404 for someone who is not a member
(https://docs.okendo.io/merchant-rest-api/endpoints/loyalty). There is no list of members, so the
shoppers asked are those the connector knows (every email and loyalty member in the ledger and the
link table) or those of a file. The answer is merged into the newest `loyalty_customer` state the
ledger holds for that member (the API leaves out the email, birthday and customer id the webhook
carries) and stored as a snapshot (connector.backfill.snapshots) when it changes something.

A run keeps, besides its cursor, which list it reads (the ledger, or a file's path and a hash of
its contents): a run stopped over one list is not gone on from over another. One shopper Okendo
refuses (a 400 or 422, an answer without a member id, an id that is no UUID) is named as a problem
and the run goes on; only a run of such refusals (ERRORS_IN_A_ROW) stops it, as a wrong base URL
or a broken API would refuse every shopper alike.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from connector.backfill import syncs
from connector.backfill.snapshots import MAX_BODY_BYTES, Snapshot, SnapshotCounts, store_snapshots
from connector.ledger.models import (
    EMAIL_MAX,
    RESOURCE_ID_MAX,
    Event,
    EventOrigin,
    RecordLink,
    ResourceState,
    sequence_key,
)
from connector.ledger.resource_states import MEANINGFUL_STATES, resource_of
from connector.okendo_api import OkendoApiError

SYNC_NAME = "backfill:loyalty"
CHUNK = 50  # shoppers stored per transaction (and per cursor step): 25 s of Okendo's pace
LEASE_S = 300.0
ERRORS_IN_A_ROW = 20  # shoppers refused one after the other: no longer one shopper's problem
MAX_FILE_BYTES = 32 * 1024 * 1024  # about a million addresses; read whole, so bounded
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_events = Event.__table__
_links = RecordLink.__table__
_states = ResourceState.__table__


class RefusedInARow(OkendoApiError):
    """So many shoppers in a row refused that Okendo itself is likely the problem: the run stops.
    `problems` names them, for the terminal only."""

    def __init__(self, message: str, status: int | None, *, problems: list[str]):
        super().__init__(message, status)
        self.problems = list(problems)


class ShopperListError(Exception):
    """The shoppers' file cannot be used; the message names the lines."""


@dataclass(frozen=True, order=True)
class Shopper:
    """Asked by email when known (the member's id is then learnt), else by loyalty customer id."""

    email: str | None
    loyalty_customer_id: str | None = None

    @property
    def cursor(self) -> str:
        return f"email:{self.email}" if self.email else f"id:{self.loyalty_customer_id}"


@dataclass(frozen=True)
class ShopperList:
    shoppers: list[Shopper]
    source: str  # for people: "the ledger", or the file's path
    options: dict[str, Any]  # what the run keeps of it, to know a stopped run over the same list


@dataclass
class LoyaltySummary:
    resumed: bool
    asked: int = 0
    not_members: int = 0
    counts: SnapshotCounts = field(default_factory=SnapshotCounts)
    problems: list[str] = field(default_factory=list)


def shoppers_from_file(path: Path) -> ShopperList:
    """One email per line; blank lines and lines starting with # are ignored."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ShopperListError(f"{path}: {size / 2 ** 20:.0f} MB, more than {MAX_FILE_BYTES // 2 ** 20} MB: "
                                   "split it into smaller files and run once per file")
        content = path.read_bytes()
        lines = content.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ShopperListError(f"{path}: cannot be read ({error})") from None
    emails, bad = set(), []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if len(text) > EMAIL_MAX or not _EMAIL.match(text):
            bad.append(f"line {number}: {text[:80]!r} is not an email address")
            continue
        emails.add(text.lower())
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ShopperListError(f"{path}: {len(bad)} line(s) are not one email address each ({shown}); "
                               "fix or remove them and run again")
    return ShopperList([Shopper(email) for email in sorted(emails)], str(path),
                       {"source": "file", "path": str(path.resolve()), "sha256": hashlib.sha256(content).hexdigest()})


def known_shoppers(engine: Engine) -> ShopperList:
    """Every shopper the ledger knows: each email (from events and the link table's contact keys),
    with its loyalty member id when a loyalty event said it, then members known only by id."""
    e, links, states = _events, _links, _states
    with engine.connect() as connection:
        emails = {row[0] for row in connection.execute(
            select(e.c.customer_email).where(e.c.customer_email.is_not(None)).distinct())}
        emails |= {row[0].strip().lower() for row in connection.execute(
            select(links.c.source_id).where(func.lower(links.c.source_type) == "key:email").distinct())}
        member_emails = dict(connection.execute(
            select(e.c.resource_id, func.max(e.c.customer_email)).where(
                e.c.resource_type == "loyalty_customer", e.c.resource_id.is_not(None))
            .group_by(e.c.resource_id)).all())
        member_ids = set(member_emails)
        member_ids |= {row[0] for row in connection.execute(
            select(links.c.source_id).where(links.c.source_type == "loyalty_customer").distinct())}
        member_ids |= {row[0] for row in connection.execute(
            select(states.c.resource_id).where(states.c.resource_type == "loyalty_customer"))}
    by_email = {email: None for email in emails if email and _EMAIL.match(email)}
    for member_id, email in member_emails.items():
        if email:
            by_email[email] = member_id
    known_by_email = {member_id for member_id in by_email.values() if member_id}
    shoppers = [Shopper(email, member_id) for email, member_id in sorted(by_email.items())]
    shoppers += [Shopper(None, member_id) for member_id in sorted(member_ids - known_by_email)]
    # No hash of the list: it grows with every webhook, and a stopped run still goes on over it.
    return ShopperList(shoppers, "the ledger", {"source": "ledger"})


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class LoyaltyBackfill:
    def __init__(self, engine: Engine, api: Any, *, owner: str, dry_run: bool = False, restart: bool = False,
                 on_progress: Callable[[int, int, float, float | None], None] | None = None,
                 lease_s: float = LEASE_S, chunk: int = CHUNK, max_body_bytes: int = MAX_BODY_BYTES,
                 on_set_aside: Callable[[dict[str, Any]], None] | None = None):
        self.engine = engine
        self.api = api
        self.owner = owner
        self.dry_run = dry_run
        self.restart = restart
        self.on_progress = on_progress or (lambda done, stored, rate, eta: None)
        self.lease_s = lease_s
        self.chunk = chunk
        self.max_body_bytes = max_body_bytes
        # Told when a stopped run read another list and is not gone on from.
        self.on_set_aside = on_set_aside or (lambda options: None)
        self._in_a_row = 0
        self._refused_status: int | None = None  # the HTTP status of the last refusal

    def run(self, shoppers: ShopperList) -> LoyaltySummary:
        cursor = None
        if not self.dry_run:
            row = syncs.acquire(self.engine, SYNC_NAME, self.owner, self.lease_s, restart=self.restart,
                                options=shoppers.options)
            cursor = row.cursor
            if row.set_aside is not None:
                self.on_set_aside(row.set_aside)
        ordered = sorted(shoppers.shoppers, key=lambda shopper: shopper.cursor)
        todo = [shopper for shopper in ordered if cursor is None or shopper.cursor > cursor]
        earlier = len(ordered) - len(todo)  # asked by the runs this one goes on from
        summary = LoyaltySummary(resumed=cursor is not None)
        started = time.monotonic()
        try:
            for start in range(0, len(todo), self.chunk):
                chunk = todo[start:start + self.chunk]
                problems_before = len(summary.problems)
                snapshots = self._read(chunk, summary)
                counts = store_snapshots(self.engine, snapshots, dry_run=self.dry_run,
                                         max_body_bytes=self.max_body_bytes)
                summary.counts.add(counts)
                summary.problems += counts.refused
                if not self.dry_run:
                    syncs.advance(self.engine, SYNC_NAME, self.owner, self.lease_s, cursor=chunk[-1].cursor,
                                  counts={"pages": 1, "read": len(chunk), "stored": counts.stored,
                                          "missing": counts.missing, "different": counts.different,
                                          "problems": len(summary.problems) - problems_before})
                done = start + len(chunk)
                elapsed = time.monotonic() - started
                rate = done / elapsed if elapsed > 0 else 0.0
                self.on_progress(earlier + done, summary.counts.stored, rate,
                                 (len(todo) - done) / rate if rate else None)
        except BaseException as error:
            if not self.dry_run and not isinstance(error, syncs.SyncLost):
                syncs.finish_after(self.engine, SYNC_NAME, self.owner, error)
            raise
        if not self.dry_run:
            syncs.finish(self.engine, SYNC_NAME, self.owner, syncs.FINISHED)
        return summary

    def _ask(self, shopper: Shopper):  # type: ignore[no-untyped-def]
        """Okendo's answer for one shopper, or a problem naming the shopper when Okendo refuses that
        one (a 400 or 422, an answer without a member): the others go on. Anything else (the
        credentials, the rate limit, Okendo down) stops the run, as it would for every shopper."""
        who = shopper.email or f"loyalty member {shopper.loyalty_customer_id}"
        if shopper.email is None and not _is_uuid(shopper.loyalty_customer_id or ""):
            return None, f"{who}: not a loyalty customer id (Okendo's are UUIDs); not asked"
        try:
            if shopper.email:
                return self.api.loyalty_member(email=shopper.email), None
            return self.api.loyalty_member(loyalty_customer_id=shopper.loyalty_customer_id), None
        except OkendoApiError as error:
            if error.status not in (200, 400, 422):  # 200: an answer without a member
                raise
            self._in_a_row += 1
            said = f"HTTP {error.status}: {'; '.join(error.details)}" if error.status != 200 else str(error)
            what = "this address" if shopper.email else "this member from the ledger"
            self._refused_status = error.status
            return None, f"{who}: Okendo refused this shopper ({said}); fix or remove {what}"

    def _read(self, chunk: list[Shopper], summary: LoyaltySummary) -> list[Snapshot]:
        """Ask Okendo for each shopper's member, merged into the ledger's newest state of that member."""
        answers: list[tuple[Shopper, dict[str, Any], Any, str]] = []
        for shopper in chunk:
            answer, problem = self._ask(shopper)
            summary.asked += 1
            if problem is not None:
                summary.problems.append(problem)
                if self._in_a_row >= ERRORS_IN_A_ROW:
                    # Said without any shopper's address or Okendo's words about one: the message is kept in
                    # the run's row (okendo_syncs.last_error), which retention never prunes. The shoppers are
                    # named on the terminal, from `problems`.
                    raise RefusedInARow(
                        f"Okendo refused {ERRORS_IN_A_ROW} shoppers in a row (the last with HTTP "
                        f"{self._refused_status}); check okendo.api_base_url and the API's status before going on",
                        self._refused_status, problems=summary.problems)
                continue
            self._in_a_row = 0
            if shopper.email:
                # The row keeps the request without the address: the shopper's email is in the
                # payload, where retention and pruning find it, not copied into a header.
                request = answer.request.partition("?")[0] + "?email=…"
            else:
                request = answer.request
            member, read_at = answer.member, answer.requested_at
            if member is None:
                summary.not_members += 1
                continue
            member_id = member.get("loyaltyCustomerId")
            if not isinstance(member_id, str) or not 0 < len(member_id) <= RESOURCE_ID_MAX:
                summary.problems.append(f"{shopper.email or shopper.loyalty_customer_id}: Okendo's answer has no "
                                        "usable loyaltyCustomerId")
                continue
            answers.append((shopper, member, read_at, request))
        known = self._newest_resources([member["loyaltyCustomerId"] for _, member, _, _ in answers])
        snapshots = []
        for shopper, member, read_at, request in answers:
            resource = _merged(known.get(member["loyaltyCustomerId"]), member, shopper.email)
            snapshots.append(Snapshot("loyalty_customer", resource, read_at, request, EventOrigin.BACKFILL))
        return snapshots

    def _newest_resources(self, member_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The newest stored `loyalty_customer` resource of each member (what the API answer is merged into)."""
        if not member_ids:
            return {}
        e = _events
        newest: dict[str, tuple[tuple[str, int], int]] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(select(e.c.id, e.c.resource_id, e.c.sequence_number).where(
                    e.c.resource_type == "loyalty_customer", e.c.resource_id.in_(member_ids),
                    e.c.state.in_(MEANINGFUL_STATES), e.c.sequence_number.is_not(None), e.c.topic != "delete")):
                rank = (sequence_key(row.sequence_number), row.id)
                if row.resource_id not in newest or rank > newest[row.resource_id][0]:
                    newest[row.resource_id] = (rank, row.id)
            ids = [event_id for _, event_id in newest.values()]
            bodies = dict(connection.execute(select(e.c.id, e.c.body).where(e.c.id.in_(ids))).all()) if ids else {}
        found = {}
        for member_id, (_, event_id) in newest.items():
            resource = resource_of(bodies.get(event_id))
            if resource is not None:
                found[member_id] = resource
        return found


def _merged(known: dict[str, Any] | None, member: dict[str, Any], email: str | None) -> dict[str, Any]:
    """The webhook's shape (https://docs.okendo.io/webhooks/topics) with the API's newer values."""
    resource: dict[str, Any] = dict(known or {})
    for key, value in member.items():
        if isinstance(value, dict) and isinstance(resource.get(key), dict):
            resource[key] = {**resource[key], **value}
        else:
            resource[key] = value
    if email:
        customer = dict(resource.get("customer") or {})
        customer.setdefault("email", email)
        resource["customer"] = customer
    return resource
