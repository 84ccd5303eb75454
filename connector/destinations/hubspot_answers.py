"""Reading HubSpot's answers: whatever the SDK or urllib3 raised, as a classified DeliveryError
with HubSpot's own message (https://developers.hubspot.com/docs/api-reference/error-handling),
and the per-input errors of a 207 multi-status answer, by the input each one names."""

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
        message = str(body.get("message") or getattr(error, "reason", None) or "no message")
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
        return DeliveryError(error_class, message, status, code, retry_after, named_ids(body))
    if isinstance(error, urllib3.exceptions.HTTPError):
        kind = "TIMEOUT" if isinstance(error, (urllib3.exceptions.TimeoutError,)) or "timed out" in str(error) else "CONNECTION"
        return DeliveryError(ErrorClass.RETRY_SOON, f"{type(error).__name__}: {error}", None, kind)
    return DeliveryError(ErrorClass.RETRY_SOON, f"{type(error).__name__}: {error}", None, "UNEXPECTED")


def named_ids(body: dict[str, Any]) -> tuple[str, ...]:
    """The input ids an error body names in `context.ids`, at its top or in its `errors`."""
    contexts = [body.get("context")] + [e.get("context") for e in body.get("errors") or [] if isinstance(e, dict)]
    return tuple(str(value) for context in contexts if isinstance(context, dict)
                 for value in context.get("ids") or [] if isinstance(context.get("ids"), list))


def record_error(error: Any) -> DeliveryError:
    """A per-record error from a 207 answer."""
    category = getattr(error, "category", None)
    message = getattr(error, "message", None) or "HubSpot rejected this record"
    return DeliveryError(HUBSPOT_CATEGORIES.get(category, ErrorClass.PERMANENT), message, 207, category)


def awaiting_search_index(seconds: float) -> DeliveryError:
    return DeliveryError(ErrorClass.RETRY_SOON, "an earlier attempt may have created this record and its answer "
                         "was lost; HubSpot's search does not show it yet, so the connector waits "
                         f"{seconds:.0f} s more for the search index before creating it again",
                         None, AWAITING_SEARCH_INDEX, retry_after=seconds)


def errors_by_ref(response: Any) -> dict[str, DeliveryError]:
    """The per-input errors of a 207 answer, by the id (or objectWriteTraceId) each one names."""
    failed: dict[str, DeliveryError] = {}
    for error in getattr(response, "errors", None) or []:
        for value in (getattr(error, "context", None) or {}).get("ids", []) or []:
            failed[str(value)] = record_error(error)
    return failed


def named_by(field: str) -> Callable[[DeliveryError, Sequence[dict[str, Any]]], set[int]]:
    """The inputs a whole-batch error names in its context ids, found by one of their fields."""
    def named(error: DeliveryError, inputs: Sequence[dict[str, Any]]) -> set[int]:
        return {position for position, item in enumerate(inputs) if str(item.get(field)) in error.refs}
    return named
