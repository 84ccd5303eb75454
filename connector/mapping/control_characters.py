"""Control characters out of every text a mapping writes to a CRM.

Shoppers' text reaches Okendo from browsers, apps and copy-paste, and may carry
U+0000 or other C0 control characters. They mean nothing in a review or an
answer, are invisible in a CRM's screens, and break what reads the CRM later:
XML 1.0 (Salesforce's SOAP API and many exports) cannot carry them at all, and
PostgreSQL text refuses U+0000. So the engine removes them from each field,
deliberately, and says so in the outcome's warnings (docs/mappings.md §6).

Tab and newline are text and stay. Line breaks are made one convention: CRLF
and a lone CR become a newline (not counted as removed: the line break stays).
"""

from __future__ import annotations

import re
from typing import Any

_LINE_BREAK = re.compile(r"\r\n?")
# C0 controls except tab (\x09), newline (\x0a) and carriage return (\x0d,
# already turned into a newline), plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_control_characters(text: str) -> tuple[str, int]:
    """The text with CR/CRLF made newlines and the other control characters removed, and how many were removed."""
    return _CONTROL.subn("", _LINE_BREAK.sub("\n", text))


def strip_from_value(value: Any) -> tuple[Any, int]:
    """Strip every text inside a JSON value (list items and object values too); numbers and booleans stay."""
    if isinstance(value, str):
        return strip_control_characters(value)
    if isinstance(value, list):
        items = [strip_from_value(item) for item in value]
        return [item for item, _ in items], sum(removed for _, removed in items)
    if isinstance(value, dict):
        entries = {name: strip_from_value(item) for name, item in value.items()}
        return {name: item for name, (item, _) in entries.items()}, sum(removed for _, removed in entries.values())
    return value, 0
