"""A stateful local emulator of Okendo's Merchant REST API: webhook subscriptions here, reviews and
loyalty members in okendo_reads.py.

Point a client at `emulator.base_url` (`http://127.0.0.1:PORT/enterprise`, shaped like Okendo's
`https://api.okendo.io/enterprise`); requests travel over a real socket. What it mirrors is cited
as REFERENCE §n (/work/shared/okendo/REFERENCE.md):

- HTTP Basic: username = the Okendo user id, password = the API key (§8); anything else is 401.
- The `okendo-api-version: 2025-02-01` header (§8: third-party clients report that requests
  without it are rejected [C]); missing or unknown here is a 400 (the status is not documented).
- 2 requests/s sustained with a small burst, then 429 (§8): a token bucket per user id, with a
  `Retry-After` in whole seconds (Okendo's header is not documented; Svix-era APIs send one).
- `GET /webhook_subscriptions` with `limit` (1-100, default 25), `orderBy` (asc|desc, default desc)
  and `lastEvaluated` (a URL-encoded JSON cursor), answering `{webhookSubscriptions, nextUrl}`;
  `POST /webhook_subscriptions` with `endpointUrl`, `isEnabled` and `version` required and
  `subscriptions` as `{resourceType, topic}` pairs, answering 200 with the new object (§8).
- The create answer alone carries the signing secret, under `webhookSecret` (the name the
  api-evangelist catalogue gives [S]; §10 question 5): a list never shows it again (§8: "treat
  the secret as shown once").

Not documented, so chosen here and said so: the 422 body (`{message, errors: [{path, message}]}`),
the form of `nextUrl` (a path relative to the base URL, as Okendo's other APIs page), and that
the endpoint must be HTTPS (Svix refuses plain-HTTP endpoints in production).
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from tests.emulators.base import Emulator, Reply, Request
from tests.emulators.okendo_reads import LIMIT_MESSAGE, OkendoReads, page_limit

BASE_PATH = "/enterprise"
API_VERSION = "2025-02-01"
SUBSCRIBER_ID = "6f1d3b4e-2c1a-4d8e-9a57-0b1c2d3e4f50"  # the merchant store (§8 `subscriberId`)
# The subscription API's resourceType enum as documented (REFERENCE §4, §8).
DOCUMENTED_RESOURCE_TYPES = ("review", "loyalty_adjustment_transaction", "loyalty_customer",
                             "loyalty_earning_transaction", "loyalty_redemption_transaction")
# What a store with Surveys is assumed to be offered besides: survey_response.create only (§4).
DEFAULT_EVENTS = frozenset(
    [f"{resource_type}.{topic}" for resource_type in DOCUMENTED_RESOURCE_TYPES for topic in ("create", "update", "delete")]
    + ["survey_response.create"]
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class OkendoEmulator(OkendoReads, Emulator):
    def __init__(self, *, user_id: str = "b4a1c0de-0000-4000-8000-000000000001", api_key: str = "k" * 32,
                 offered_events: frozenset[str] = DEFAULT_EVENTS, rate: float | None = 2.0, burst: int = 3,
                 secret_field: str | None = "webhookSecret"):
        super().__init__()
        self.user_id = user_id
        self.api_key = api_key
        self.offered_events = offered_events
        self.rate = rate  # requests per second; None: no rate limit
        self.burst = burst
        self.secret_field = secret_field  # None: the create answer carries no secret at all
        self.subscriptions: list[dict[str, Any]] = []
        self.secrets: dict[str, str] = {}  # subscription id -> the secret its create answer carried
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._bucket_lock = threading.Lock()
        self.route("GET", f"{BASE_PATH}/webhook_subscriptions", self._list)
        self.route("POST", f"{BASE_PATH}/webhook_subscriptions", self._create)
        self._init_reads(BASE_PATH)  # GET /reviews and /loyalty/customers (tests/emulators/okendo_reads.py)

    @property
    def base_url(self) -> str:
        return self.url + BASE_PATH

    def add_subscription(self, endpoint_url: str, events: list[str]) -> dict[str, Any]:
        """A subscription made earlier (e.g. in Okendo's admin), without going through the API."""
        with self._lock:
            return self._store(endpoint_url, True, self._pairs(events))

    # --- rate limit, credentials, version -----------------------------------------------------

    def exhaust_rate_limit(self) -> None:
        """Spend the burst, as another client using the same API key would."""
        with self._bucket_lock:
            self._tokens = 0.0
            self._refilled = time.monotonic()

    def _take_token(self) -> float | None:
        """None when the request may go on; else the seconds until one would be allowed."""
        if self.rate is None:
            return None
        with self._bucket_lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
            self._refilled = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self.rate

    def authorize(self, request: Request) -> Reply | None:
        wait = self._take_token()
        if wait is not None:
            return Reply(429, {"message": "Too Many Requests"}, {"Retry-After": str(max(1, math.ceil(wait)))})
        if _basic_credentials(request) != (self.user_id, self.api_key):
            return Reply(401, {"message": "Unauthorized"}, {"WWW-Authenticate": 'Basic realm="Okendo"'})
        version = request.headers.get("okendo-api-version")
        if version is None:
            return Reply(400, {"message": "The okendo-api-version header is required"})
        if version != API_VERSION:
            return Reply(400, {"message": f"Unsupported API version {version!r}; supported: {API_VERSION}"})
        return None

    # --- the two operations (§8) -------------------------------------------------------------------

    def _list(self, request: Request) -> Reply:
        query = {key: values[-1] for key, values in request.query.items()}
        limit = page_limit(query)
        if limit is None:
            return Reply(400, {"message": LIMIT_MESSAGE})
        order = query.get("orderBy", "desc")
        if order not in ("asc", "desc"):
            return Reply(400, {"message": "orderBy must be asc or desc"})
        ordered = sorted(self.subscriptions, key=lambda s: s["_sequence"], reverse=order == "desc")
        start = 0
        if "lastEvaluated" in query:
            try:
                cursor = json.loads(query["lastEvaluated"])
                start = next(i for i, s in enumerate(ordered)
                             if s["webhookSubscriptionId"] == cursor["webhookSubscriptionId"]) + 1
            except (ValueError, TypeError, KeyError, StopIteration):
                return Reply(400, {"message": "lastEvaluated is not a valid cursor"})
        page = ordered[start:start + limit]
        next_url = None
        if start + limit < len(ordered):
            cursor = json.dumps({"webhookSubscriptionId": page[-1]["webhookSubscriptionId"]}, separators=(",", ":"))
            next_url = f"/webhook_subscriptions?limit={limit}&orderBy={order}&lastEvaluated={quote(cursor)}"
        return Reply(200, {"webhookSubscriptions": [_public(s) for s in page], "nextUrl": next_url})

    def _create(self, request: Request) -> Reply:
        try:
            body = request.json()
        except ValueError:
            return Reply(400, {"message": "The request body is not valid JSON"})
        if not isinstance(body, dict):
            return Reply(422, {"message": "Request validation failed",
                               "errors": [{"path": "/", "message": "must be object"}]})
        errors = self._validate(body)
        if errors:
            return Reply(422, {"message": "Request validation failed",
                               "errors": [{"path": path, "message": message} for path, message in errors]})
        stored = self._store(body["endpointUrl"], body["isEnabled"], body.get("subscriptions") or [])
        answer = _public(stored)
        if self.secret_field is not None:
            answer[self.secret_field] = self.secrets[stored["webhookSubscriptionId"]]
        return Reply(200, answer)

    def _validate(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        for required in ("endpointUrl", "isEnabled", "version"):
            if required not in body:
                errors.append(("/", f"must have required property '{required}'"))
        url = body.get("endpointUrl")
        if "endpointUrl" in body:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or not parts.scheme or not parts.netloc:
                errors.append(("/endpointUrl", 'must match format "uri"'))
            elif parts.scheme != "https":
                errors.append(("/endpointUrl", "must be an HTTPS URL"))
        if "isEnabled" in body and not isinstance(body["isEnabled"], bool):
            errors.append(("/isEnabled", "must be boolean"))
        if "version" in body and body["version"] != API_VERSION:
            errors.append(("/version", f"must be equal to one of the allowed values: {API_VERSION}"))
        pairs = body.get("subscriptions", [])
        if not isinstance(pairs, list):
            errors.append(("/subscriptions", "must be array"))
            pairs = []
        offered_types = sorted({name.rpartition(".")[0] for name in self.offered_events})
        for index, pair in enumerate(pairs):
            where = f"/subscriptions/{index}"
            if not isinstance(pair, dict):
                errors.append((where, "must be object"))
                continue
            resource_type, topic = pair.get("resourceType"), pair.get("topic")
            if resource_type not in offered_types:
                errors.append((f"{where}/resourceType",
                               f"must be equal to one of the allowed values: {', '.join(offered_types)}"))
            elif f"{resource_type}.{topic}" not in self.offered_events:
                errors.append((f"{where}/topic", f"topic {topic!r} is not available for {resource_type}"))
        return errors

    def _pairs(self, events: list[str]) -> list[dict[str, str]]:
        return [{"resourceType": name.rpartition(".")[0], "topic": name.rpartition(".")[2]} for name in events]

    def _store(self, endpoint_url: str, enabled: bool, pairs: list[dict[str, str]]) -> dict[str, Any]:
        now = _now()
        subscription = {
            "subscriberId": SUBSCRIBER_ID,
            "webhookSubscriptionId": str(uuid.uuid4()),
            "endpointUrl": endpoint_url,
            "version": API_VERSION,
            "subscriptions": [{"resourceType": p["resourceType"], "topic": p["topic"]} for p in pairs],
            "isEnabled": enabled,
            "dateCreated": now,
            "dateModified": now,
            "_sequence": len(self.subscriptions),
        }
        self.subscriptions.append(subscription)
        # A Svix signing secret: whsec_ and the base64 of 24 random bytes.
        self.secrets[subscription["webhookSubscriptionId"]] = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        return subscription


def _public(subscription: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in subscription.items() if not key.startswith("_")}


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password
