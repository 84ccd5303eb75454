"""One loyalty member's current state.

https://docs.okendo.io/merchant-rest-api/endpoints/loyalty: `GET /loyalty/customers` takes
`email` or `loyaltyCustomerId` (not both) and answers
`{"loyaltyCustomer": {"loyaltyCustomerId", "points": {"balance"}, "status", "vipTierName",
"minimumVipTierName"}}`, or 404 when the shopper is not a member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.okendo_api.transport import OkendoApiError, Transport, shorten

LOYALTY_CUSTOMERS_PATH = "/loyalty/customers"


@dataclass(frozen=True)
class LoyaltyAnswer:
    member: dict[str, Any] | None  # None: not a member (404)
    request: str  # "GET /enterprise/loyalty/customers?email=..." as sent
    requested_at: datetime


class Loyalty(Transport):
    def loyalty_member(self, *, email: str | None = None, loyalty_customer_id: str | None = None) -> LoyaltyAnswer:
        if (email is None) == (loyalty_customer_id is None):
            raise ValueError("look a loyalty member up by email or by loyalty_customer_id, exactly one of them")
        params = {"email": email} if email is not None else {"loyaltyCustomerId": loyalty_customer_id}
        answer = self._exchange("GET", f"{self.base_url}{LOYALTY_CUSTOMERS_PATH}", params=params,
                                absent_is_answer=True)
        if answer.status == 404:
            return LoyaltyAnswer(None, answer.request, answer.sent_at)
        body = answer.body
        member = body.get("loyaltyCustomer") if isinstance(body, dict) else None
        if not isinstance(member, dict) or not isinstance(member.get("loyaltyCustomerId"), str):
            raise OkendoApiError(f"Okendo's answer to GET {LOYALTY_CUSTOMERS_PATH} has no loyaltyCustomer with a "
                                 f"loyaltyCustomerId: {shorten(json.dumps(body), 200)}; check okendo.api_base_url "
                                 f"({self.base_url})", answer.status)
        return LoyaltyAnswer(member, answer.request, answer.sent_at)

    def loyalty_customer(self, *, email: str | None = None,
                         loyalty_customer_id: str | None = None) -> dict[str, Any] | None:
        """The member's state, or None when Okendo has no such member."""
        return self.loyalty_member(email=email, loyalty_customer_id=loyalty_customer_id).member
