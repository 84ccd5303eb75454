"""Reading HubSpot's answers: whatever the SDK or urllib3 raised, as a classified DeliveryError
with HubSpot's own message (https://developers.hubspot.com/docs/api-reference/error-handling),
the per-input errors of a 207 multi-status answer, by the input each one names, one input's share
of a batch answer, and its errors per record and property."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import hubspot.crm.associations.v4 as associations_v4
import hubspot.crm.objects as objects_api
import hubspot.crm.properties as properties_api
import urllib3.exceptions

from connector.destinations.errors import (
    AWAITING_SEARCH_INDEX,
    HUBSPOT_RATE_POLICIES,
    DeliveryError,
    ErrorClass,
    classify_status,
    parse_retry_after,
)
from connector.destinations.forensics import entry, unwrap
from connector.destinations.wire import Exchange

API_EXCEPTIONS = (objects_api.ApiException, associations_v4.ApiException, properties_api.ApiException)

# Per-record error categories in 207 answers -> class (anything else: permanent).
HUBSPOT_CATEGORIES: dict[str, ErrorClass] = {
    "RATE_LIMITS": ErrorClass.RETRY_SOON,
    "INVALID_AUTHENTICATION": ErrorClass.REAUTHENTICATE,
    "EXPIRED_AUTHENTICATION": ErrorClass.REAUTHENTICATE,
}


def classify(error: BaseException) -> DeliveryError:
    """Turn whatever the SDK or urllib3 raised into a DeliveryError, keeping HubSpot's message."""
    if isinstance(error, API_EXCEPTIONS):
        status = getattr(error, "status", None) or None
        raw = getattr(error, "body", None)
        body: dict[str, Any] = {}
        if raw:
            try:
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else {}
            except (ValueError, TypeError):
                body = {}
        message = readable_message(str(body.get("message") or getattr(error, "reason", None) or "no message"))
        headers = getattr(error, "headers", None) or {}
        retry_after = parse_retry_after(headers.get("Retry-After") if hasattr(headers, "get") else None)
        error_class = classify_status(status)
        code = body.get("category") or body.get("errorType")
        if status == 429:
            policy = body.get("policyName")
            error_class, policy_wait = HUBSPOT_RATE_POLICIES.get(policy, (ErrorClass.RETRY_SOON, 10.0))
            retry_after = retry_after if retry_after is not None else policy_wait
            code = policy or code
        if status == 0 or status is None:  # the SDK wraps SSL and protocol errors as status 0
            return DeliveryError(ErrorClass.RETRY_SOON, message, None, "CONNECTION")
        return DeliveryError(error_class, message, status, code, retry_after, named_ids(body), problem_fields(body))
    if isinstance(error, urllib3.exceptions.HTTPError):
        kind = "TIMEOUT" if isinstance(error, (urllib3.exceptions.TimeoutError,)) or "timed out" in str(error) else "CONNECTION"
        return DeliveryError(ErrorClass.RETRY_SOON, f"{type(error).__name__}: {error}", None, kind)
    return DeliveryError(ErrorClass.RETRY_SOON, f"{type(error).__name__}: {error}", None, "UNEXPECTED")


def problem_fields(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(property, code) of each problem a validation error lists, in its message or its `errors`."""
    found = [(str(p.get("name")), str(p.get("error") or "")) for p in embedded_problems(body.get("message"))
             if p.get("name")]
    found += [(str(name), str(detail.get("code") or "")) for detail in body.get("errors") or []
              if isinstance(detail, dict) for name in _context(detail, "propertyName")]
    return tuple(dict.fromkeys(found))


def named_ids(body: dict[str, Any]) -> tuple[str, ...]:
    """The input ids an error body names in `context.ids`, at its top or in its `errors`."""
    contexts = [body.get("context")] + [e.get("context") for e in body.get("errors") or [] if isinstance(e, dict)]
    return tuple(str(value) for context in contexts if isinstance(context, dict)
                 for value in context.get("ids") or [] if isinstance(context.get("ids"), list))


def record_error(error: Any) -> DeliveryError:
    """A per-record error from a 207 answer."""
    category = getattr(error, "category", None)
    raw = getattr(error, "message", None) or "HubSpot rejected this record"
    details = [d.to_dict() if hasattr(d, "to_dict") else d for d in getattr(error, "errors", None) or []]
    fields = problem_fields({"message": raw, "errors": [d for d in details if isinstance(d, dict)]})
    return DeliveryError(HUBSPOT_CATEGORIES.get(category, ErrorClass.PERMANENT), readable_message(raw), 207, category,
                         fields=fields)


def awaiting_search_index(seconds: float) -> DeliveryError:
    return DeliveryError(ErrorClass.RETRY_SOON, "an earlier attempt may have created this record and its answer "
                         "was lost; HubSpot's search does not show it yet, so the connector waits "
                         f"{seconds:.0f} s more for the search index before creating it again",
                         None, AWAITING_SEARCH_INDEX, retry_after=seconds)


def errors_by_ref(response: Any, exchange: Exchange | None = None) -> dict[str, DeliveryError]:
    """The per-input errors of a 207 answer, by the id (or objectWriteTraceId) each one names."""
    failed: dict[str, DeliveryError] = {}
    for error in getattr(response, "errors", None) or []:
        for value in (getattr(error, "context", None) or {}).get("ids", []) or []:
            failed[str(value)] = record_error(error)
            failed[str(value)].exchange = exchange
    return failed


def named_by(field: str) -> Callable[[DeliveryError, Sequence[dict[str, Any]]], set[int]]:
    """The inputs a whole-batch error names: in its context ids, found by one of their fields; else
    the inputs whose value of a property the error finds invalid is quoted in that problem's message
    (HubSpot's "Email address x is invalid" for the `email` property), so one bad input among n costs
    one more call instead of a bisection (about 2·log2(n) calls)."""
    def named(error: DeliveryError, inputs: Sequence[dict[str, Any]]) -> set[int]:
        by_ref = {position for position, item in enumerate(inputs) if str(item.get(field)) in error.refs}
        return by_ref or quoted_inputs(error, inputs)
    return named


# A value this short could be quoted in a message by chance (a length, a count): never taken as naming.
_QUOTED_MIN_LENGTH = 5


def quoted_inputs(error: DeliveryError, inputs: Sequence[dict[str, Any]]) -> set[int]:
    """Inputs whose value of the property a validation problem names appears, as a whole word, in that
    problem's message. Only a 400 VALIDATION_ERROR's problems count; a value is never matched inside a
    longer word, so `a@b.com` does not name `xa@b.com`."""
    answer = getattr(error.exchange, "answer", None)
    if error.status != 400 or not isinstance(answer, dict) or answer.get("category") != "VALIDATION_ERROR":
        return set()
    problems = [(p.get("name"), str(p.get("message") or "")) for p in embedded_problems(answer.get("message"))]
    problems += [(name, str(detail.get("message") or "")) for detail in answer.get("errors") or []
                 if isinstance(detail, dict) for name in _context(detail, "propertyName")]
    named: set[int] = set()
    for name, message in problems:
        if not name or not message:
            continue
        for position, item in enumerate(inputs):
            value = str((item.get("properties") or {}).get(name) or "")
            if len(value) >= _QUOTED_MIN_LENGTH and _quotes(message, value):
                named.add(position)
    return named


def _quotes(message: str, value: str) -> bool:
    start = message.find(value)
    while start >= 0:
        end = start + len(value)
        before = message[start - 1] if start else " "
        after = message[end:end + 2] + "  "
        if after[0] == ".":  # a full stop ends the word; `.au` would continue it
            after = after[1:]
        if not (before.isalnum() or before in "._%+-@") and not (after[0].isalnum() or after[0] in "._%+-@"):
            return True
        start = message.find(value, start + 1)
    return False


# --- one input's share of an answer, for its delivery's attempt -------------------------------------


def kept(pairs: list[tuple[dict[str, Any], Any]], keys: set[str], id_property: str | None = None
         ) -> tuple[list[Any], list[dict[str, Any]]]:
    """The outcomes of one delivery's inputs (with the outcome each input got, Answered or raised), and
    what its attempt keeps: one share per call that decided some of them (none when nothing was sent)."""
    values: list[Any] = []
    calls: dict[int, tuple[Exchange, list[dict[str, Any]], list[bool]]] = {}
    for item, outcome in pairs:
        value, exchange = unwrap(outcome)
        values.append(value)
        if exchange is not None:
            _, items, ok = calls.setdefault(id(exchange), (exchange, [], [True]))
            items.append(item)
            ok[0] = ok[0] and not isinstance(value, DeliveryError)
    return values, [share(exchange, items, keys, ok=ok[0], id_property=id_property)
                    for exchange, items, ok in calls.values()]


def share(exchange: Exchange, items: list[dict[str, Any]], keys: set[str], *, ok: bool,
          id_property: str | None = None) -> dict[str, Any]:
    """One delivery's share of a batch call: its own inputs, and the results and errors of the answer
    that name them (`keys`: the ids they are known by: an email, an objectWriteTraceId, a record id)."""
    sent = exchange.sent if isinstance(exchange.sent, dict) else {}
    inputs = sent.get("inputs") if isinstance(sent.get("inputs"), list) else None
    wanted = {str(key).lower() for key in keys}
    answer = answer_share(exchange.answer, wanted, id_property)
    return entry(exchange, body={**sent, "inputs": items} if inputs is not None else sent or None,
                 batch_size=len(inputs) if inputs is not None else None, answer=answer,
                 errors=field_errors(answer, next(iter(sorted(keys)), None)), ok=ok)


def answer_share(answer: Any, keys: set[str], id_property: str | None = None) -> Any:
    """The part of an answer about the inputs known by `keys`: in a batch wrapper, their results and
    errors; an error for the whole call, as is, but naming no other input."""
    if not isinstance(answer, dict):
        return answer
    if answer.get("status") == "error" or "results" not in answer:
        return _naming_only(answer, keys)
    share = {key: value for key, value in answer.items() if key not in ("results", "errors", "numErrors")}
    results, errors_named = _indexed(answer, id_property)
    share["results"] = [answer["results"][i] for i in sorted({i for key in keys for i in results.get(key, ())})]
    errors = [_naming_only(answer["errors"][i], keys)
              for i in sorted({i for key in keys for i in errors_named.get(key, ())})]
    if errors:
        share.update(numErrors=len(errors), errors=errors)
    return share


# Each delivery of a batch takes its share of the same answer: the answer's results and errors are
# indexed by the names they are known by once, not scanned again per delivery (O(n) per batch, not
# O(n²)). Keyed by the answer object, which the entry holds alive.
_indexes: dict[tuple[int, str | None], tuple[Any, dict[str, list[int]], dict[str, list[int]]]] = {}


def _indexed(answer: dict[str, Any], id_property: str | None) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    cached = _indexes.get((id(answer), id_property))
    if cached is not None and cached[0] is answer:
        return cached[1], cached[2]
    results: dict[str, list[int]] = {}
    for position, result in enumerate(answer.get("results") or []):
        if isinstance(result, dict):
            for name in _names(result, id_property):
                results.setdefault(name, []).append(position)
    errors: dict[str, list[int]] = {}
    for position, error in enumerate(answer.get("errors") or []):
        if isinstance(error, dict):
            for name in {str(i).lower() for i in _context(error, "ids")}:
                errors.setdefault(name, []).append(position)
    if len(_indexes) > 32:
        _indexes.clear()
    _indexes[(id(answer), id_property)] = (answer, results, errors)
    return results, errors


def field_errors(answer: Any, record: str | None = None) -> list[dict[str, Any]]:
    """HubSpot's errors in an answer, one per record and property: the `errors[]` details, else the
    problems a VALIDATION_ERROR lists inside its message ("Property values were not valid: [...]"),
    else the error itself."""
    if not isinstance(answer, dict):
        return []
    tops = [answer] if answer.get("status") == "error" else \
        [error for error in answer.get("errors") or [] if isinstance(error, dict)]
    found: list[dict[str, Any]] = []
    for error in tops:
        owner = next(iter(_context(error, "ids")), record)
        category = error.get("category") or error.get("policyName") or error.get("errorType")
        details = [d for d in error.get("errors") or [] if isinstance(d, dict)]
        problems = details or embedded_problems(error.get("message"))
        for problem in problems:
            found.append({"record": owner, "code": problem.get("code") or problem.get("error") or category,
                          "field": next(iter(_context(problem, "propertyName")), None) or problem.get("name")
                          or problem.get("in"), "message": problem.get("message")})
        if not problems:
            found.append({"record": owner, "field": next(iter(_context(error, "propertyName")), None),
                          "code": category, "message": error.get("message")})
    return found


def readable_message(message: str) -> str:
    """HubSpot's message with the JSON list of problems a validation error writes into it spelled out
    ("Property values were not valid: email: Email address x is invalid (INVALID_EMAIL); ..."), so the
    delivery's last error reads as text, not as escaped JSON."""
    problems = embedded_problems(message)
    if not problems:
        return message
    spelled = [" ".join(part for part in (f"{p['name']}:" if p.get("name") else "", str(p.get("message") or ""),
                                           f"({p['error']})" if p.get("error") else "") if part)
               for p in problems]
    return f"{message[:message.index('[')].rstrip()} {'; '.join(spelled)}"


def embedded_problems(message: Any) -> list[dict[str, Any]]:
    """The JSON list of problems HubSpot writes into a validation message, when there is one."""
    if not isinstance(message, str) or "[" not in message:
        return []
    try:
        problems = json.loads(message[message.index("["):])
    except ValueError:
        return []
    return [p for p in problems if isinstance(p, dict)] if isinstance(problems, list) else []


def _context(error: dict[str, Any], key: str) -> list[Any]:
    values = (error.get("context") or {}).get(key) if isinstance(error.get("context"), dict) else None
    return list(values) if isinstance(values, list) else []


def _names(result: dict[str, Any], id_property: str | None) -> set[str]:
    """The ids a result of a batch answer is known by (record id, trace id, association source, key)."""
    names = {result.get("id"), result.get("objectWriteTraceId"), result.get("fromObjectId"),
             (result.get("from") or {}).get("id") if isinstance(result.get("from"), dict) else None}
    if id_property and isinstance(result.get("properties"), dict):
        names.add(result["properties"].get(id_property))
    return {str(name).lower() for name in names if name is not None}


def _naming_only(error: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """An error body whose contexts name only the inputs known by `keys`."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: ([i for i in item if str(i).lower() in keys] if key == "ids" and isinstance(item, list)
                          else clean(item)) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value
    return clean(error)

