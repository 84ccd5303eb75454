"""Each attempt's requests and answers as the event page and GET /api/events/<id> show them: every
error the CRM answered with, and the attempt's own error, with what to do about it (the error-code
table, connector/destinations/error_codes.yaml), and JSON laid out for reading."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from connector.config import Settings
from connector.destinations.error_codes import advice

# str(DeliveryError): "<class>[ HTTP <status>][ <CODE>]: <message>" (connector/destinations/errors.py).
_ERROR_CODE = re.compile(r"^[a-z_]+(?: HTTP \d+)?(?: (?P<code>[A-Za-z0-9_.-]+))?: ")
_EMBEDDED_AFTER = " (as JSON)"


def destination_kinds(settings: Settings) -> dict[str, str]:
    """Which CRM each configured destination is (`hubspot`, `salesforce`), for the error-code table."""
    return {name: config.type for name, config in settings.destinations.items()}


def annotate(detail: dict[str, Any], kinds: Mapping[str, str]) -> None:
    """Give each attempt of an event's deliveries its requests as a list, each per-field error its
    `advice`, and the attempt an `advice` for its own error when no per-field error has one."""
    for delivery in detail["deliveries"]:
        kind = kinds.get(delivery["destination"])
        for attempt in delivery["attempt_list"]:
            requests = attempt.get("requests")
            if isinstance(requests, str):
                requests = json.loads(requests)
            attempt["requests"] = [entry for entry in requests or [] if isinstance(entry, dict)]
            advised = False
            for entry in attempt["requests"]:
                for error in (entry.get("response") or {}).get("errors") or []:
                    found = advice(kind, error.get("code"))
                    error["advice"] = found.to_json() if found else None
                    advised = advised or found is not None
            found = None if advised else advice(kind, attempt_code(attempt.get("error")))
            attempt["advice"] = found.to_json() if found else None


def attempt_code(error: str | None) -> str | None:
    """The CRM's (or the connector's) code in an attempt's stored error text, if it has one."""
    match = _ERROR_CODE.match(error or "")
    return match.group("code") if match else None


def readable(value: Any) -> str:
    """JSON indented for reading, with JSON that a CRM wrote inside a text (HubSpot's "Property values
    were not valid: [...]") laid out too, instead of shown as one escaped line."""
    if isinstance(value, str):
        return value
    return json.dumps(_decoded(value), indent=2, ensure_ascii=False, default=str)


def _decoded(value: Any) -> Any:
    if isinstance(value, Mapping):
        laid_out: dict[str, Any] = {}
        for key, item in value.items():
            embedded = _embedded(item) if isinstance(item, str) else None
            if embedded is None:
                laid_out[key] = _decoded(item)
            else:
                laid_out[key], laid_out[f"{key}{_EMBEDDED_AFTER}"] = embedded
        return laid_out
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value


def _embedded(text: str) -> tuple[str, Any] | None:
    """(the text before it, the JSON list or object) when a text ends with one."""
    starts = [position for position in (text.find("["), text.find("{")) if position >= 0]
    if not starts:
        return None
    start = min(starts)
    try:
        found = json.loads(text[start:])
    except ValueError:
        return None
    if not isinstance(found, (list, dict)) or not found:
        return None
    return text[:start].rstrip(), _decoded(found)
