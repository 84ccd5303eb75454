"""Okendo's webhook vocabulary, kept as data.

Everything the connector knows about Okendo's wire format lives here, so a new
resource type is a new row, not new code. Source: ../shared/okendo/REFERENCE.md
(§2 envelope, §4 resource types and topics, §5 schemas, §6 customer identity).
"""

from __future__ import annotations

# resourceType -> the resource field that is its primary key (REFERENCE.md §5).
RESOURCE_ID_FIELDS: dict[str, str] = {
    "review": "reviewId",
    "loyalty_customer": "loyaltyCustomerId",
    "loyalty_earning_transaction": "loyaltyTransactionId",
    "loyalty_redemption_transaction": "loyaltyTransactionId",
    "loyalty_adjustment_transaction": "loyaltyTransactionId",
    "survey_response": "surveyResponseId",
}

# resourceType -> path to the shopper's email inside the resource (REFERENCE.md §6).
# Reviews carry only the reviewer; every other resource carries `customer`.
CUSTOMER_EMAIL_PATHS: dict[str, tuple[str, ...]] = {
    "review": ("reviewer", "email"),
    "loyalty_customer": ("customer", "email"),
    "loyalty_earning_transaction": ("customer", "email"),
    "loyalty_redemption_transaction": ("customer", "email"),
    "loyalty_adjustment_transaction": ("customer", "email"),
    "survey_response": ("customer", "email"),
}

# Every documented event uses one of these verbs (REFERENCE.md §4).
TOPICS: frozenset[str] = frozenset({"create", "update", "delete"})

# The envelope keys every event must carry (REFERENCE.md §2.1). `version` is
# informative only: it echoes the subscription's version.
ENVELOPE_KEYS: tuple[str, ...] = ("resource", "resourceType", "sequenceNumber", "topic")

SUBSCRIPTION_API_VERSION = "2025-02-01"


def event_name(resource_type: str, topic: str) -> str:
    """Okendo's event name: `review.create`, `loyalty_customer.delete`, ..."""
    return f"{resource_type}.{topic}"
