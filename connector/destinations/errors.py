"""What went wrong with a CRM call, and what the worker should do about it.

Every failure is classified into one of four classes; the CRM's own message
is kept verbatim so the status page can show it. The vocabularies of both
CRMs are mapped as data (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm,
https://developers.hubspot.com/docs/api-reference/error-handling).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ErrorClass(str, enum.Enum):
    RETRY_SOON = "retry_soon"  # transient: 429, 5xx, timeouts, dropped connections, record locks
    RETRY_LATER = "retry_later"  # a quota is spent: wait hours, not seconds
    REAUTHENTICATE = "reauthenticate"  # the credentials were refused
    PERMANENT = "permanent"  # the request itself is wrong; retrying cannot help


@dataclass
class DeliveryError(Exception):
    error_class: ErrorClass
    message: str
    status: int | None = None  # the HTTP status, when there was a response
    code: str | None = None  # the CRM's error code (errorCode / statusCode / category)
    retry_after: float | None = None  # seconds, when the CRM said (Retry-After) or its policy implies
    refs: tuple[str, ...] = ()  # the inputs a whole-batch error names (HubSpot's context ids), if any
    # The fields the CRM found fault with, each with its code: (("email", "INVALID_EMAIL"),).
    fields: tuple[tuple[str, str], ...] = ()
    # The HTTP exchange the error came from (wire.Exchange), so a failed attempt keeps what was sent and
    # answered; None when nothing was sent (a target not found yet, a token that could not be fetched).
    exchange: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        parts = [self.error_class.value]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        return f"{' '.join(parts)}: {self.message}"

    @property
    def retryable(self) -> bool:
        return self.error_class in (ErrorClass.RETRY_SOON, ErrorClass.RETRY_LATER, ErrorClass.REAUTHENTICATE)


# Salesforce errorCode / statusCode -> class. Anything not listed is permanent
# (INVALID_FIELD, REQUIRED_FIELD_MISSING, STRING_TOO_LONG, DUPLICATES_DETECTED,
# DUPLICATE_VALUE, MALFORMED_ID, INVALID_CROSS_REFERENCE_KEY, ...).
SALESFORCE_CODES: dict[str, ErrorClass] = {
    "UNABLE_TO_LOCK_ROW": ErrorClass.RETRY_SOON,
    "SERVER_UNAVAILABLE": ErrorClass.RETRY_SOON,
    "REQUEST_RUNNING_TOO_LONG": ErrorClass.RETRY_SOON,
    "QUERY_TIMEOUT": ErrorClass.RETRY_SOON,
    "REQUEST_LIMIT_EXCEEDED": ErrorClass.RETRY_LATER,
    "TXN_SECURITY_METERING_ERROR": ErrorClass.RETRY_LATER,
    "INVALID_SESSION_ID": ErrorClass.REAUTHENTICATE,
    "INVALID_AUTH_HEADER": ErrorClass.REAUTHENTICATE,
    # Not allowed to this user, whatever the status it comes with (a Metadata API fault is a 500).
    "INSUFFICIENT_ACCESS": ErrorClass.PERMANENT,
}

# HubSpot 429 policies (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines):
# how long until a retry can work.
HUBSPOT_RATE_POLICIES: dict[str, tuple[ErrorClass, float]] = {
    "TEN_SECONDLY_ROLLING": (ErrorClass.RETRY_SOON, 10.0),
    "SECONDLY": (ErrorClass.RETRY_SOON, 1.0),
    "DAILY": (ErrorClass.RETRY_LATER, 3600.0),
}


# The code of a retried create that waits for a search index to catch up before creating again.
AWAITING_SEARCH_INDEX = "AWAITING_SEARCH_INDEX"

# Per-field codes that mean the CRM refuses the value itself, whatever else the record holds: a key
# with such a value names no record the CRM can ever hold (HubSpot's INVALID_EMAIL,
# https://legacydocs.hubspot.com/docs/faq/how-does-hubspot-validate-email-addresses; Salesforce's
# INVALID_EMAIL_ADDRESS, https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_concepts_core_data_objects.htm).
VALUE_REFUSALS = frozenset({"INVALID_EMAIL", "INVALID_EMAIL_ADDRESS"})


def refuses_value(error: DeliveryError | None, field: str) -> str | None:
    """The code with which the CRM refused this field's value, when that alone failed the record."""
    if error is None or error.error_class != ErrorClass.PERMANENT or not error.fields:
        return None
    if any(name.lower() != field.lower() for name, _ in error.fields):
        return None  # something else was wrong too: the value may be fine
    return next((code for _, code in error.fields if code in VALUE_REFUSALS), None)


def classify_status(status: int | None) -> ErrorClass:
    """The class an HTTP status implies when the body says nothing more specific."""
    if status is None or status == 429 or status >= 500 or status == 408:
        return ErrorClass.RETRY_SOON
    if status == 401:
        return ErrorClass.REAUTHENTICATE
    return ErrorClass.PERMANENT


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by either CRM)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
