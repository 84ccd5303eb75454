"""Prometheus metrics: what they are, how the code records them, and one scrape's registry.

Counters and the latency histogram are recorded where things happen (receiver,
worker, CRM calls). Under gunicorn every worker process writes its values to
files in $PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets and empties it), and a
scrape, whichever worker answers it, adds them all up. Queue depths are not
counted at all: each scrape asks the ledger, so they are right whichever
process (gunicorn, `connector worker`, another host) changed the queue.

Label values are bounded: resource types and topics Okendo does not document
are `other` (`none` when absent), rejection reasons are the receiver's codes,
destinations are the configured names.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from connector import okendo
from connector.alerts import refusals
from connector.ledger.models import Delivery, DeliveryState, Event, EventState, utcnow
from connector.worker import pausing, presence

log = logging.getLogger(__name__)

PREFIX = "okendo_connector_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# This module's metrics, for single-process use (tests, `flask run`); in
# multiprocess mode a scrape reads the files instead. Every metric here has labels,
# so importing this module writes nothing: a CLI command run with PROMETHEUS_MULTIPROC_DIR
# set before gunicorn created the folder must not fail.
REGISTRY = CollectorRegistry()

EVENTS_RECEIVED = Counter(
    PREFIX + "events_received", "Webhooks stored as new events, by resourceType, topic and the state they were stored in.",
    ["resource_type", "topic", "state"], registry=REGISTRY)
_redeliveries: Counter | None = None
_redeliveries_lock = threading.Lock()


def _redeliveries_counter() -> Counter:
    # Unlabelled, so created on first use, not at import (see above).
    global _redeliveries
    with _redeliveries_lock:
        if _redeliveries is None:
            _redeliveries = Counter(
                PREFIX + "webhook_redeliveries",
                "Webhooks whose message id was already stored (answered 200, nothing changed).", registry=REGISTRY)
        return _redeliveries


WEBHOOKS_REJECTED = Counter(
    PREFIX + "webhooks_rejected", "Webhooks refused without being stored, by reason.", ["reason"], registry=REGISTRY)
DELIVERY_ATTEMPTS = Counter(
    PREFIX + "delivery_attempts", "Delivery attempts finished, by destination and outcome (delivered, skipped, stale, "
    "retry, dead).", ["destination", "outcome"], registry=REGISTRY)
CRM_REQUEST_SECONDS = Histogram(
    PREFIX + "crm_request_duration_seconds", "How long each CRM request took (each retry on its own), by destination "
    "and call (objects.batch.upsert, composite/sobjects PATCH, query, ...).", ["destination", "call"],
    registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
WEBHOOK_SECONDS = Histogram(
    PREFIX + "webhook_request_duration_seconds", "How long the webhook endpoint took to answer, by HTTP status class "
    "(Svix gives up after 15 s).", ["status_class"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15))
BUILD_INFO = Gauge(
    PREFIX + "build_info", "Always 1: the connector's version and Python's, as labels.", ["version", "python"],
    registry=REGISTRY, multiprocess_mode="max")
DELIVERY_LATENCY = Histogram(
    PREFIX + "delivery_latency_seconds", "Seconds from an event's arrival to its delivery to a destination.",
    ["destination"], registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))
CRM_CALLS = Counter(
    PREFIX + "crm_calls", "CRM API calls (each retry counts), by destination and HTTP status class "
    "(2xx, 4xx, 5xx, ...; no_response for timeouts and dropped connections).",
    ["destination", "status_class"], registry=REGISTRY)
STATUS_SIGN_IN_FAILURES = Counter(
    PREFIX + "status_sign_in_failures", "Wrong passwords given to the status page or its API, by kind (login, basic).",
    ["kind"], registry=REGISTRY)
STATUS_SIGN_IN_THROTTLED = Counter(
    PREFIX + "status_sign_in_throttled", "Sign-in attempts refused with 429 after too many wrong passwords, by kind.",
    ["kind"], registry=REGISTRY)
CRM_RATE_LIMITED = Counter(
    PREFIX + "crm_rate_limited", "HTTP 429 answers received from a CRM, by destination.", ["destination"],
    registry=REGISTRY)

# The receiver's reason codes (receiver/signature.py and receiver/views.py).
REJECTION_REASONS = (
    "missing_headers", "no_matching_signature", "malformed_signature_header", "malformed_timestamp",
    "timestamp_too_old", "timestamp_too_new", "body_not_utf8", "verification_failed",
    "too_large", "no_secret_configured", "ledger_unavailable", "ledger_busy", "missing_message_id", "message_id_too_long",
)
OUTCOMES = ("delivered", "skipped", "stale", "retry", "dead")


def multiprocess_mode() -> bool:
    """Whether this process writes its values to $PROMETHEUS_MULTIPROC_DIR (decided when prometheus_client loaded)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


# --- recording ---------------------------------------------------------------------------------


def resource_type_label(value: str | None) -> str:
    if not value:
        return "none"
    return value if value in okendo.RESOURCE_ID_FIELDS else "other"


def topic_label(value: str | None) -> str:
    if not value:
        return "none"
    return value if value in okendo.TOPICS else "other"


def _safe(record) -> None:  # type: ignore[no-untyped-def]
    # Metrics must never break the request or the delivery they describe.
    try:
        record()
    except Exception as error:  # a missing or full $PROMETHEUS_MULTIPROC_DIR, say
        log.warning("could not record a metric: %s: %s", error.__class__.__name__, error)


def event_received(resource_type: str | None, topic: str | None, state: str) -> None:
    _safe(lambda: EVENTS_RECEIVED.labels(resource_type_label(resource_type), topic_label(topic), state).inc())


def webhook_redelivered() -> None:
    _safe(lambda: _redeliveries_counter().inc())


def webhook_rejected(reason: str | None) -> None:
    label = reason if reason in REJECTION_REASONS else "verification_failed"
    _safe(lambda: WEBHOOKS_REJECTED.labels(label).inc())


def status_sign_in_failed(kind: str) -> None:
    _safe(lambda: STATUS_SIGN_IN_FAILURES.labels(kind).inc())


def status_sign_in_throttled(kind: str) -> None:
    _safe(lambda: STATUS_SIGN_IN_THROTTLED.labels(kind).inc())


def delivery_finished(destination: str, outcome: str, received_at: datetime | None = None,
                      now: datetime | None = None) -> None:
    """One delivery attempt's outcome; the latency is observed for `delivered` only."""

    def record() -> None:
        DELIVERY_ATTEMPTS.labels(destination, outcome).inc()
        if outcome == "delivered" and received_at is not None:
            DELIVERY_LATENCY.labels(destination).observe(max(((now or utcnow()) - received_at).total_seconds(), 0.0))

    _safe(record)


def status_class(status: int | None) -> str:
    if status is None:
        return "no_response"
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


def crm_call(destination: str | None, status: int | None, call: str = "other", seconds: float | None = None) -> None:
    """One CRM request, the HTTP status it got (None: no answer) and how long it took."""
    name = destination or "unknown"

    def record() -> None:
        CRM_CALLS.labels(name, status_class(status)).inc()
        if status == 429:
            CRM_RATE_LIMITED.labels(name).inc()
        if seconds is not None:
            CRM_REQUEST_SECONDS.labels(name, call).observe(seconds)

    _safe(record)


def webhook_answered(status: int, seconds: float) -> None:
    _safe(lambda: WEBHOOK_SECONDS.labels(status_class(status)).observe(seconds))
    # The 503s are also counted for the alert of that name: the ledger cannot record them when they happen.
    refusals.count(status)


def build_info() -> None:
    """Set once per process: which connector (and Python) answers this scrape."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("okendo-crm-connector")
    except PackageNotFoundError:
        release = "unknown"
    _safe(lambda: BUILD_INFO.labels(release, platform.python_version()).set(1))


def prime(destinations: Iterable[str]) -> None:
    """Create the series that are known up front at zero, so rates and alerts see them before the first event."""
    names = list(destinations)

    def record() -> None:
        _redeliveries_counter()
        for reason in REJECTION_REASONS:
            WEBHOOKS_REJECTED.labels(reason)
        for kind in ("login", "basic"):
            STATUS_SIGN_IN_FAILURES.labels(kind)
            STATUS_SIGN_IN_THROTTLED.labels(kind)
        for destination in names:
            CRM_RATE_LIMITED.labels(destination)
            for outcome in OUTCOMES:
                DELIVERY_ATTEMPTS.labels(destination, outcome)

    _safe(record)


# --- one scrape -------------------------------------------------------------------------------

_deliveries = Delivery.__table__
_events = Event.__table__


class LedgerCollector:
    """Queue depths asked of the ledger at scrape time (any process's work shows)."""

    def __init__(self, engine: Engine, destinations: Iterable[str] = (), heartbeat_s: float = 10.0,
                 settings=None):  # type: ignore[no-untyped-def]
        self.engine = engine
        self.destinations = list(destinations)
        self.heartbeat_s = heartbeat_s
        self.settings = settings  # for the daily API budgets (their reserves and resets)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "ledger_up", "1 when the ledger answered this scrape's queue queries, else 0.")
        try:
            with self.engine.connect() as connection:
                by_state = connection.execute(
                    select(_deliveries.c.destination, _deliveries.c.state, func.count())
                    .where(_deliveries.c.state.in_((*DeliveryState.DUE, DeliveryState.DEAD)))
                    .group_by(_deliveries.c.destination, _deliveries.c.state)).all()
                oldest_delivery = connection.execute(
                    select(func.min(_deliveries.c.created_at)).where(_deliveries.c.state.in_(DeliveryState.DUE))
                ).scalar_one()
                unplanned, oldest_event = connection.execute(
                    select(func.count(), func.min(_events.c.received_at)).where(_events.c.state == EventState.RECEIVED)
                ).one()
                workers = presence.seen(connection, self.heartbeat_s)
                pauses = pausing.paused(connection)
                budgets = _budgets(connection, self.settings)
                sync_rows = _okendo_syncs(connection)
        except SQLAlchemyError as error:
            log.warning("metrics: ledger unavailable for the queue gauges (%s)", error.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        counts: dict[tuple[str, str], int] = {}
        for destination in self.destinations:
            for state in (*DeliveryState.DUE, DeliveryState.DEAD):
                counts[(destination, state)] = 0
        for destination, state, count in by_state:
            counts[(destination, state)] = int(count)

        queue = GaugeMetricFamily(PREFIX + "queue_deliveries",
                                  "Deliveries waiting to be attempted (pending) or re-attempted (retrying), per destination.",
                                  labels=["destination", "state"])
        dead = GaugeMetricFamily(PREFIX + "dead_deliveries",
                                 "Deliveries that gave up (dead) and wait for a replay, per destination.",
                                 labels=["destination"])
        for (destination, state), count in sorted(counts.items()):
            if state == DeliveryState.DEAD:
                dead.add_metric([destination], count)
            else:
                queue.add_metric([destination, state], count)
        yield queue
        yield dead
        yield GaugeMetricFamily(PREFIX + "queue_unplanned_events",
                                "Events received but not yet planned into deliveries by a worker.", value=int(unplanned))

        oldest = GaugeMetricFamily(PREFIX + "queue_oldest_seconds",
                                   "Age of the oldest work waiting: pending/retrying deliveries (since planned) "
                                   "and unplanned events (since received); 0 when none.", labels=["queue"])
        now = utcnow()
        for queue_name, moment in (("deliveries", oldest_delivery), ("events", oldest_event)):
            oldest.add_metric([queue_name], max((now - moment).total_seconds(), 0.0) if moment else 0.0)
        yield oldest

        alive = [worker for worker in workers if worker.alive]
        yield GaugeMetricFamily(PREFIX + "workers_alive", "Delivery workers (embedded or standalone, any host) whose "
                                "heartbeat is fresh.", value=len(alive))
        claims_ages = [worker.last_claim_age_s for worker in alive if worker.last_claim_age_s is not None]
        # No live worker, or none has claimed yet: the time since the oldest live one started, else 0.
        since = min(claims_ages) if claims_ages else 0.0
        yield GaugeMetricFamily(PREFIX + "seconds_since_last_claim", "Seconds since a live worker last claimed "
                                "deliveries (0 when none has yet).", value=since)

        paused = GaugeMetricFamily(PREFIX + "destination_paused", "1 while a destination is paused (its deliveries "
                                   "wait and spend no attempts), else 0.", labels=["destination"])
        for destination in sorted(set(self.destinations) | set(pauses)):
            paused.add_metric([destination], 1 if destination in pauses else 0)
        yield paused

        used = GaugeMetricFamily(PREFIX + "crm_daily_budget_used", "Daily API calls used, as the CRM last "
                                 "reported (every integration of the account counts).", labels=["destination"])
        cap = GaugeMetricFamily(PREFIX + "crm_daily_budget_limit", "The CRM account's daily API allocation.",
                                labels=["destination"])
        held = GaugeMetricFamily(PREFIX + "crm_daily_budget_held", "1 while deliveries wait because only the "
                                 "reserve of the daily allocation is left, else 0.", labels=["destination"])
        for destination, budget in sorted(budgets.items()):
            used.add_metric([destination], budget.used)
            cap.add_metric([destination], budget.limit)
            held.add_metric([destination], 1 if budget.held else 0)
        yield used
        yield cap
        yield held
        yield from _okendo_sync_metrics(sync_rows, now)


SYNC_KINDS = ("read", "stored", "missing", "different", "problems")


def _okendo_syncs(connection):  # type: ignore[no-untyped-def]
    from connector.status.okendo_syncs import read_rows  # one SELECT of a handful of rows

    return read_rows(connection)


def _okendo_sync_metrics(rows, now: datetime) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
    """Each backfill and the reconciliation of Okendo's API (the okendo_syncs table), by run name."""
    from connector.status.okendo_syncs import lease_alive

    resources = GaugeMetricFamily(PREFIX + "okendo_sync_run_resources", "Resources of the latest run of a backfill "
                                  "or of the reconciliation of Okendo's API, by kind: read, stored (as events), "
                                  "missing (of the stored: never seen), different (of the stored: changed), problems "
                                  "(unusable items); back to 0 when a run starts afresh.", labels=["sync", "kind"])
    # Counters from totals the ledger never resets, so increase() over any range counts every pass
    # (what the gauge above cannot: each pass starts it at 0 again).
    totals = CounterMetricFamily(PREFIX + "okendo_sync_resources", "Resources of every run of a backfill or of the "
                                 "reconciliation of Okendo's API, by kind (as okendo_sync_run_resources), since the "
                                 "ledger began counting them.", labels=["sync", "kind"])
    pages = CounterMetricFamily(PREFIX + "okendo_sync_pages", "Pages (requests of Okendo's list, or chunks of "
                                "shoppers) of every run of a backfill or of the reconciliation.", labels=["sync"])
    finished = GaugeMetricFamily(PREFIX + "okendo_sync_last_finished_timestamp_seconds", "When the run last "
                                 "finished (Unix time); absent until one has, and while a new run is going.",
                                 labels=["sync"])
    running = GaugeMetricFamily(PREFIX + "okendo_sync_running", "1 while a live process holds the run's lease, "
                                "else 0 (a run whose process died is 0).", labels=["sync"])
    for row in rows:
        for kind in SYNC_KINDS:
            resources.add_metric([row.name, kind], getattr(row, kind))
            totals.add_metric([row.name, kind], getattr(row, f"{kind}_total"))
        pages.add_metric([row.name], row.pages_total)
        if row.finished_at is not None:
            moment = row.finished_at if row.finished_at.tzinfo else row.finished_at.replace(tzinfo=now.tzinfo)
            finished.add_metric([row.name], moment.timestamp())
        running.add_metric([row.name], 1 if lease_alive(row, now) else 0)
    yield resources
    yield totals
    yield pages
    yield finished
    yield running


class _Forward:
    """Another registry's metrics, as a collector."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        # Drop the `_created` series: the multiprocess files have none, so both modes look alike.
        for metric in self.registry.collect():
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric


def _budgets(connection, settings):  # type: ignore[no-untyped-def]
    if settings is None:
        return {}
    from connector.worker.budget import budgets  # the request path never needs it

    return budgets(connection, settings)


def scrape_registry(engine: Engine | None, destinations: Iterable[str] = (),
                    heartbeat_s: float = 10.0, settings=None) -> CollectorRegistry:  # type: ignore[no-untyped-def]
    """A registry for one scrape: every process's counters and histograms, and the ledger's queue gauges."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        MultiProcessCollector(registry, path=os.environ.get(MULTIPROC_ENV))
    else:
        registry.register(_Forward(REGISTRY))
    if engine is not None:
        registry.register(LedgerCollector(engine, destinations, heartbeat_s, settings))
    return registry
