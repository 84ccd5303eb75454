"""Deliver one claimed batch: map again, check the order, call each CRM once per group,
and record every outcome with its attempt.

Operations are re-derived from the stored event with the mappings in force,
so a replay after a mapping fix uses the fix. The CRM's answers, the link
table and the ordering guard are written in one transaction per destination.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import OperationalError

from connector import metrics
from connector.config import WorkerConfig
from connector.destinations.base import FAILED as RESULT_FAILED, OK, SKIPPED, Destination, Result, Work
from connector.destinations.errors import AWAITING_SEARCH_INDEX, DeliveryError, ErrorClass
from connector.ledger.database import write_transaction
from connector.ledger.links import LedgerLinks
from connector.ledger.models import Delivery, DeliveryAttempt, DeliveryState, Event, utcnow
from connector.mapping.engine import MappingSet
from connector.mapping.operations import FAILED, READY, Operation, Outcome
from connector.worker import ordering, pausing
from connector.worker.auto_pause import reason_to_pause
from connector.worker.claims import Claimed
from connector.worker.schedule import next_attempt
from connector.worker.status_rows import destination_status_rows, write_destination_status

log = logging.getLogger(__name__)

_deliveries = Delivery.__table__
_attempts = DeliveryAttempt.__table__
_events = Event.__table__


@dataclass
class Finished:
    """What happened to one claimed delivery in this attempt."""

    claimed: Claimed
    state: str
    outcome: str  # delivered | skipped | stale | retry | dead | paused
    error: str | None = None
    error_class: str | None = None
    http_status: int | None = None
    record_id: str | None = None
    next_attempt_at: datetime | None = None
    duration_ms: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    operation: dict[str, Any] | None = None
    refund_attempt: bool = False  # held for a paused destination: this attempt does not count


@dataclass(frozen=True)
class EventFacts:
    document: Any
    topic: str | None
    received_at: datetime | None = None
    message_id: str | None = None


class BatchProcessor:
    def __init__(self, engine: Engine, mappings: MappingSet, destinations: Mapping[str, Destination],
                 config: WorkerConfig, owner: str, on_finished: Callable[[list[Finished]], None] | None = None):
        self.engine = engine
        self.mappings = mappings
        self.destinations = destinations
        self.config = config
        self.owner = owner
        self.links = LedgerLinks(engine)
        self.on_finished = on_finished
        self._as_planned: set[int] = set()  # deliveries whose operation is the one their row holds

    def process(self, claimed: list[Claimed], should_abandon: Callable[[], bool] = lambda: False) -> list[int]:
        """Deliver the batch; returns the ids left unprocessed because the worker is stopping."""
        planned = self._planned_operations(claimed)
        events = self._load_events({c.event_id for c in claimed},
                                   documents={c.event_id for c in claimed if c.id not in planned})
        resources = {(c.destination, c.resource_type, c.resource_id) for c in claimed
                     if c.resource_type and c.resource_id}
        with self.engine.connect() as connection:
            versions = ordering.load(connection, resources)  # type: ignore[arg-type]

        unanswered = self._unanswered_since(claimed)
        finished: list[Finished] = []
        works: dict[str, list[tuple[Claimed, Work, dict[str, Any]]]] = {}
        for item in claimed:
            facts = events.get(item.event_id)
            if item.id in planned:  # planned by this very mapping: its operation, as planned
                self._as_planned.add(item.id)
                outcome: Outcome | None = Outcome(item.mapping, item.destination, READY,
                                                  Operation.from_json(planned[item.id]))
            else:
                outcome = next((o for o in self.mappings.plan(facts.document if facts else None, only=item.mapping)
                                if o.destination == item.destination), None)
            if outcome is None:
                finished.append(Finished(item, DeliveryState.SKIPPED, "skipped",
                                         f"mapping {item.mapping} to {item.destination} is no longer enabled "
                                         "or no longer handles this event"))
                continue
            operation_json = planned.get(item.id) or outcome.to_json()["operation"]
            if outcome.status == FAILED:
                finished.append(Finished(item, DeliveryState.DEAD, "dead", outcome.reason, "mapping",
                                         operation=operation_json))
                continue
            if outcome.status != READY:
                finished.append(Finished(item, DeliveryState.SKIPPED, "skipped", outcome.reason,
                                         operation=operation_json))
                continue
            if item.superseded_by is not None:
                finished.append(Finished(item, DeliveryState.STALE, "stale",
                                         f"superseded by sequence {int(item.superseded_by)} of the same "
                                         f"{item.resource_type}, waiting for this mapping: only the newest state "
                                         "is sent", operation=operation_json))
                continue
            resource = (item.destination, item.resource_type, item.resource_id)
            stale = ordering.stale_reason(versions.get(resource), item.sequence_key,  # type: ignore[arg-type]
                                          facts.topic if facts else None)
            if stale:
                finished.append(Finished(item, DeliveryState.STALE, "stale", stale, operation=operation_json))
                continue
            works.setdefault(item.destination, []).append(
                (item, Work(item.id, outcome.operation, 1 if item.tried_before else 0,  # type: ignore[arg-type]
                            unanswered.get(item.id)), operation_json))

        # What ended without a CRM call is written with the first destination's results: one write
        # transaction per batch, not two.
        left_over: list[int] = []
        for destination_name, items in works.items():
            if should_abandon():
                left_over.extend(item.id for item, _, _ in items)
                continue
            self._deliver(destination_name, items, versions, events, before=finished)
            finished = []
        self._record(finished, versions, events)
        return left_over

    # --- one destination's share of the batch ---------------------------------------------

    def _deliver(self, destination_name: str, items: list[tuple[Claimed, Work, dict[str, Any]]],
                 versions: dict[ordering.Resource, ordering.Version], events: dict[int, EventFacts],
                 before: list[Finished] = ()) -> None:  # type: ignore[assignment]
        destination = self.destinations[destination_name]
        started = time.monotonic()
        try:
            results = destination.deliver([work for _, work, _ in items], self.links)
        except Exception as error:  # a bug in a destination must not kill the worker or lose the batch
            log.exception("destination %s failed on a batch of %d", destination_name, len(items),
                          extra={"destination": destination_name,
                                 "delivery_ids": [item.id for item, _, _ in items]})
            failure = DeliveryError(ErrorClass.RETRY_SOON, f"unexpected {type(error).__name__}: {error}")
            results = [Result.failed(failure) for _ in items]
        duration_ms = int((time.monotonic() - started) * 1000)
        now = utcnow()
        pause_reason = reason_to_pause(destination.kind, results)
        if pause_reason is not None and pausing.pause(self.engine, destination_name, pause_reason, pausing.AUTOMATIC):
            log.error("destination %s paused: %s", destination_name, pause_reason,
                      extra={"destination": destination_name, "paused_reason": pause_reason})
        finished = list(before)
        for (item, _work, operation_json), result in zip(items, results):
            if pause_reason is not None:
                finished.append(self._held(item, result, duration_ms, operation_json))
            else:
                finished.append(self._interpret(item, result, now, duration_ms, operation_json))
        self._record(finished, versions, events, works={item.id: work for item, work, _ in items},
                     results={item.id: result for (item, _, _), result in zip(items, results)})

    def _interpret(self, item: Claimed, result: Result, now: datetime, duration_ms: int,
                   operation_json: dict[str, Any]) -> Finished:
        common = {"duration_ms": duration_ms, "requests": result.requests, "operation": operation_json}
        if result.status == OK:  # a reason here says what the write went without (an association)
            return Finished(item, DeliveryState.DELIVERED, "delivered", result.reason, record_id=result.record_id,
                            **common)
        if result.status == SKIPPED:
            return Finished(item, DeliveryState.SKIPPED, "skipped", result.reason, **common)
        error = result.error or DeliveryError(ErrorClass.RETRY_SOON, "no result")
        attempts = item.previous_attempts + 1
        when = next_attempt(error, attempts, item.created_at, now, self.config)
        details = {"error": str(error), "error_class": error.error_class.value, "http_status": error.status}
        if when is None:
            return Finished(item, DeliveryState.DEAD, "dead", **details, **common)
        return Finished(item, DeliveryState.RETRYING, "retry", next_attempt_at=when, **details, **common)

    @staticmethod
    def _held(item: Claimed, result: Result, duration_ms: int, operation_json: dict[str, Any]) -> Finished:
        """A delivery whose failure is the destination's: it waits for the resume, attempt given back."""
        error = result.error or DeliveryError(ErrorClass.RETRY_SOON, "no result")
        return Finished(item, DeliveryState.PENDING, "paused", str(error), error.error_class.value, error.status,
                        duration_ms=duration_ms, requests=result.requests, operation=operation_json,
                        refund_attempt=True)

    # --- writing it down ----------------------------------------------------------------------

    def _record(self, finished: list[Finished], versions: dict[ordering.Resource, ordering.Version],
                events: dict[int, EventFacts], works: dict[int, Work] | None = None,
                results: dict[int, Result] | None = None) -> None:
        if not finished:
            return
        # What the CRM did must be written down: on a busy SQLite ledger, wait for the lock in turns.
        for attempt in range(60):
            try:
                self._write(finished, versions, events, works, results)
                break
            except OperationalError as error:
                if "locked" not in str(error) or attempt == 59:
                    raise
                time.sleep(0.05 * (attempt + 1))
        if self.on_finished is not None:
            self.on_finished(finished)

    def _write(self, finished: list[Finished], versions: dict[ordering.Resource, ordering.Version],
               events: dict[int, EventFacts], works: dict[int, Work] | None,
               results: dict[int, Result] | None) -> None:
        now = utcnow()
        with write_transaction(self.engine) as connection:
            rows = [{"delivery_id": f.claimed.id, "state": f.state, "refund": int(f.refund_attempt),
                     "last_error": f.error, "crm_record_id": f.record_id, "next_attempt_at": f.next_attempt_at,
                     "lease_owner": None, "lease_expires_at": None, "updated_at": now, "operation": f.operation}
                    for f in finished]
            statement = update(_deliveries).where(_deliveries.c.id == bindparam("delivery_id"),
                                                  _deliveries.c.lease_owner == self.owner) \
                .values(attempts=_deliveries.c.attempts - bindparam("refund"))
            # An operation delivered as planned is in its row already: not encoded and written again.
            for group in ([r for r in rows if r["delivery_id"] not in self._as_planned],
                          [{k: v for k, v in r.items() if k != "operation"} for r in rows
                           if r["delivery_id"] in self._as_planned]):
                if group:
                    connection.execute(statement, group)
            connection.execute(insert(_attempts), [
                {"delivery_id": f.claimed.id, "started_at": now, "duration_ms": f.duration_ms, "outcome": f.outcome,
                 "http_status": f.http_status, "error": f.error, "error_class": f.error_class, "worker": self.owner,
                 "requests": _json_safe(f.requests)} for f in finished])
            changed: dict[ordering.Resource, tuple[ordering.Version, int]] = {}
            link_changes = []
            for f in finished:
                item = f.claimed
                written = f.state in (DeliveryState.DELIVERED, DeliveryState.SKIPPED)
                if works is not None and results is not None and item.id in works:
                    result = results[item.id]
                    if not written:  # nothing was written for it: only what it learnt of the CRM's records
                        result = Result(RESULT_FAILED, error=result.error, forgotten=result.forgotten,
                                        refused=result.refused)
                    if result is not None:
                        link_changes.append((item.destination, works[item.id].operation, result))
                if not written:
                    continue
                if item.resource_type and item.resource_id and item.sequence_key:
                    resource = (item.destination, item.resource_type, item.resource_id)
                    topic = events[item.event_id].topic if item.event_id in events else None
                    version = ordering.advanced(versions.get(resource), item.sequence_key, topic == "delete")
                    versions[resource] = version
                    event_id = item.event_id if version.sequence_key == item.sequence_key else \
                        changed.get(resource, (version, item.event_id))[1]
                    changed[resource] = (version, event_id)
            self.links.apply_all(connection, link_changes)
            ordering.save(connection, changed)
            # What the status page shows of each CRM, in the same transaction (was one more per batch).
            write_destination_status(connection, destination_status_rows(self.destinations, finished, now))
        self._report(finished, events, now)

    def _report(self, finished: list[Finished], events: dict[int, EventFacts], now: datetime) -> None:
        """Metrics and one log line per recorded outcome (after the commit: only what the ledger holds)."""
        for f in finished:
            item = f.claimed
            facts = events.get(item.event_id)
            metrics.delivery_finished(item.destination, f.outcome, facts.received_at if facts else None, now)
            level = {"retry": logging.WARNING, "dead": logging.ERROR}.get(f.outcome, logging.INFO)
            if not log.isEnabledFor(level):
                continue
            log.log(level, "delivery %d (event %d, %s to %s): %s%s", item.id, item.event_id, item.mapping,
                    item.destination, f.outcome, f": {f.error}" if f.error else "",
                    extra={"delivery_id": item.id, "event_id": item.event_id,
                           "message_id": facts.message_id if facts else None, "destination": item.destination,
                           "mapping": item.mapping, "outcome": f.outcome, "http_status": f.http_status,
                           "crm_record_id": f.record_id, "duration_ms": f.duration_ms})

    def _unanswered_since(self, claimed: list[Claimed]) -> dict[int, datetime]:
        """For deliveries whose earlier try got no answer from the CRM (a timeout, a dropped connection,
        a worker that died), when that try was surely over: a create it sent may have been applied, and
        a search can show it only some seconds later. A try that got any HTTP answer applied nothing
        the connector did not hear about."""
        since = {item.id: item.abandoned_lease_until for item in claimed if item.abandoned_lease_until is not None}
        retried = [item.id for item in claimed if item.tried_before]
        if not retried:
            return since
        a = _attempts
        parked = f"{ErrorClass.RETRY_SOON.value} {AWAITING_SEARCH_INDEX}%"  # a wait for the index, not a try
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(a.c.delivery_id, func.max(a.c.started_at)).where(
                    a.c.delivery_id.in_(retried), a.c.http_status.is_(None), a.c.error_class == ErrorClass.RETRY_SOON.value,
                    a.c.outcome.in_(("retry", "dead")), a.c.error.not_like(parked))
                .group_by(a.c.delivery_id)).all()
        for delivery_id, started_at in rows:
            since[delivery_id] = max(started_at, since.get(delivery_id, started_at))
        return since

    def _planned_operations(self, claimed: list[Claimed]) -> dict[int, dict[str, Any]]:
        """The operations planned for these deliveries by the mapping now in force (same fingerprint):
        they go out as planned, and their events need not be mapped again (most of a drain's CPU)."""
        d = _deliveries
        with self.engine.connect() as connection:
            rows = connection.execute(select(d.c.id, d.c.mapping, d.c.operation)
                                      .where(d.c.id.in_([c.id for c in claimed]))).all()
        planned = {}
        for row in rows:
            operation = row.operation if isinstance(row.operation, dict) else None
            fingerprint = self.mappings.fingerprint(row.mapping)
            if operation and fingerprint is not None and operation.get("planned_with") == fingerprint:
                planned[row.id] = operation
        return planned

    def _load_events(self, ids: set[int], documents: set[int]) -> dict[int, EventFacts]:
        """What the batch needs of its events; the body (parsed) only for those in `documents`."""
        if not ids:
            return {}
        e = _events
        with self.engine.connect() as connection:
            rows = connection.execute(select(e.c.id, e.c.topic, e.c.received_at, e.c.message_id)
                                      .where(e.c.id.in_(ids))).all()
            bodies = dict(connection.execute(select(e.c.id, e.c.body).where(e.c.id.in_(documents))).all()) \
                if documents else {}
        facts = {}
        for row in rows:
            try:
                document = json.loads(bodies[row.id]) if row.id in bodies else None
            except ValueError:
                document = None
            facts[row.id] = EventFacts(document, row.topic, row.received_at, row.message_id)
        return facts


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))
