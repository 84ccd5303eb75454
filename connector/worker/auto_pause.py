"""When a batch's failure is the destination's, not its records': pause instead of killing deliveries.

Two failures say nothing about the records and everything about the CRM's set-up:
- the credentials were refused, even after the one re-authentication the
  destination makes (an expired or revoked HubSpot token, a Salesforce user
  deactivated);
- every record of the batch failed with one and the same schema error: a
  property, field or object the mappings write does not exist in the CRM.
Retrying those records or sending them to `dead` one by one only turns one
configuration problem into thousands of dead deliveries, each needing a replay.
The destination is paused with the reason and the fix; its deliveries wait,
with their attempt given back, until an operator resumes it.

The schema errors are the CRMs' own codes, as data:
https://developers.hubspot.com/docs/api-reference/error-handling (a batch write naming
an unknown property is a 400 VALIDATION_ERROR whose message carries PROPERTY_DOESNT_EXIST),
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm.
"""

from __future__ import annotations

from collections.abc import Sequence

from connector.destinations.base import FAILED, Result
from connector.destinations.errors import DeliveryError, ErrorClass

# Per destination kind: error codes, or markers in the CRM's message, that mean "the CRM lacks
# what the mappings write", never "this record is wrong".
SCHEMA_ERRORS: dict[str, tuple[str, ...]] = {
    "hubspot": ("PROPERTY_DOESNT_EXIST", "OBJECT_TYPE_NOT_FOUND", "MISSING_SCOPES"),
    "salesforce": ("INVALID_FIELD", "INVALID_TYPE", "INVALID_FIELD_FOR_INSERT_UPDATE", "NO_SUCH_COLUMN"),
}

# Per destination kind: (code, HTTP status) of a whole call refused for what its URL names. Every
# Salesforce write is a Collections call, whose per-record errors come in a 200 answer: a 404 for the
# call itself means the object (or external id field) in its URL does not exist or is not visible.
WHOLE_CALL_SCHEMA_ERRORS: dict[str, frozenset[tuple[str, int]]] = {
    "salesforce": frozenset({("NOT_FOUND", 404)}),
}

# What the operator does about it, per destination kind.
SCHEMA_FIXES: dict[str, str] = {
    "hubspot": "create the missing properties with `connector setup hubspot` (or check the private app's "
               "scopes), then resume the destination",
    "salesforce": "create the missing objects and fields and give the integration user access to them with "
                  "`connector setup salesforce` (README: \"Salesforce: what the shipped mappings need\"), then "
                  "resume the destination",
}
CREDENTIALS_FIX = ("fix the credentials in the environment (see `connector check --remote`), reload, then resume "
                   "the destination")


def reason_to_pause(kind: str, results: Sequence[Result]) -> str | None:
    """Why the destination should be paused after this batch, or None when its records are to blame."""
    errors = [result.error for result in results if result.status == FAILED and result.error is not None]
    if not results or len(errors) != len(results):
        return None
    if all(error.error_class == ErrorClass.REAUTHENTICATE for error in errors):
        return f"the CRM refused the credentials ({errors[0]}): {CREDENTIALS_FIX}"
    if len({str(error) for error in errors}) == 1 and is_schema_error(kind, errors[0]):
        fix = SCHEMA_FIXES.get(kind, "fix the CRM's set-up, then resume the destination")
        count = f"all {len(errors)} records of a batch" if len(errors) > 1 else "a record"
        return f"{count} failed with the same schema error ({errors[0]}): {fix}"
    return None


def is_schema_error(kind: str, error: DeliveryError) -> bool:
    if error.error_class != ErrorClass.PERMANENT:
        return False
    if ((error.code or ""), error.status) in WHOLE_CALL_SCHEMA_ERRORS.get(kind, frozenset()):
        return True
    markers = SCHEMA_ERRORS.get(kind, ())
    return (error.code or "") in markers or any(marker in error.message for marker in markers)
