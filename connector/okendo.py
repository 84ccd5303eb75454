"""Okendo's webhook vocabulary, kept as data.

Everything the connector knows about Okendo's wire format lives here, so a new
resource type is a new row, not new code. Sources: Okendo's webhook topics page
(https://docs.okendo.io/webhooks/topics: the envelope, the resource types and topics, the
payloads and the customer fields in them) and the webhook subscription API
(https://docs.okendo.io/merchant-rest-api/endpoints/webhooks: the resourceType enum).
"""

from __future__ import annotations

# resourceType -> the resource field that is its primary key (https://docs.okendo.io/webhooks/topics).
RESOURCE_ID_FIELDS: dict[str, str] = {
    "review": "reviewId",
    "loyalty_customer": "loyaltyCustomerId",
    "loyalty_earning_transaction": "loyaltyTransactionId",
    "loyalty_redemption_transaction": "loyaltyTransactionId",
    "loyalty_adjustment_transaction": "loyaltyTransactionId",
    "survey_response": "surveyResponseId",
}

# resourceType -> path to the shopper's email inside the resource (https://docs.okendo.io/webhooks/topics).
# Reviews carry only the reviewer; every other resource carries `customer`.
CUSTOMER_EMAIL_PATHS: dict[str, tuple[str, ...]] = {
    "review": ("reviewer", "email"),
    "loyalty_customer": ("customer", "email"),
    "loyalty_earning_transaction": ("customer", "email"),
    "loyalty_redemption_transaction": ("customer", "email"),
    "loyalty_adjustment_transaction": ("customer", "email"),
    "survey_response": ("customer", "email"),
}

# Every documented event uses one of these verbs (https://docs.okendo.io/webhooks/topics).
TOPICS: frozenset[str] = frozenset({"create", "update", "delete"})

# The envelope keys every event must carry (https://docs.okendo.io/webhooks/topics). `version` is
# informative only: it echoes the subscription's version.
ENVELOPE_KEYS: tuple[str, ...] = ("resource", "resourceType", "sequenceNumber", "topic")

SUBSCRIPTION_API_VERSION = "2025-02-01"


def event_name(resource_type: str, topic: str) -> str:
    """Okendo's event name: `review.create`, `loyalty_customer.delete`, ..."""
    return f"{resource_type}.{topic}"


# The resource fields Okendo documents for each resourceType, as paths inside
# `resource` (`[]` stands for the items of a list). A payload leaves out what is
# unset, so the shipped samples miss some of them (points, vipTierName, a review's
# reply): `connector check` counts these as known alongside the samples' paths, and
# warns about a mapping path found in neither. Source: Okendo's example body for
# each topic, https://docs.okendo.io/webhooks/topics, and the loyalty data summary,
# https://support.okendo.io/en/articles/12144147-send-loyalty-data-with-webhooks.
_LOYALTY_TRANSACTION_FIELDS: tuple[str, ...] = (
    "loyaltyTransactionId", "loyaltyCustomerId", "subscriberId", "amount", "customer.email",
    "customer.customerId", "date", "status", "internalReason", "notificationText",
)

DOCUMENTED_RESOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "review": (
        "reviewId", "productId", "productName", "productVariantName", "rating", "title", "body",
        "dateCreated", "dateUpdated", "status", "isRecommended", "containsProfanity", "helpfulCount",
        "unhelpfulCount", "reviewer.name", "reviewer.displayName", "reviewer.email", "reviewer.isVerified",
        "reviewer.location.country.code", "reviewer.location.country.name", "reviewer.location.zoneCode",
        "reply.body", "reply.dateCreated", "order.orderId", "order.orderNumber", "media[]", "tags[]",
        "attributesWithRating[]", "reward",
    ),
    "loyalty_customer": (
        "loyaltyCustomerId", "subscriberId", "customer.customerId", "customer.email", "customer.firstName",
        "customer.lastName", "status", "points.balance", "points.pending", "points.spent", "vipTierName",
        "minimumVipTierName", "birthday.day", "birthday.month", "birthday.year", "dateCreated",
    ),
    "loyalty_earning_transaction": _LOYALTY_TRANSACTION_FIELDS,
    "loyalty_redemption_transaction": _LOYALTY_TRANSACTION_FIELDS,
    "loyalty_adjustment_transaction": _LOYALTY_TRANSACTION_FIELDS,
    "survey_response": (
        "subscriberId", "surveyResponseId", "surveyId", "surveyName", "dateCreated", "channel",
        "channelSurveyId", "channelSurveyDescription", "customer.customerId", "customer.email",
        "order.remoteOrderId", "answeredQuestions[].id", "answeredQuestions[].type", "answeredQuestions[].text",
        "answeredQuestions[].answer", "answeredQuestions[].answerNpsCategory", "answeredQuestions[].customAnswer",
        "answeredQuestions[].customAnswerOptionText", "answeredQuestions[].profileQuestionId",
        "answeredQuestions[].marketingOptIn", "reward.description", "reward.type", "reward.value",
    ),
}
