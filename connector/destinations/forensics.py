"""What an attempt keeps of a CRM call: the request sent for its delivery and the CRM's answer to it.

Each entry of an attempt's `requests` is `{"method", "path", "body", "batch_size"?, "response"}`,
`response` being `{"status", "headers", "body", "truncated", "errors"}` (or `{"status": None,
"failure"}` when no answer came). It is stored as is in `delivery_attempts.requests`, so no schema
change was needed. What is kept, and why:

- one delivery's share of a batch: its own input(s) and, where the CRM answers per input, its own
  result or error (the CRM-specific share is cut in hubspot_answers.py / salesforce_answers.py);
  never another record's data;
- the headers that matter (wire.KEPT_HEADERS), never a request header;
- the answer's body redacted with the log redaction (connector/logs.py: tokens, secrets, the
  configured credentials) and capped at 64 KiB; a successful answer's share only while it is
  small, else only its ids (a note's echoed 64 KiB body would otherwise be kept twice);
- `errors`: the CRM's errors read per record and field, `{"record", "field", "code", "message"}`;
  what each code asks the operator to do is looked up when shown (error_codes.yaml), not stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.destinations.wire import Exchange
from connector.logs import redact

ANSWER_LIMIT = 64 * 1024  # bytes of an answer's body kept per delivery
SUCCESS_LIMIT = 4 * 1024  # a successful answer's share kept whole up to this size, else its ids only
ERRORS_LIMIT = 50  # per-field errors kept per answer
MESSAGE_LIMIT = 2000  # characters of one error message
# What identifies the record a successful answer wrote, in either CRM's answers.
IDENTIFYING = ("id", "new", "created", "success", "objectWriteTraceId", "fromObjectId", "toObjectId", "status",
               "numErrors")


@dataclass(frozen=True)
class Answered:
    """One input's outcome in a batch answer (a CRM id, True, a per-record DeliveryError...), with the
    exchange it came from: what the delivery's attempt keeps."""

    value: Any
    exchange: Exchange | None


def answered(values: Iterable[Any], exchange: Exchange | None) -> list[Answered]:
    return [Answered(value, exchange) for value in values]


def unwrap(outcome: Any) -> tuple[Any, Exchange | None]:
    """(the outcome itself, its exchange) for an Answered, a raised DeliveryError (which carries its
    exchange) or anything else (no exchange)."""
    if isinstance(outcome, Answered):
        return outcome.value, outcome.exchange
    return outcome, getattr(outcome, "exchange", None)


def entry(exchange: Exchange, *, body: Any, batch_size: int | None, answer: Any, errors: list[dict[str, Any]],
          ok: bool, path: str | None = None) -> dict[str, Any]:
    """The stored record of one exchange for one delivery: `body` and `answer` are its shares."""
    kept: dict[str, Any] = {"method": exchange.method, "path": redact(path or exchange.path)}
    if body is not None:
        kept["body"] = body
    if batch_size is not None:
        kept["batch_size"] = batch_size
    kept["response"] = response(exchange, answer, errors, ok)
    return kept


def response(exchange: Exchange, answer: Any, errors: list[dict[str, Any]], ok: bool) -> dict[str, Any]:
    if not exchange.answered:
        return {"status": None, "failure": redact(exchange.failure or "no answer")}
    kept: dict[str, Any] = {"status": exchange.status,
                            "headers": {name: redact(value) for name, value in exchange.headers.items()}}
    answer = redacted(answer)
    if ok and size(answer) > SUCCESS_LIMIT:
        answer, kept["reduced_to_ids"] = compact_ids(answer), True
    kept["body"], kept["truncated"] = capped(answer, ANSWER_LIMIT)
    kept["errors"] = [tidy(error) for error in errors[:ERRORS_LIMIT]]
    return kept


def whole_call(exchange: Exchange | None) -> list[dict[str, Any]]:
    """What a failure keeps when nothing tells its delivery's share of the call apart (a lookup for the
    whole batch failed, say): the call and its answer, but the request body only when it held one
    record, no query string (a query names every record looked up), and of a successful answer nothing."""
    if exchange is None:
        return []
    sent = exchange.sent
    single = longest_list(sent) <= 1
    answer = without_ids(exchange.answer) if exchange.status is not None and exchange.status >= 300 else None
    kept = entry(exchange, body=sent if single else None, batch_size=None if single else longest_list(sent),
                 answer=answer, errors=[], ok=False, path=exchange.path.split("?")[0])
    if not single:
        kept["body_withheld"] = "the request held other deliveries' records"
    return [kept]


def longest_list(value: Any) -> int:
    """The most items any list in a JSON value holds: more than one, and it may be several records."""
    if isinstance(value, Mapping):
        return max((longest_list(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return max([len(value), *(longest_list(item) for item in value)])
    return 0


def without_ids(value: Any) -> Any:
    """An error body without the input ids its contexts name (HubSpot's `context.ids`): in a whole-call
    failure they may be other deliveries' records (an upsert's ids are emails)."""
    if isinstance(value, Mapping):
        return {key: ({k: v for k, v in item.items() if k != "ids"} if key == "context" and isinstance(item, Mapping)
                      else without_ids(item)) for key, item in value.items()}
    if isinstance(value, list):
        return [without_ids(item) for item in value]
    return value


def redacted(value: Any) -> Any:
    """Every string in a JSON value, secrets taken out."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(key): redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(item) for item in value]
    return value


def size(value: Any) -> int:
    """Bytes of a value as stored (JSON; text as is)."""
    return len((value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)).encode())


def capped(value: Any, limit: int) -> tuple[Any, bool]:
    """The value when it fits in `limit` bytes, else the beginning of its text, and whether it was cut."""
    if size(value) <= limit:
        return value, False
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text.encode()[:limit].decode("utf-8", errors="ignore"), True


def compact_ids(value: Any) -> Any:
    """A successful answer reduced to what identifies the records it wrote."""
    if isinstance(value, Mapping):
        return {key: compact_ids(item) for key, item in value.items()
                if key in IDENTIFYING or key in ("results", "from", "to")}
    if isinstance(value, list):
        return [compact_ids(item) for item in value]
    return value


def tidy(error: Mapping[str, Any]) -> dict[str, Any]:
    message = redact(str(error.get("message") or ""))
    return {"record": _text(error.get("record")), "field": _text(error.get("field")), "code": _text(error.get("code")),
            "message": message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + "…"}


def _text(value: Any) -> str | None:
    return None if value is None else redact(str(value))[:200]


def position_of(items: list[Any], item: Any) -> int | None:
    """Where `item` stands in what was sent (the SDK sends equal copies, not the same objects)."""
    for position, candidate in enumerate(items):
        if candidate is item or candidate == item:
            return position
    return None
