"""A client of Okendo's Merchant REST API (https://docs.okendo.io/merchant-rest-api).

transport.py sends one request (authentication, version header, pacing, retries, errors);
subscriptions.py, reviews.py and loyalty.py each hold one group of endpoints; OkendoApi is all
of them on one session, as `connector okendo` and the backfills use it.
"""

from connector.okendo_api.loyalty import Loyalty, LoyaltyAnswer
from connector.okendo_api.reviews import ReviewPage, Reviews
from connector.okendo_api.subscriptions import CreatedSubscription, Subscription, Subscriptions
from connector.okendo_api.transport import OkendoApiError, error_details


class OkendoApi(Subscriptions, Reviews, Loyalty):
    """Every operation the connector uses, sharing one session and one pace."""


__all__ = ["CreatedSubscription", "LoyaltyAnswer", "OkendoApi", "OkendoApiError", "ReviewPage", "Subscription",
           "error_details"]
