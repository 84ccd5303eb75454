"""What is wrong right now, read from the ledger: one Firing per condition and group.

Every evaluator (each delivery worker, `connector alerts run`) reads the same ledger, so they all
find the same firings; the outbox lets only one message per group and interval through.
Messages name destinations, error codes, counts and times, never a shopper's data: a dead
delivery's error text can quote a record (an email address HubSpot refused), so it stays on the
status page, behind its password, and the alert links there.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from connector.alerts import outbox
from connector.alerts.message import (DEAD, NO_LIVE_WORKER, OLDEST_WAITING, PAUSED, WEBHOOKS_503, Alert,
                                      status_link)
from connector.alerts.outbox import Firing
from connector.config import Settings
from connector.ledger.models import Delivery, DeliveryState, Event, EventState, utcnow
from connector.worker import pausing, presence

_deliveries = Delivery.__table__
_events = Event.__table__

# The counter of webhooks answered 503 (connector.alerts.refusals adds to it).
WEBHOOKS_503_COUNTER = "webhooks_503"
# Deaths older than this that no message reported (the connector was down meanwhile) are not reported.
DEAD_LOOKBACK = timedelta(days=1)

# connector.destinations.errors.DeliveryError.__str__: "<class>[ HTTP <status>][ <code>]: <message>".
# Anything else in a dead delivery's last_error is a mapping's failure (its reason, in words).
_DELIVERY_ERROR = re.compile(r"^(retry_soon|retry_later|reauthenticate|permanent)(?: HTTP (\d{3}))?(?: ([^\s:]+))?: ")


def error_code(last_error: str | None) -> tuple[str, str | None, int | None]:
    """The code a dead delivery's error is grouped under, with its class and HTTP status."""
    match = _DELIVERY_ERROR.match(last_error or "")
    if match is None:
        return "mapping", "mapping", None
    error_class, status, code = match.group(1), match.group(2), match.group(3)
    return code or (f"HTTP {status}" if status else error_class), error_class, int(status) if status else None


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def evaluate(connection: Connection, settings: Settings, now: datetime | None = None) -> list[Firing]:
    now = now or utcnow()
    wanted = settings.alerts.conditions
    firings: list[Firing] = []
    pauses = pausing.paused(connection)
    waiting = _waiting(connection)
    if wanted.dead:
        firings += _dead(connection, settings, now)
    if wanted.paused:
        firings += _paused(settings, pauses, waiting, now)
    if wanted.no_live_worker:
        firings += _no_live_worker(connection, settings, waiting, now)
    if wanted.oldest_waiting_minutes is not None:
        firings += _oldest_waiting(connection, settings, pauses, waiting, now)
    if wanted.webhooks_503:
        firings += _webhooks_503(connection, settings, now)
    return firings


def _waiting(connection: Connection) -> dict[tuple[str, str], tuple[int, datetime]]:
    """Pending and retrying deliveries per (destination, state): how many, and the oldest's creation."""
    d = _deliveries
    rows = connection.execute(select(d.c.destination, d.c.state, func.count(), func.min(d.c.created_at))
                              .where(d.c.state.in_(DeliveryState.DUE)).group_by(d.c.destination, d.c.state)).all()
    return {(row[0], row[1]): (int(row[2]), row[3]) for row in rows}


def _dead(connection: Connection, settings: Settings, now: datetime) -> list[Firing]:
    config = settings.alerts
    d = _deliveries
    lookback = max(DEAD_LOOKBACK, timedelta(minutes=config.interval_minutes))
    reported = outbox.last_messages(connection, DEAD, since=now - lookback)
    # Scans the dead deliveries only (ix_deliveries_destination_state), the last day's of them kept.
    rows = connection.execute(select(d.c.destination, func.substr(d.c.last_error, 1, 200), d.c.updated_at).where(
        d.c.state == DeliveryState.DEAD, d.c.updated_at > now - lookback, d.c.updated_at <= now))
    groups: dict[tuple[str, str], dict] = {}
    for destination, last_error, updated_at in rows:
        code, error_class, status = error_code(last_error)
        group = f"{destination} {code}"
        last = reported.get((DEAD, group))
        if last is not None and updated_at <= last.covered_until:
            continue  # an earlier message counted it
        found = groups.setdefault((destination, code), {"count": 0, "first": updated_at, "last": updated_at,
                                                        "error_class": error_class, "http_status": status})
        found["count"] += 1
        found["first"], found["last"] = min(found["first"], updated_at), max(found["last"], updated_at)
    if not groups:
        return []
    totals = dict(connection.execute(select(d.c.destination, func.count()).where(d.c.state == DeliveryState.DEAD)
                                     .group_by(d.c.destination)).all())
    firings = []
    for (destination, code), found in sorted(groups.items()):
        count, total = found["count"], int(totals.get(destination, found["count"]))
        what = "a mapping failed on them" if code == "mapping" else f"their last error was {code}"
        text = (f"{count} deliveries to {destination} went dead between {found['first']:%H:%M} and "
                f"{found['last']:%H:%M} UTC: {what}. {total} deliveries to {destination} are dead in all. "
                "They keep their last error and wait: fix the cause (each delivery on the status page says "
                f"what the CRM refused), then replay them there or with "
                f"`connector replay --state dead --destination {destination}`.")
        firings.append(Firing(Alert(
            DEAD, f"{destination} {code}", f"{count} deliveries to {destination} went dead: {code}", text, now,
            status_link(config, "/status/events", state=DeliveryState.DEAD, destination=destination),
            {"destination": destination, "code": code, "error_class": found["error_class"],
             "http_status": found["http_status"], "count": count, "dead_in_all": total,
             "first_at": found["first"].isoformat(), "last_at": found["last"].isoformat()})))
    return firings


def _paused(settings: Settings, pauses: dict[str, pausing.Pause], waiting: dict, now: datetime) -> list[Firing]:
    firings = []
    for destination, pause in sorted(pauses.items()):
        held = sum(count for (name, _), (count, _) in waiting.items() if name == destination)
        reason = pause.reason if len(pause.reason) <= 500 else pause.reason[:499] + "…"
        who = "the connector itself (the failure was the destination's, not a record's)" if pause.automatic \
            else pause.by
        text = (f"{destination} was paused at {pause.at:%Y-%m-%d %H:%M} UTC by {who}: {reason}. "
                f"{held} deliveries to it wait and spend no attempts. Fix the cause, then resume it on the status "
                f"page or with `connector destination resume {destination}`.")
        firings.append(Firing(Alert(
            PAUSED, destination, f"{destination} is paused", text, now,
            status_link(settings.alerts, "/status/events", state=DeliveryState.PENDING, destination=destination),
            {"destination": destination, "paused_at": pause.at.isoformat(), "paused_by": pause.by,
             "automatic": pause.automatic, "waiting": held})))
    return firings


def _no_live_worker(connection: Connection, settings: Settings, waiting: dict, now: datetime) -> list[Firing]:
    heartbeat_s = settings.worker.heartbeat_s
    deliveries = sum(count for count, _ in waiting.values())
    unplanned = connection.execute(select(func.count()).where(_events.c.state == EventState.RECEIVED)).scalar_one()
    workers = presence.seen(connection, heartbeat_s, now)
    if not deliveries + unplanned or any(worker.alive for worker in workers):
        return []
    silence = presence.STALE_AFTER_BEATS * heartbeat_s
    last = min(workers, key=lambda worker: worker.heartbeat_age_s, default=None)
    seen = (f"the last one, {last.name}, was heard from {duration(last.heartbeat_age_s)} ago" if last
            else "none has been seen")
    text = (f"{deliveries} deliveries and {unplanned} events wait, and no delivery worker has sent a heartbeat in "
            f"the last {silence:.0f} s ({seen}). Nothing is delivered until one runs: start `connector worker`, or "
            "serve with worker.embedded: true.")
    return [Firing(Alert(NO_LIVE_WORKER, "workers", "No delivery worker is running while deliveries wait", text,
                         now, status_link(settings.alerts, "/status"),
                         {"waiting_deliveries": deliveries, "waiting_events": unplanned}))]


def _oldest_waiting(connection: Connection, settings: Settings, pauses: dict, waiting: dict,
                    now: datetime) -> list[Firing]:
    threshold_s = float(settings.alerts.conditions.oldest_waiting_minutes or 0) * 60
    per_destination: dict[str, list[tuple[datetime, str, int]]] = {}
    for (destination, state), (count, created_at) in waiting.items():
        if destination not in pauses:  # a paused destination's deliveries wait on purpose: its pause alert says so
            per_destination.setdefault(destination, []).append((created_at, state, count))
    firings = []
    for destination, found in sorted(per_destination.items()):
        moment, state, _ = min(found)  # the oldest, and the state it waits in (pending or retrying)
        count = sum(number for _, _, number in found)
        age = (now - moment).total_seconds()
        if age < threshold_s:
            continue
        text = (f"The oldest of the {count} deliveries waiting for {destination} was planned {duration(age)} ago "
                f"(the threshold is {duration(threshold_s)}). Look at {destination}'s last error on the status page "
                "and at the workers' logs: a CRM that keeps failing, a spent quota, or too few workers.")
        firings.append(Firing(Alert(
            OLDEST_WAITING, destination, f"Deliveries to {destination} have waited {duration(age)}", text, now,
            status_link(settings.alerts, "/status/events", state=state, destination=destination),
            {"destination": destination, "oldest_age_s": round(age), "waiting": count,
             "threshold_s": round(threshold_s)})))
    unplanned, first = connection.execute(select(func.count(), func.min(_events.c.received_at))
                                          .where(_events.c.state == EventState.RECEIVED)).one()
    if first is not None and (now - first).total_seconds() >= threshold_s:
        age = (now - first).total_seconds()
        text = (f"The oldest of {unplanned} events not yet planned into deliveries arrived {duration(age)} ago (the "
                f"threshold is {duration(threshold_s)}): no worker is planning them. Check that a delivery worker runs.")
        firings.append(Firing(Alert(
            OLDEST_WAITING, "events", f"Events have waited {duration(age)} to be planned", text, now,
            status_link(settings.alerts, "/status/events", state=EventState.RECEIVED),
            {"oldest_age_s": round(age), "waiting": int(unplanned), "threshold_s": round(threshold_s)})))
    return firings


def _webhooks_503(connection: Connection, settings: Settings, now: datetime) -> list[Firing]:
    count, first, last = outbox.read_counter(connection, WEBHOOKS_503_COUNTER)
    if not count or first is None:
        return []
    # Each process adds its count at its next tick: wait two ticks after the last 503 added, so one
    # message reports a burst from every process; during a lasting outage, report after five of those.
    settle_s = 2 * settings.alerts.evaluate_every_s
    last = last or first
    if (now - last).total_seconds() < settle_s and (now - first).total_seconds() < 5 * settle_s:
        return []
    span = f"between {first:%Y-%m-%d %H:%M:%S} and {last:%H:%M:%S} UTC"
    text = (f"The receiver answered {count} webhook(s) with 503 {span}: they were not stored, and Svix sends "
            "each again later (for about a day). Causes: the ledger was unavailable or locked for longer than "
            "receiver.answer_within_s, or no signing secret is configured (OKENDO_WEBHOOK_SECRETS). The server's "
            "log has a line for each 503, with its message id and reason.")
    return [Firing(Alert(WEBHOOKS_503, "receiver", f"{count} webhooks answered 503", text, now,
                         status_link(settings.alerts, "/status"),
                         {"count": count, "first_at": first.isoformat(), "last_at": last.isoformat()}),
                   consumes=(WEBHOOKS_503_COUNTER, count))]
