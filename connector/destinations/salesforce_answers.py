"""Reading Salesforce's answers: whatever simple-salesforce or requests raised, as a classified
DeliveryError with Salesforce's own code and message; the per-record errors of an sObject
Collections answer (`statusCode`, not `errorCode`); one record's share of such an answer; and the
errors per record and field (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
"""

from __future__ import annotations

from typing import Any

import requests
from simple_salesforce.exceptions import SalesforceError

from connector.destinations.errors import SALESFORCE_CODES, DeliveryError, ErrorClass, classify_status
from connector.destinations.forensics import entry, position_of, unwrap
from connector.destinations.wire import Exchange


def first_error(content: Any) -> dict[str, Any]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0]
    if isinstance(content, dict):
        return content
    return {}


def classify(error: BaseException) -> DeliveryError:
    if isinstance(error, SalesforceError):
        detail = first_error(error.content)
        code = detail.get("errorCode") or detail.get("statusCode")
        message = str(detail.get("message") or error.content or type(error).__name__)
        error_class = SALESFORCE_CODES.get(code, classify_status(error.status)) if code else classify_status(error.status)
        return DeliveryError(error_class, message, error.status, code)
    if isinstance(error, requests.Timeout):
        return DeliveryError(ErrorClass.RETRY_SOON, f"timed out: {error}", None, "TIMEOUT")
    if isinstance(error, requests.RequestException):
        return DeliveryError(ErrorClass.RETRY_SOON, f"{type(error).__name__}: {error}", None, "CONNECTION")
    return DeliveryError(ErrorClass.RETRY_SOON, f"{type(error).__name__}: {error}", None, "UNEXPECTED")


def record_error(result: dict[str, Any]) -> DeliveryError:
    """A per-record error inside an sObject Collections answer (`statusCode`, not `errorCode`)."""
    detail = first_error(result.get("errors"))
    code = detail.get("statusCode")
    fields = detail.get("fields") or []
    message = str(detail.get("message") or "Salesforce rejected this record")
    if fields:
        message += f" (fields: {', '.join(map(str, fields))})"
    return DeliveryError(SALESFORCE_CODES.get(code, ErrorClass.PERMANENT), message, 200, code,
                         fields=tuple((str(name), str(code)) for name in fields))


# --- one record's share of an answer, for its delivery's attempt ------------------------------------


def kept(outcome: Any, record: dict[str, Any] | None, label: str | None, *, position: int | None = None,
         path: str | None = None, batch_size: int | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """A record's outcome (Answered or raised), and what its attempt keeps of the call that decided it:
    nothing when nothing was sent. A Collections answer is one result per record, in order: the record
    is found in what was sent (`record`), or given by `position` (a DELETE names ids, not records)."""
    value, exchange = unwrap(outcome)
    if exchange is None:
        return value, []
    ok = not isinstance(value, DeliveryError) and not (isinstance(value, dict) and value.get("success") is False)
    return value, [share(exchange, record, label, ok=ok, position=position, path=path, batch_size=batch_size)]


def share(exchange: Exchange, record: dict[str, Any] | None, label: str | None, *, ok: bool,
          position: int | None = None, path: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
    sent = exchange.sent if isinstance(exchange.sent, dict) else None
    records = sent.get("records") if sent is not None and isinstance(sent.get("records"), list) else None
    if records is not None and record is not None:
        position = position_of(records, record)
        batch_size = len(records)
    answer = exchange.answer
    if position is not None and isinstance(answer, list) and 200 <= (exchange.status or 0) < 300:
        answer = answer[position:position + 1]  # a whole-request error (a list of errorCode) stays whole
    body = {**sent, "records": [record]} if records is not None and record is not None else sent
    return entry(exchange, body=body, batch_size=batch_size, answer=answer, errors=field_errors(answer, label), ok=ok,
                 path=path)


def field_errors(answer: Any, record: str | None = None) -> list[dict[str, Any]]:
    """Salesforce's errors in an answer, one per record and field: a whole-request error list
    (`errorCode`, `fields`) or the `errors` of each Collections result (`statusCode`, `fields`)."""
    items = answer if isinstance(answer, list) else [answer] if isinstance(answer, dict) else []
    found: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        whole = "errorCode" in item
        owner = record if whole else (item.get("id") or record)
        for detail in [item] if whole else [e for e in item.get("errors") or [] if isinstance(e, dict)]:
            code = detail.get("errorCode") or detail.get("statusCode")
            for field_name in detail.get("fields") or [None]:
                found.append({"record": owner, "field": field_name, "code": code, "message": detail.get("message")})
    return found
