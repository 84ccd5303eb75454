"""How the connector writes values into HubSpot: property values as strings, the source key a
note carries, the type of a property it creates."""

from __future__ import annotations

import json
from typing import Any

from connector.mapping.operations import SourceRef


def source_key(source: SourceRef) -> str:
    return f"{source.type}:{source.id}"


def as_strings(properties: dict[str, Any]) -> dict[str, Any]:
    """HubSpot takes property values as strings; lists become `;`-joined (multi-select) values."""
    converted = {}
    for name, value in properties.items():
        if isinstance(value, bool):
            converted[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            converted[name] = ";".join(str(item) for item in value)
        elif isinstance(value, dict):
            converted[name] = json.dumps(value, ensure_ascii=False)
        else:
            converted[name] = value if isinstance(value, str) else str(value)
    return converted


def property_type(name: str) -> tuple[str, str]:
    """A sensible HubSpot type for a property the connector creates, from its name."""
    if name.endswith("_date"):
        return "date", "date"
    if name.endswith(("_rating", "_score", "_balance")):
        return "number", "number"
    return "string", "text"


def unacceptable_email(value: str) -> str | None:
    """Why HubSpot would refuse this contact email, when its documented rules settle it without a call:
    an address must be valid RFC 2822, whose local part (before the @) is ASCII, and may not be quoted
    (https://legacydocs.hubspot.com/docs/faq/how-does-hubspot-validate-email-addresses). HubSpot fails a
    whole batch for one such address, so sending it would cost a call for nothing. Anything else
    (the domain, its TLD) is left for HubSpot to judge."""
    local, at, _ = value.rpartition("@")
    if not at or not local:
        return None
    if not local.isascii():
        return "its local part (before the @) is not ASCII, as RFC 2822 requires"
    if local.startswith('"') and local.endswith('"'):
        return "its local part is quoted"
    return None
