"""`connector okendo backfill loyalty`: each known shopper's loyalty state, from Okendo's API.

`GET /loyalty/customers?email=…` (or `?loyaltyCustomerId=…`) answers a member's points balance,
status and VIP tiers, or 404 for someone who is not a member
(https://docs.okendo.io/merchant-rest-api/endpoints/loyalty). There is no list of members, so the
shoppers asked are those the connector knows (every email and loyalty member in the ledger and the
link table) or those of a file. The answer is merged into the newest `loyalty_customer` state the
ledger holds for that member (the API leaves out the email, birthday and customer id the webhook
carries) and stored as a snapshot (connector.backfill.snapshots) when it changes something.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from connector.backfill import syncs
from connector.backfill.snapshots import Snapshot, SnapshotCounts, store_snapshots
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

SYNC_NAME = "backfill:loyalty"
CHUNK = 50  # shoppers stored per transaction (and per cursor step): 25 s of Okendo's pace
LEASE_S = 300.0
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_events = Event.__table__
_links = RecordLink.__table__
_states = ResourceState.__table__


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


@dataclass
class LoyaltySummary:
    resumed: bool
    asked: int = 0
    not_members: int = 0
    counts: SnapshotCounts = field(default_factory=SnapshotCounts)
    problems: list[str] = field(default_factory=list)


def shoppers_from_file(path: Path) -> list[Shopper]:
    """One email per line; blank lines and lines starting with # are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
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
    return [Shopper(email) for email in sorted(emails)]


def known_shoppers(engine: Engine) -> list[Shopper]:
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
    return shoppers


class LoyaltyBackfill:
    def __init__(self, engine: Engine, api: Any, *, owner: str, dry_run: bool = False, restart: bool = False,
                 on_progress: Callable[[int, int, float, float | None], None] | None = None,
                 lease_s: float = LEASE_S):
        self.engine = engine
        self.api = api
        self.owner = owner
        self.dry_run = dry_run
        self.restart = restart
        self.on_progress = on_progress or (lambda done, stored, rate, eta: None)
        self.lease_s = lease_s

    def run(self, shoppers: Sequence[Shopper]) -> LoyaltySummary:
        cursor = None
        if not self.dry_run:
            cursor = syncs.acquire(self.engine, SYNC_NAME, self.owner, self.lease_s, restart=self.restart,
                                   options={"shoppers": len(shoppers)}).cursor
        ordered = sorted(shoppers, key=lambda shopper: shopper.cursor)
        todo = [shopper for shopper in ordered if cursor is None or shopper.cursor > cursor]
        summary = LoyaltySummary(resumed=cursor is not None)
        started = time.monotonic()
        try:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start:start + CHUNK]
                snapshots = self._read(chunk, summary)
                counts = store_snapshots(self.engine, snapshots, dry_run=self.dry_run)
                summary.counts.add(counts)
                if not self.dry_run:
                    syncs.advance(self.engine, SYNC_NAME, self.owner, self.lease_s, cursor=chunk[-1].cursor,
                                  counts={"pages": 1, "read": len(chunk), "stored": counts.stored,
                                          "missing": counts.missing, "different": counts.different})
                done = start + len(chunk)
                elapsed = time.monotonic() - started
                rate = done / elapsed if elapsed > 0 else 0.0
                self.on_progress(done, summary.counts.stored, rate, (len(todo) - done) / rate if rate else None)
        except BaseException as error:
            if not self.dry_run and not isinstance(error, syncs.SyncLost):
                syncs.finish_after(self.engine, SYNC_NAME, self.owner, error)
            raise
        if not self.dry_run:
            syncs.finish(self.engine, SYNC_NAME, self.owner, syncs.FINISHED)
        return summary

    def _read(self, chunk: list[Shopper], summary: LoyaltySummary) -> list[Snapshot]:
        """Ask Okendo for each shopper's member, merged into the ledger's newest state of that member."""
        answers: list[tuple[Shopper, dict[str, Any], Any, str]] = []
        for shopper in chunk:
            if shopper.email:
                answer = self.api.loyalty_member(email=shopper.email)
                # The row keeps the request without the address: the shopper's email is in the
                # payload, where retention and pruning find it, not copied into a header.
                request = answer.request.partition("?")[0] + "?email=…"
            else:
                answer = self.api.loyalty_member(loyalty_customer_id=shopper.loyalty_customer_id)
                request = answer.request
            member, read_at = answer.member, answer.requested_at
            summary.asked += 1
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
