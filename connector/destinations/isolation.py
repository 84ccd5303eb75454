"""One bad record fails alone: a batch the CRM refused for some inputs' sake is sent again without them.

HubSpot fails a whole v3 batch for one invalid input and names none of them
(https://developers.hubspot.com/docs/methods/contacts/batch_create_or_update); Salesforce fails a
whole sObject collection it cannot deserialise. Each destination sends its batches through
`isolating`, so every input ends with its own outcome or its own error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from connector.destinations.errors import DeliveryError, ErrorClass

T = TypeVar("T")
R = TypeVar("R")


# A whole-batch answer with one of these statuses may be one input's fault (HubSpot fails a whole batch
# for one invalid input: https://developers.hubspot.com/docs/api-reference/error-handling; Salesforce
# refuses a whole collection it cannot deserialise). Auth, quota and server errors concern every input.
_REJECTION_STATUSES = frozenset({400, 409, 422})


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


def outcome_per_input(inputs: Sequence[T], send: Callable[[Sequence[T]], list[R]],
                      named: Callable[[DeliveryError, Sequence[T]], set[int]] | None = None
                      ) -> list[R | DeliveryError]:
    """`isolating`, with an error that concerns the whole batch (a 429, a 5xx) given to every input
    instead of raised: for callers that must record something for each input whatever happened."""
    return isolated(inputs, send, named)[0]


def isolated(inputs: Sequence[T], send: Callable[[Sequence[T]], list[R]],
             named: Callable[[DeliveryError, Sequence[T]], set[int]] | None = None
             ) -> tuple[list[R | DeliveryError], DeliveryError | None]:
    """`outcome_per_input`, and the whole-batch error too, if there was one: a caller records each
    input's share of that error (what its attempt sent and got back), then raises it as `isolating`
    would have, so nothing more is sent after it."""
    try:
        return isolating(inputs, send, named), None
    except DeliveryError as error:
        return [error] * len(inputs), error


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
