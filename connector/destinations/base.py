"""The small interface every destination implements: a batch of operations in,
one result per operation out.

Destinations never touch the ledger: they read links through a `LinkStore`
(which CRM record an Okendo resource became) and report the CRM ids they
wrote; the worker records them.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from connector import metrics
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.forensics import whole_call
from connector.destinations.ratelimit import Limiter
from connector.destinations.wire import Wire
from connector.mapping.engine import MappingSet
from connector.mapping.operations import AssociationRef, Operation, RecordKey, SourceRef

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass(frozen=True)
class Work:
    """One delivery's operation, as the worker hands it over."""

    delivery_id: int
    operation: Operation
    previous_attempts: int = 0  # > 0: an earlier attempt may have reached the CRM
    # When an earlier attempt's writes, if it made any, were surely done (its answer, or its lease's end):
    # what an eventually consistent search can see only some seconds later.
    settled_after: datetime | None = None


@dataclass
class Result:
    status: str  # ok | skipped | failed
    record_id: str | None = None  # the CRM record written or deleted
    created: bool | None = None
    error: DeliveryError | None = None
    reason: str | None = None  # why it was skipped; for a write, what it could not do (an association left out)
    requests: list[dict[str, Any]] = field(default_factory=list)  # what was sent (dry-run: what would be)
    # Identities learnt on the way: (crm object, Okendo id, CRM record), e.g. the contact a loyalty
    # member turned out to be, found by email while associating a transaction to it.
    learnt: list[tuple[str, SourceRef, str]] = field(default_factory=list)
    # Remembered CRM ids the CRM no longer has (crm object, record id): the worker drops every link to
    # them, whatever this result's status (connector.destinations.remembered).
    forgotten: list[tuple[str, str]] = field(default_factory=list)
    # Keys the CRM refused as values (crm object, key, its code), met while finding association targets:
    # the worker remembers them so no later association looks for or creates a record by them.
    refused: list[tuple[str, RecordKey, str]] = field(default_factory=list)

    @classmethod
    def failed(cls, error: DeliveryError, requests: list[dict[str, Any]] | None = None) -> Result:
        """A failure, with what was sent for it and answered (`requests`); without them, what can be kept
        of the call the error came from without another delivery's data (forensics.whole_call)."""
        return cls(FAILED, error=error, requests=requests if requests is not None else whole_call(error.exchange))

    @classmethod
    def skipped(cls, reason: str) -> Result:
        return cls(SKIPPED, reason=reason)


class LinkStore(Protocol):
    def lookup(self, destination: str, crm_object: str, sources: Iterable[SourceRef]) -> dict[SourceRef, str]:
        """CRM ids already recorded for these Okendo resources (missing ones are absent)."""


class NoLinks:
    """A link store that knows nothing (previews, tests of a single call)."""

    def lookup(self, destination: str, crm_object: str, sources: Iterable[SourceRef]) -> dict[SourceRef, str]:
        return {}


class Destination(abc.ABC):
    name: str
    kind: str
    dry_run = False

    @abc.abstractmethod
    def deliver(self, works: Sequence[Work], links: LinkStore) -> list[Result]:
        """Perform the operations, batched; exactly one result per work item, in order."""

    @abc.abstractmethod
    def check_remote(self, mappings: MappingSet) -> list[str]:
        """Problems found in the CRM for what the mappings write (empty when all is there)."""

    def quota(self) -> dict[str, Any]:
        """What the CRM last said about its API quota (for the status page)."""
        return {}

    def refresh_quota(self) -> dict[str, Any]:
        """Ask the CRM for its quota now, where it has a call for that (a held daily budget waits on it)."""
        return self.quota()

    def close(self) -> None:
        """Release connections."""


T = TypeVar("T")

# A 429 without Retry-After (HubSpot's answers name the window instead, see hubspot_answers.py): pause this long.
RATE_LIMITED_PAUSE_S = 1.0


def call_with_retries(
    call: Callable[[], T],
    classify: Callable[[BaseException], DeliveryError],
    limiter: Limiter,
    *,
    attempts: int,
    max_wait: float,
    idempotent: bool = True,
    destination: str | None = None,
    call_name: str = "other",
    wire: Wire | None = None,
) -> T:
    """One CRM call inside the rate limiter, retried briefly on transient errors.

    Waits honour Retry-After (and HubSpot's ten-second window) by pausing the
    whole destination. A non-idempotent call (a create) is not retried after a
    timeout or dropped connection: the CRM may have done it; the worker
    decides later, after checking. Longer waits go back to the worker's
    durable schedule instead of blocking a thread.

    Every attempt is counted in the CRM call metrics under `destination`, by
    the HTTP status it got (2xx on success; the classified error's status, or
    no response, on failure), and timed under `call_name`. A failure carries the last HTTP exchange
    `wire` saw on this thread (what was sent and answered), for the attempt to keep.
    """

    def pause_on_rate_limit(error: DeliveryError) -> None:
        # Every 429 pauses the whole account, in every process (connector.destinations.ratelimit), also
        # one whose Retry-After is too long to wait for here: the other threads would be refused as well.
        if error.status == 429:
            limiter.pause(error.retry_after or RATE_LIMITED_PAUSE_S)

    def attempt() -> T:
        with limiter.request():
            started = time.monotonic()
            try:
                result = call()
            except DeliveryError as error:
                metrics.crm_call(destination, error.status, call_name, time.monotonic() - started)
                pause_on_rate_limit(error)
                raise
            except Exception as error:
                failure = classify(error)
                metrics.crm_call(destination, failure.status, call_name, time.monotonic() - started)
                pause_on_rate_limit(failure)
                raise failure from error
            metrics.crm_call(destination, 200, call_name, time.monotonic() - started)
            return result

    def should_retry(error: BaseException) -> bool:
        if not isinstance(error, DeliveryError) or error.error_class != ErrorClass.RETRY_SOON:
            return False
        if not idempotent and error.status is None:
            return False  # no response: the create may have happened
        return (error.retry_after or 0.0) <= max_wait

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        delay = getattr(error, "retry_after", None) or min(0.5 * 2 ** (state.attempt_number - 1), max_wait)
        if getattr(error, "status", None) == 429:
            return 0.0  # paused already: the limiter holds every thread back; this one waits there
        return delay

    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait, retry=retry_if_exception(should_retry),
                        reraise=True)
    if wire is not None:
        wire.clear()
    try:
        return retrying(attempt)
    except DeliveryError as error:
        if wire is not None and error.exchange is None:
            error.exchange = wire.last
        raise


def share_of(request: dict[str, Any], list_key: str, records: list[Any]) -> dict[str, Any]:
    """One delivery's share of a batch request: its own records, and how big the batch was.

    Each delivery's attempt keeps what was sent for it; storing the whole body on
    every delivery of a batch of n would store that batch n times.
    """
    body = request["body"]
    return {**request, "body": {**body, list_key: records}, "batch_size": len(body[list_key])}


def unknown_record(crm_object: str, operation: Operation) -> str:
    """Why an update or delete found nothing to act on."""
    if operation.key is not None:
        return f"no {crm_object} with {operation.key.field} {operation.key.value}"
    if operation.source is not None:
        return (f"no {crm_object} record is known for {operation.source.type} {operation.source.id} "
                "(the connector never wrote one)")
    return f"no {crm_object} record is known for this event"


def describe_target(ref: AssociationRef) -> str:
    parts = [f"{ref.to} linked to {source.type} {source.id}" for source in ref.sources]
    if ref.key is not None:
        parts.append(f"{ref.to} with {ref.key.field} {ref.key.value}")
    return " or ".join(parts)


def target_missing(ref: AssociationRef) -> DeliveryError:
    return DeliveryError(ErrorClass.RETRY_SOON, f"association target not found yet: {describe_target(ref)} "
                         "(it may not be written yet; retrying)", None, "ASSOCIATION_TARGET_MISSING")


def target_of(operation: Operation) -> tuple[str, ...] | None:
    """The CRM record an operation writes, as far as the operation alone tells."""
    if operation.key is not None:
        return (operation.object, "key", operation.key.field, str(operation.key.value).lower())
    if operation.source is not None and operation.action != "create":
        return (operation.object, "source", operation.source.type, operation.source.id)
    return None


def rounds(works: Sequence[Work]) -> list[list[int]]:
    """Split a batch so that no round writes one record twice.

    Two events for one record (a review and a loyalty sign-up of one shopper)
    go to successive rounds instead of being merged: each keeps its own
    result, and one's invalid field cannot fail the other.
    """
    seen: dict[tuple[str, ...], int] = {}
    split: list[list[int]] = []
    for index, work in enumerate(works):
        target = target_of(work.operation)
        number = 0 if target is None else seen.get(target, -1) + 1
        if target is not None:
            seen[target] = number
        while len(split) <= number:
            split.append([])
        split[number].append(index)
    return split


def in_rounds(works: Sequence[Work], deliver_round: Callable[[Sequence[Work]], list[Result]]) -> list[Result]:
    """Deliver a batch round by round (see `rounds`): one result per work item, in order."""
    results = [Result.failed(DeliveryError(ErrorClass.RETRY_SOON, "not attempted"))] * len(works)
    for round_indexes in rounds(works):
        for index, result in zip(round_indexes, deliver_round([works[i] for i in round_indexes])):
            results[index] = result
    return results
