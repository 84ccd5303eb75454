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
