"""Filters available to mapping expressions.

Every filter is null-safe: a missing input (None or Jinja's Undefined) gives
None, so a field whose payload value is absent is simply left out instead of
failing the record. Dates accept Okendo's ISO 8601 strings
(`2025-11-03T09:14:22.518Z`, as in https://docs.okendo.io/webhooks/topics) and epoch
milliseconds.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timezone
from html.parser import HTMLParser
from typing import Any

from jinja2 import Undefined, pass_context


class FilterError(ValueError):
    """A filter got a value it cannot convert; the record fails with this message."""


def is_missing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


def _null_safe(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
        return None if is_missing(value) else function(value, *args, **kwargs)

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


# --- text -----------------------------------------------------------------


def email(value: Any) -> str | None:
    """Trim and lower-case an email address; None when it has no `@`."""
    text = str(value).strip().lower()
    return text if "@" in text else None


def lower(value: Any) -> str:
    return str(value).lower()


def upper(value: Any) -> str:
    return str(value).upper()


def trim(value: Any) -> str:
    return str(value).strip()


def truncate(value: Any, length: int, end: str = "") -> str:
    """Cut to at most `length` characters (a CRM field's maximum), `end` included."""
    text = str(value)
    if len(text) <= length:
        return text
    return text[: max(length - len(end), 0)] + end[:length]


def strip_prefix(value: Any, prefix: str) -> str:
    return str(value).removeprefix(prefix)


def first_name(value: Any) -> str | None:
    """The first word of a full name (`Harriet Quill` -> `Harriet`); None for one word."""
    parts = str(value).split()
    return parts[0] if len(parts) > 1 else None


def last_name(value: Any) -> str | None:
    """Everything after the first word (`Harriet Quill` -> `Quill`); the name itself for one word."""
    parts = str(value).split()
    if not parts:
        return None
    return " ".join(parts[1:]) if len(parts) > 1 else parts[0]


class _TextExtractor(HTMLParser):
    _BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})
    _SKIP = frozenset({"script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(value: Any) -> str:
    """Plain text from HTML (a merchant's review reply): tags dropped, entities decoded."""
    parser = _TextExtractor()
    parser.feed(str(value))
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def escape_html(value: Any) -> str:
    return html.escape(str(value), quote=True)


# --- lists and lookups -------------------------------------------------------


def join(value: Any, separator: str = ", ", attribute: str | None = None) -> str | None:
    """Join list items (or one attribute of each), skipping missing ones."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return str(value)
    items = []
    for item in value:
        if attribute is not None:
            item = item.get(attribute) if isinstance(item, Mapping) else None
        if not is_missing(item):
            items.append(str(item))
    return separator.join(items) if items else None


@pass_context
def lookup(context: Any, value: Any, table: Mapping[Any, Any] | str, default: Any = None) -> Any:
    """Translate through a table (inline, or named in `lookups:`); keys match as text, so 5 and "5" are one key."""
    if is_missing(value):
        return default
    if isinstance(table, str):
        tables = context.get("lookups") or {}
        if table not in tables:
            raise FilterError(f"no lookup table named {table!r}")
        table = tables[table]
    if not isinstance(table, Mapping):
        raise FilterError("lookup needs a table: a mapping written inline or a name from `lookups:`")
    by_text = {str(key): result for key, result in table.items()}
    return by_text.get(str(value), default)


def default(value: Any, fallback: Any = None) -> Any:
    """`fallback` when the value is missing (absent or null)."""
    return fallback if is_missing(value) else value


# --- numbers -----------------------------------------------------------------


def _number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise FilterError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        text = str(value).strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        raise FilterError(f"expected a number, got {value!r}") from None


def to_int(value: Any) -> int:
    return int(_number(value))


def to_float(value: Any) -> float:
    return float(_number(value))


def number(value: Any, decimals: int = 0, thousands: str = "") -> str:
    """Format a number as text: `1234.5 | number(1, ",")` -> `1,234.5`."""
    return f"{_number(value):,.{int(decimals)}f}".replace(",", thousands)


# --- dates -------------------------------------------------------------------


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value / 1000, tz=timezone.utc)  # epoch milliseconds
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise FilterError(f"not an ISO 8601 date or time: {text[:60]!r}") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def epoch_ms(value: Any) -> int:
    """Milliseconds since 1970 (UTC)."""
    moment = _datetime(value)
    return int(moment.timestamp() * 1000)


def hubspot_datetime(value: Any) -> int:
    """A HubSpot datetime property: epoch milliseconds."""
    return epoch_ms(value)


def hubspot_date(value: Any) -> str:
    """A HubSpot date property: `YYYY-MM-DD` (HubSpot stores dates at midnight UTC)."""
    return _datetime(value).date().isoformat()


def salesforce_datetime(value: Any) -> str:
    """A Salesforce dateTime field: ISO 8601 in UTC with milliseconds, e.g. `2025-11-03T09:14:22.518Z`."""
    return _datetime(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def salesforce_date(value: Any) -> str:
    """A Salesforce date field: `YYYY-MM-DD`."""
    return _datetime(value).date().isoformat()


def iso_date(value: Any) -> str:
    return _datetime(value).date().isoformat()


def iso_datetime(value: Any) -> str:
    return _datetime(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The filters mapping authors see, by name. Jinja's own filters stay available
# (map, select, list, length, ...) except where a null-safe version replaces them.
FILTERS: dict[str, Callable[..., Any]] = {
    "email": _null_safe(email),
    "lower": _null_safe(lower),
    "upper": _null_safe(upper),
    "trim": _null_safe(trim),
    "truncate": _null_safe(truncate),
    "strip_prefix": _null_safe(strip_prefix),
    "first_name": _null_safe(first_name),
    "last_name": _null_safe(last_name),
    "html_to_text": _null_safe(html_to_text),
    "escape_html": _null_safe(escape_html),
    "join": _null_safe(join),
    "lookup": lookup,
    "default": default,
    "int": _null_safe(to_int),
    "float": _null_safe(to_float),
    "number": _null_safe(number),
    "epoch_ms": _null_safe(epoch_ms),
    "hubspot_datetime": _null_safe(hubspot_datetime),
    "hubspot_date": _null_safe(hubspot_date),
    "salesforce_datetime": _null_safe(salesforce_datetime),
    "salesforce_date": _null_safe(salesforce_date),
    "iso_date": _null_safe(iso_date),
    "iso_datetime": _null_safe(iso_datetime),
}


def as_text(value: Any) -> str | None:
    """Any JSON value as readable text: lists joined with ", ", `{type, value}` objects by their value."""
    if isinstance(value, Mapping):
        inner = value.get("value")
        return as_text(inner) if not is_missing(inner) else ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return join([as_text(item) for item in value if not is_missing(item)])
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


FILTERS["as_text"] = _null_safe(as_text)


def answer_text(question: Any) -> str | None:
    """A survey question's answer as text, with the shopper's own words kept.

    A choice such as "Other" comes with the text the shopper typed in
    `customAnswer`; without it the CRM would only ever read "Other". Anything
    that is not a question object is shown as `as_text` shows it.
    """
    if not isinstance(question, Mapping):
        return as_text(question)
    answer = _present(question.get("answer"))
    custom = _present(question.get("customAnswer"))
    if custom is None:
        return as_text(answer) if answer is not None else None
    option = _present(question.get("customAnswerOptionText"))
    return _with_custom_answer(answer, as_text(custom), as_text(option) if option is not None else None)


def _present(value: Any) -> Any:
    """None for a missing value and for text that is only whitespace."""
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _with_custom_answer(answer: Any, custom: str, option: str | None) -> str:
    """`Other: my own words`: the custom text beside the choice it belongs to."""
    if isinstance(answer, (list, tuple)) and option is not None and option in answer:
        # Several choices: the custom text goes beside its own option, wherever it is.
        return join([f"{item}: {custom}" if item == option else as_text(item)
                     for item in answer if not is_missing(item)])
    chosen = as_text(answer) if answer is not None else option
    if chosen is None or chosen == custom:
        return custom  # nothing to put it beside, or Okendo already sent the text as the answer
    return f"{chosen}: {custom}"


FILTERS["answer_text"] = _null_safe(answer_text)
