"""Okendo's read endpoints for the emulator: `GET /reviews` and `GET /loyalty/customers`.

Mirrors REFERENCE §8a (/work/shared/okendo/REFERENCE.md), as strict as the documentation lets us be:
- `GET /reviews`: `limit` an integer 1-100 (default 25), `status` approved|pending|rejected
  (default approved), `orderBy` `(date|rating) (asc|desc)` (default `date desc`), `lastEvaluated`
  a URL-encoded JSON cursor; any other value is a 400. The answer is `{"reviews": [...],
  "nextUrl": "/reviews?..."}`, `nextUrl` relative to the base URL and absent on the last page.
  The cursor is the last review's sort key, as DynamoDB's LastEvaluatedKey is (what the name
  suggests), so a review added or deleted between pages neither repeats nor skips the others.
  Deleted reviews are not listed.
- `GET /loyalty/customers`: `email` or `loyaltyCustomerId`, exactly one (else 400), an email
  address and a uuid (else 400); 404 with a JSON message when there is no such member.
Both share the emulator's credentials, version header and 2-per-second bucket (OkendoEmulator.authorize).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from connector.samples import sample_bytes
from tests.emulators.base import Reply, Request

STATUSES = ("approved", "pending", "rejected")
ORDERS = {f"{key} {direction}": (key, direction == "desc") for key in ("date", "rating") for direction in ("asc", "desc")}
REVIEW_QUERY = {"limit", "status", "orderBy", "lastEvaluated"}


LIMIT_MESSAGE = "limit must be an integer from 1 to 100"
# `loyaltyCustomerId` is a uuid (REFERENCE §8a). The query's checks are JSON-schema formats as the
# subscription API's 422 suggests (ajv's "email" and "uuid"), stricter than the connector's own
# email check: a 400 with that body, its shape chosen here (Okendo documents none for this call).
_EMAIL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$", re.IGNORECASE)
_UUID = re.compile(r"^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$", re.IGNORECASE)


def page_limit(query: dict[str, str]) -> int | None:
    """A list endpoint's `limit` (1-100, default 25, REFERENCE §8), or None when it is not one."""
    try:
        limit = int(query.get("limit", "25"))
    except ValueError:
        return None
    return limit if 1 <= limit <= 100 else None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def review_resource(review_id: str, *, email: str, rating: int = 5, created: datetime, status: str = "approved",
                    **fields: Any) -> dict[str, Any]:
    """A review shaped like the webhook sample's resource (REFERENCE §5.1, §8a)."""
    resource = json.loads(sample_bytes("review.create"))["resource"]
    resource.update(reviewId=review_id, rating=rating, dateCreated=_stamp(created), status=status,
                    title=f"Review {review_id}", body=f"Body of {review_id}")
    resource["reviewer"] = {**resource.get("reviewer", {}), "email": email, "name": f"Shopper {review_id}"}
    resource.update(fields)
    return resource


class OkendoReads:
    """Mixed into OkendoEmulator: the review store, the loyalty members and their two endpoints."""

    def _init_reads(self, base_path: str) -> None:
        self.reviews: dict[str, dict[str, Any]] = {}  # reviewId -> review (with its moderation status)
        self.loyalty_customers: dict[str, dict[str, Any]] = {}  # loyaltyCustomerId -> member
        self._emails: dict[str, str] = {}  # lower-cased email -> loyaltyCustomerId
        self._reads_lock = threading.Lock()
        self.route("GET", f"{base_path}/reviews", self._list_reviews)  # type: ignore[attr-defined]
        self.route("GET", f"{base_path}/loyalty/customers", self._loyalty_customer)  # type: ignore[attr-defined]

    # --- what a test seeds ------------------------------------------------------------------------

    def add_review(self, review: dict[str, Any]) -> dict[str, Any]:
        with self._reads_lock:
            self.reviews[review["reviewId"]] = copy.deepcopy(review)
        return review

    def seed_reviews(self, count: int, *, prefix: str = "rev", statuses: tuple[str, ...] = ("approved",),
                     newest: datetime | None = None, step: timedelta = timedelta(hours=7)) -> list[dict[str, Any]]:
        """`count` reviews, the first the newest, each `step` older than the one before, statuses in turn."""
        newest = newest or datetime.now(UTC) - timedelta(minutes=5)
        made = [review_resource(f"{prefix}-{index:05d}", email=f"shopper{index % 97}@example.com",
                                rating=1 + index % 5, created=newest - step * index,
                                status=statuses[index % len(statuses)])
                for index in range(count)]
        for review in made:
            self.add_review(review)
        return made

    def update_review(self, review_id: str, **fields: Any) -> dict[str, Any]:
        with self._reads_lock:
            self.reviews[review_id].update(fields)
            return copy.deepcopy(self.reviews[review_id])

    def delete_review(self, review_id: str) -> None:
        with self._reads_lock:
            del self.reviews[review_id]

    def add_loyalty_customer(self, email: str, *, balance: float = 0, status: str = "enrolled",
                             vip_tier: str | None = None, loyalty_customer_id: str | None = None) -> dict[str, Any]:
        member = {"loyaltyCustomerId": loyalty_customer_id or str(uuid.uuid4()), "points": {"balance": balance},
                  "status": status, "vipTierName": vip_tier, "minimumVipTierName": None}
        with self._reads_lock:
            self.loyalty_customers[member["loyaltyCustomerId"]] = member
            self._emails[email.lower()] = member["loyaltyCustomerId"]
        return member

    # --- GET /reviews ------------------------------------------------------------------------------

    def _list_reviews(self, request: Request) -> Reply:
        query = {key: values[-1] for key, values in request.query.items()}
        unknown = sorted(set(query) - REVIEW_QUERY)
        if unknown:
            return Reply(400, {"message": f"Unknown query parameter(s): {', '.join(unknown)}"})
        limit = page_limit(query)
        if limit is None:
            return Reply(400, {"message": LIMIT_MESSAGE})
        status = query.get("status", "approved")
        if status not in STATUSES:
            return Reply(400, {"message": f"status must be one of {', '.join(STATUSES)}"})
        order = query.get("orderBy", "date desc")
        if order not in ORDERS:
            return Reply(400, {"message": "orderBy must be one of " + ", ".join(ORDERS)})
        key, descending = ORDERS[order]

        def sort_key(review: dict[str, Any]) -> tuple:
            return ((review["rating"],) if key == "rating" else ()) + (review["dateCreated"], review["reviewId"])

        with self._reads_lock:
            chosen = sorted((r for r in self.reviews.values() if r.get("status", "approved") == status),
                            key=sort_key, reverse=descending)
            chosen = [copy.deepcopy(review) for review in chosen]
        if "lastEvaluated" in query:
            # The cursor's values must have the types of the keys they stand for (a string date and
            # id, an integer rating): anything else is a 400 naming the parameter, never a 500.
            try:
                cursor = json.loads(query["lastEvaluated"])
                names = (["rating"] if key == "rating" else []) + ["dateCreated", "reviewId"]
                after = tuple(cursor[name] for name in names)
                types_ok = all(isinstance(value, int) and not isinstance(value, bool) if name == "rating"
                               else isinstance(value, str) for name, value in zip(names, after))
            except (ValueError, TypeError, KeyError):
                types_ok = False
            if not types_ok:
                return Reply(400, {"message": "lastEvaluated is not a valid cursor"})
            chosen = [r for r in chosen if (sort_key(r) < after if descending else sort_key(r) > after)]
        page, more = chosen[:limit], len(chosen) > limit
        answer: dict[str, Any] = {"reviews": page}
        if more:
            last = page[-1]
            cursor = {"reviewId": last["reviewId"], "dateCreated": last["dateCreated"]}
            if key == "rating":
                cursor["rating"] = last["rating"]
            answer["nextUrl"] = (f"/reviews?limit={limit}&status={status}&orderBy={quote(order)}"
                                 f"&lastEvaluated={quote(json.dumps(cursor, separators=(',', ':')))}")
        return Reply(200, answer)

    # --- GET /loyalty/customers --------------------------------------------------------------------

    def _loyalty_customer(self, request: Request) -> Reply:
        query = {key: values[-1] for key, values in request.query.items()}
        given = [name for name in ("email", "loyaltyCustomerId") if query.get(name)]
        if len(given) != 1 or set(query) - {"email", "loyaltyCustomerId"}:
            return Reply(400, {"message": "Provide exactly one of email or loyaltyCustomerId"})
        if given == ["email"] and not _EMAIL.match(query["email"]):
            return Reply(400, {"message": "Request validation failed",
                               "errors": [{"path": "/query/email", "message": 'must match format "email"'}]})
        if given == ["loyaltyCustomerId"] and not _UUID.match(query["loyaltyCustomerId"]):
            return Reply(400, {"message": "Request validation failed",
                               "errors": [{"path": "/query/loyaltyCustomerId", "message": 'must match format "uuid"'}]})
        with self._reads_lock:
            if given == ["email"]:
                member_id = self._emails.get(query["email"].lower())
            else:
                member_id = query["loyaltyCustomerId"]
            member = self.loyalty_customers.get(member_id or "")
            member = copy.deepcopy(member) if member else None
        if member is None:
            return Reply(404, {"message": "Loyalty customer not found"})
        return Reply(200, {"loyaltyCustomer": member})
