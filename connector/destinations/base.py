"""The small interface every destination implements: a batch of operations in,
one result per operation out.

Destinations never touch the ledger: they read links through a `LinkStore`
(which CRM record an Okendo resource became) and report the CRM ids they
wrote; the worker records them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from connector import metrics
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.ratelimit import RateLimiter
from connector.mapping.engine import MappingSet
from connector.mapping.operations import AssociationRef, Operation, SourceRef

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

    @classmethod
    def failed(cls, error: DeliveryError) -> Result:
        return cls(FAILED, error=error)

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

    def close(self) -> None:
        """Release connections."""


T = TypeVar("T")


def call_with_retries(
    call: Callable[[], T],
    classify: Callable[[BaseException], DeliveryError],
    limiter: RateLimiter,
    *,
    attempts: int,
    max_wait: float,
    idempotent: bool = True,
    destination: str | None = None,
) -> T:
    """One CRM call inside the rate limiter, retried briefly on transient errors.

    Waits honour Retry-After (and HubSpot's ten-second window) by pausing the
    whole destination. A non-idempotent call (a create) is not retried after a
    timeout or dropped connection: the CRM may have done it; the worker
    decides later, after checking. Longer waits go back to the worker's
    durable schedule instead of blocking a thread.

    Every attempt is counted in the CRM call metrics under `destination`, by
    the HTTP status it got (2xx on success; the classified error's status, or
    no response, on failure).
    """

    def attempt() -> T:
        with limiter.request():
            try:
                result = call()
            except DeliveryError as error:
                metrics.crm_call(destination, error.status)
                raise
            except Exception as error:
                failure = classify(error)
                metrics.crm_call(destination, failure.status)
                raise failure from error
            metrics.crm_call(destination, 200)
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
            limiter.pause(delay)
            return 0.0  # the limiter holds every thread back; this one waits there
        return delay

    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait, retry=retry_if_exception(should_retry),
                        reraise=True)
    return retrying(attempt)


# A whole-batch answer with one of these statuses may be one input's fault (HubSpot fails a whole batch
# for one invalid input: https://developers.hubspot.com/docs/api-reference/error-handling; Salesforce
# refuses a whole collection it cannot deserialise). Auth, quota and server errors concern every input.
_REJECTION_STATUSES = frozenset({400, 409, 422})

R = TypeVar("R")


def is_rejection(error: DeliveryError) -> bool:
    """Whether a whole-batch failure may have been caused by some of its inputs."""
    return error.error_class == ErrorClass.PERMANENT and error.status in _REJECTION_STATUSES


def isolating(inputs: Sequence[T], send: Callable[[Sequence[T]], list[R]],
              named: Callable[[DeliveryError, Sequence[T]], set[int]] | None = None) -> list[R | DeliveryError]:
    """Send a batch; when the CRM rejects all of it for some inputs' sake, find those and send the rest.

    `send` returns one outcome per input, in order. A rejection (see `is_rejection`) that names its
    input (`named` gives its position) costs one more call without it; one that names none is
    bisected: each half is sent on its own, and only a half that fails again is split further, so one
    bad input among n costs about 2·log2(n) calls and ends with its own error. When both halves fail
    with the same message, that message concerns every input (a missing property, say): it is kept
    for all without splitting further. Every input gets either its outcome or the error of a batch it
    alone made fail, never an error (or the data in it) that another input caused.
    """
    try:
        return list(send(inputs))
    except DeliveryError as error:
        if len(inputs) < 2 or not is_rejection(error):
            raise
        return _isolate(inputs, send, named, error)


def _isolate(inputs: Sequence[T], send: Callable[[Sequence[T]], list[R]],
             named: Callable[[DeliveryError, Sequence[T]], set[int]] | None,
             error: DeliveryError) -> list[R | DeliveryError]:
    if len(inputs) == 1:
        return [error]
    culprits = named(error, inputs) if named is not None else set()
    if len(culprits) == 1:  # several named ones share a message that may hold each one's data: split instead
        rest = [item for position, item in enumerate(inputs) if position not in culprits]
        outcomes = iter(_send_part(rest, send, named))
        return [error if position in culprits else next(outcomes) for position in range(len(inputs))]
    middle = len(inputs) // 2
    halves = [inputs[:middle], inputs[middle:]]
    answers: list[list[R | DeliveryError] | DeliveryError] = []
    for half in halves:
        try:
            answers.append(list(send(half)))
        except DeliveryError as failure:
            answers.append(failure)
    if all(isinstance(a, DeliveryError) and is_rejection(a) for a in answers) \
            and str(answers[0]) == str(answers[1]):
        return [answers[0]] * len(inputs)  # type: ignore[list-item]
    outcomes: list[R | DeliveryError] = []
    for half, answer in zip(halves, answers):
        if isinstance(answer, DeliveryError):
            outcomes += _isolate(half, send, named, answer) if is_rejection(answer) else [answer] * len(half)
        else:
            outcomes += answer
    return outcomes


def _send_part(inputs: Sequence[T], send: Callable[[Sequence[T]], list[R]],
               named: Callable[[DeliveryError, Sequence[T]], set[int]] | None) -> list[R | DeliveryError]:
    """Send what is left of a batch; it may still hold another bad input."""
    if not inputs:
        return []
    try:
        return list(send(inputs))
    except DeliveryError as error:
        if not is_rejection(error):
            return [error] * len(inputs)
        return _isolate(inputs, send, named, error)


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


@dataclass
class Resolution:
    """Where each association of a batch points: the CRM ids found, what was learnt on the way, and
    which associations were left out (and why)."""

    targets: dict[tuple[int, int], str] = field(default_factory=dict)  # (work index, association) -> CRM id
    learnt: dict[int, list[tuple[str, SourceRef, str]]] = field(default_factory=dict)
    unlinked: dict[int, list[str]] = field(default_factory=dict)

    def annotate(self, results: Sequence[Result | None]) -> None:
        """Give each written record the identities learnt for it and the associations it went without."""
        for index in set(self.learnt) | set(self.unlinked):
            result = results[index]
            if result is None or result.status != OK:
                continue
            result.learnt.extend(self.learnt.get(index, []))
            if index in self.unlinked:
                result.reason = "; ".join(self.unlinked[index])


def resolve_associations(
    destination: str,
    items: Sequence[tuple[int, Work]],
    links: LinkStore,
    results: list[Result | None],
    *,
    read_by_key: Callable[[str, str, list[str]], dict[str, str]],
    create_by_key: Callable[[str, str, dict[str, dict[str, Any]]], dict[str, str | DeliveryError]],
) -> Resolution:
    """Find each association's target, in the documented order:

    1. every Okendo id it may stand for, in the link table (`source`, then `identities`): what
       the connector wrote or learnt before, from any topic;
    2. its `key` in the CRM (a contact by email);
    3. still missing: `if_missing: create` writes it from the key, `unlinked` writes the record
       without the association, `wait` (the default) fails the record for a retry, because the
       target is about to be written (a contact written by an earlier mapping of the same event).

    Whatever finds a target, its other ids are learnt for it, so the next record naming only one of
    them (a transaction whose email has another case or a +tag) finds it through the link table.
    """
    resolution = Resolution()
    wanted: dict[str, set[SourceRef]] = {}
    for _, work in items:
        for ref in work.operation.associations:
            wanted.setdefault(ref.to, set()).update(ref.sources)
    known = {to: links.lookup(destination, to, sources) if sources else {} for to, sources in wanted.items()}

    def by_identity(ref: AssociationRef) -> str | None:
        return next((known[ref.to][s] for s in ref.sources if s in known[ref.to]), None)

    by_key: dict[tuple[str, str], list[str]] = {}
    for _, work in items:
        for ref in work.operation.associations:
            if ref.key is not None and by_identity(ref) is None:
                by_key.setdefault((ref.to, ref.key.field), []).append(str(ref.key.value))
    key_ids = {pair: read_by_key(pair[0], pair[1], values) for pair, values in by_key.items()}

    def by_key_value(ref: AssociationRef) -> str | None:
        return key_ids.get((ref.to, ref.key.field), {}).get(str(ref.key.value)) if ref.key else None

    creations: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for _, work in items:
        for ref in work.operation.associations:
            if ref.if_missing == "create" and ref.key is not None and by_identity(ref) is None \
                    and by_key_value(ref) is None:
                creations.setdefault((ref.to, ref.key.field), {}).setdefault(str(ref.key.value), {}).update(
                    ref.create_properties)
    created = {pair: create_by_key(pair[0], pair[1], values) for pair, values in creations.items()}

    for index, work in items:
        for position, ref in enumerate(work.operation.associations):
            record_id = by_identity(ref) or by_key_value(ref)
            if record_id is None and (ref.to, ref.key.field if ref.key else "") in created:
                outcome = created[(ref.to, ref.key.field)].get(str(ref.key.value))  # type: ignore[union-attr]
                if isinstance(outcome, DeliveryError):
                    if outcome.retryable:
                        results[index] = Result.failed(outcome)
                        continue
                    resolution.unlinked.setdefault(index, []).append(
                        f"written without its {ref.to}: creating {describe_target(ref)} failed ({outcome})")
                    continue
                record_id = outcome
            if record_id is not None:
                resolution.targets[(index, position)] = record_id
                resolution.learnt.setdefault(index, []).extend(
                    (ref.to, source, record_id) for source in ref.sources if known[ref.to].get(source) != record_id)
            elif ref.if_missing == "wait":
                results[index] = Result.failed(target_missing(ref))
            else:
                resolution.unlinked.setdefault(index, []).append(
                    f"written without its {ref.to}: no {describe_target(ref)} is known")
    return resolution


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
