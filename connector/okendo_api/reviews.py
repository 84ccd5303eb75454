"""Okendo's review list, one page at a time.

https://docs.okendo.io/merchant-rest-api/endpoints/reviews: `GET /reviews` takes `limit` (1-100,
default 25), `status` (`approved`, `pending` or `rejected`; default `approved`), `orderBy`
(`date` or `rating`, then `asc` or `desc`; default `date desc`) and `lastEvaluated` (the cursor
inside `nextUrl`), and answers `{"reviews": [...], "nextUrl": "/reviews?..."}`, `nextUrl`
absent on the last page. Each review has the fields of the webhook's `review` resource.

A page is returned with what was asked and when: the moment a snapshot was read is what orders
it against webhook events (connector.backfill.snapshots).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.okendo_api.transport import OkendoApiError, Transport, shorten

REVIEWS_PATH = "/reviews"
STATUSES = ("approved", "pending", "rejected")
ORDERS = tuple(f"{key} {direction}" for key in ("date", "rating") for direction in ("asc", "desc"))
MAX_LIMIT = 100
# The ledger's resource ids hold this many characters (connector.ledger.models.RESOURCE_ID_MAX): a
# longer id could only be stored cut, and then never matched again. Okendo's ids are UUIDs.
MAX_ID_LENGTH = 255


@dataclass(frozen=True)
class ReviewPage:
    reviews: list[dict[str, Any]]  # the page's reviews that carry a reviewId, in Okendo's order
    problems: list[str]  # what was left out of the page, and why (never another review's data)
    next_url: str | None  # absolute, on the API's own origin; None on the last page
    request: str  # "GET /enterprise/reviews?..." as sent (no credentials)
    requested_at: datetime  # UTC, when the request that answered went out


class Reviews(Transport):
    def review_page(self, status: str, *, next_url: str | None = None, order_by: str = "date desc",
                    limit: int = MAX_LIMIT) -> ReviewPage:
        """The first page of reviews of `status`, or the page at `next_url` (from an earlier page)."""
        if status not in STATUSES:
            raise ValueError(f"review status {status!r}: Okendo lists {', '.join(STATUSES)}")
        if order_by not in ORDERS:
            raise ValueError(f"review order {order_by!r}: Okendo sorts by {', '.join(ORDERS)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"review page size {limit}: Okendo accepts 1 to {MAX_LIMIT}")
        if next_url is None:
            answer = self._exchange("GET", f"{self.base_url}{REVIEWS_PATH}",
                                    params={"status": status, "orderBy": order_by, "limit": limit})
        else:
            # Checked again: a cursor kept from an earlier run never takes the credentials elsewhere.
            answer = self._exchange("GET", self._next_url(next_url) or "")
        body = answer.body
        if not isinstance(body, dict) or not isinstance(body.get("reviews"), list):
            raise OkendoApiError(f"Okendo's answer to {answer.request} has no reviews list: "
                                 f"{shorten(json.dumps(body), 200)}; check okendo.api_base_url ({self.base_url})")
        reviews: list[dict[str, Any]] = []
        problems: list[str] = []
        for position, item in enumerate(body["reviews"], start=1):
            review_id = item.get("reviewId") if isinstance(item, dict) else None
            if isinstance(review_id, str) and 0 < len(review_id) <= MAX_ID_LENGTH:
                reviews.append(item)
                continue
            # Named by place (and id) only: whatever else the item holds stays out of the message.
            if not isinstance(item, dict):
                what = "is not a JSON object"
            elif isinstance(review_id, str) and review_id:
                what = f"({review_id[:40]}…): its reviewId is longer than {MAX_ID_LENGTH} characters"
            else:
                what = "has no reviewId"
            problems.append(f"review {position} of the page from {answer.request} {what}; left out")
        return ReviewPage(reviews, problems, self._next_url(body.get("nextUrl")), answer.request, answer.sent_at)
