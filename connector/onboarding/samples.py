"""The bodies `connector send` posts: a shipped sample by name, or a file of your own.

The shipped samples (`connector/samples/`, one per Okendo topic) install with the package,
so `connector send review.create` works from any folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from connector.config import ReceiverConfig
from connector.samples import sample_paths

# The receiver's default receiver.max_body_bytes: a larger body would only earn a 413.
MAX_BODY_BYTES = ReceiverConfig.model_fields["max_body_bytes"].default

# `connector send --all` order: creates, then updates, then deletes, so no event is older
# (by sequenceNumber) than one already applied to its resource and none shows as stale.
# The loyalty member comes first and, among deletes, goes last: its transactions belong to it.
_TOPIC_ORDER = ("create", "update", "delete")
_RESOURCE_ORDER = ("loyalty_customer", "review", "loyalty_earning_transaction", "loyalty_redemption_transaction",
                   "loyalty_adjustment_transaction", "survey_response")


class SampleError(ValueError):
    """The body cannot be sent; the message names the argument and what to do."""


@dataclass(frozen=True)
class SampleBody:
    label: str  # a shipped sample's name (review.create) or the file's path as given
    body: bytes


def shipped_names() -> list[str]:
    return [path.name.removesuffix(".json") for path in sample_paths()]


def _story_position(name: str) -> tuple[int, int, str]:
    resource_type, _, topic = name.rpartition(".")
    topic_rank = _TOPIC_ORDER.index(topic) if topic in _TOPIC_ORDER else len(_TOPIC_ORDER)
    resource_rank = _RESOURCE_ORDER.index(resource_type) if resource_type in _RESOURCE_ORDER else len(_RESOURCE_ORDER)
    if topic == "delete":
        resource_rank = -resource_rank
    return topic_rank, resource_rank, name


def all_shipped() -> list[SampleBody]:
    """Every shipped sample, in an order a shop could have produced them."""
    by_name = {path.name.removesuffix(".json"): path for path in sample_paths()}
    return [SampleBody(name, by_name[name].read_bytes()) for name in sorted(by_name, key=_story_position)]


def load(argument: str) -> SampleBody:
    """A file when `argument` names one, else the shipped sample of that name (`review.create`)."""
    path = Path(argument)
    if path.is_dir():
        raise SampleError(f"{argument}: is a folder; name a JSON file or a shipped sample "
                          "(`connector send --all` posts every shipped sample)")
    if path.is_file():
        return SampleBody(argument, _read_bounded(path, argument))
    name = argument.removesuffix(".json")
    shipped = {path.name.removesuffix(".json"): path for path in sample_paths()}
    if name in shipped:
        return SampleBody(name, shipped[name].read_bytes())
    raise SampleError(f"{argument}: no such file, and no shipped sample of that name "
                      f"(shipped: {', '.join(sorted(shipped))})")


def _read_bounded(path: Path, shown: str) -> bytes:
    try:
        with path.open("rb") as file:
            body = file.read(MAX_BODY_BYTES + 1)  # never more than the limit, whatever the file's size
    except OSError as error:
        raise SampleError(f"{shown}: cannot read: {error.strerror or error}") from None
    if len(body) > MAX_BODY_BYTES:
        raise SampleError(f"{shown}: larger than {MAX_BODY_BYTES} bytes, the connector's default "
                          "receiver.max_body_bytes (it would answer 413); send a smaller event")
    if not body.strip():
        raise SampleError(f"{shown}: is empty; an Okendo event is a JSON object (see `connector send --all`'s samples)")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        # Svix signs text, and Okendo sends JSON in UTF-8.
        raise SampleError(f"{shown}: is not UTF-8 text; save the event as UTF-8 JSON") from None
    return body


def json_problem(body: bytes) -> str | None:
    """Why the connector would store this body as `invalid`, if it is not even JSON; else None."""
    try:
        json.loads(body)
    except ValueError as error:
        return f"not JSON ({error})"
    return None
