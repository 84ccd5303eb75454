"""Classify a verified body: a usable Okendo event, `invalid`, or `unsupported`.

Runs only after the signature has been verified. It never raises: whatever
Okendo signed is stored, with a state and a reason a person can read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connector import okendo
from connector.ledger.models import (
    EMAIL_MAX,
    RESOURCE_ID_MAX,
    RESOURCE_TYPE_MAX,
    SEQUENCE_MAX,
    TOPIC_MAX,
    EventState,
)


@dataclass(frozen=True)
class Envelope:
    state: str
    reason: str | None = None
    resource_type: str | None = None
    topic: str | None = None
    resource_id: str | None = None
    sequence_number: str | None = None
    customer_email: str | None = None


def _text(value: Any, limit: int) -> str | None:
    """A string that fits its column, or None."""
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _dig(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _sequence(value: Any) -> str | None:
    # A digit string (https://docs.okendo.io/webhooks/topics); tolerate a JSON integer, never a float or bool.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= SEQUENCE_MAX:
        return value
    return None


def classify(body: bytes) -> Envelope:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        return Envelope(EventState.INVALID, f"body is not JSON: {error}"[:500])
    if not isinstance(document, dict):
        return Envelope(EventState.INVALID, f"body is a JSON {type(document).__name__}, expected an object")

    resource_type = _text(document.get("resourceType"), RESOURCE_TYPE_MAX)
    topic = _text(document.get("topic"), TOPIC_MAX)
    resource = document.get("resource")
    sequence_number = _sequence(document.get("sequenceNumber"))
    id_field = okendo.RESOURCE_ID_FIELDS.get(resource_type or "")
    resource_id = _text(_dig(resource, (id_field,)), RESOURCE_ID_MAX) if id_field else None
    email = _dig(resource, okendo.CUSTOMER_EMAIL_PATHS.get(resource_type or "", ()))
    email = email.strip().lower() if isinstance(email, str) else None
    known = {
        "resource_type": resource_type,
        "topic": topic,
        "resource_id": resource_id,
        "sequence_number": sequence_number,
        "customer_email": _text(email, EMAIL_MAX),
    }

    missing = [key for key in okendo.ENVELOPE_KEYS if key not in document]
    if missing:
        return Envelope(EventState.INVALID, f"envelope key(s) missing: {', '.join(missing)}", **known)
    if resource_type is None:
        return Envelope(EventState.INVALID, f"resourceType must be a string of at most {RESOURCE_TYPE_MAX} characters", **known)
    if topic is None:
        return Envelope(EventState.INVALID, f"topic must be a string of at most {TOPIC_MAX} characters", **known)
    if id_field is None:
        return Envelope(EventState.UNSUPPORTED, f"unknown resourceType {resource_type!r}", **known)
    if topic not in okendo.TOPICS:
        return Envelope(EventState.UNSUPPORTED, f"unknown topic {topic!r} for {resource_type}", **known)
    if not isinstance(resource, dict):
        return Envelope(EventState.INVALID, "resource must be a JSON object", **known)
    if sequence_number is None:
        return Envelope(
            EventState.INVALID,
            f"sequenceNumber must be a string of at most {SEQUENCE_MAX} digits (it orders events of a resource)",
            **known,
        )
    if resource_id is None:
        return Envelope(
            EventState.INVALID,
            f"resource.{id_field} is missing or not a string of at most {RESOURCE_ID_MAX} characters",
            **known,
        )
    return Envelope(EventState.RECEIVED, None, **known)
