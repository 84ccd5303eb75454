"""Okendo's webhook subscription endpoints: list them, create one.

https://docs.okendo.io/merchant-rest-api/endpoints/webhooks: `GET /webhook_subscriptions` pages
with `nextUrl`; `POST /webhook_subscriptions` answers 200 with the new subscription, including its
signing secret, which Okendo shows once. The secret only ever lives in memory: it is returned to
the caller and never logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connector import okendo
from connector.okendo_api.transport import API_VERSION, OkendoApiError, Transport, optional_str, shorten

SUBSCRIPTIONS_PATH = "/webhook_subscriptions"
PAGE_SIZE = 100  # the largest `limit` the list endpoint accepts (documented: 1-100)
MAX_PAGES = 1000  # a `nextUrl` loop must end somewhere

# The create answer's secret field is not named in Okendo's docs:
# `webhookSecret` is what the api-evangelist catalogue (github.com/api-evangelist/okendo, a
# secondary, machine-generated source) calls it; the others are guesses
# we accept too, and failing those, any top-level `whsec_` value.
SECRET_FIELDS = ("webhookSecret", "secret", "signingSecret", "webhookSigningSecret")


@dataclass(frozen=True)
class Subscription:
    """A webhook subscription as Okendo describes it, with its pairs as event names.

    https://docs.okendo.io/merchant-rest-api/endpoints/webhooks
    """

    subscription_id: str | None
    endpoint_url: str | None
    enabled: bool | None
    version: str | None
    events: tuple[str, ...]
    created: str | None

    @classmethod
    def from_json(cls, data: Any) -> Subscription:
        if not isinstance(data, dict):
            raise OkendoApiError(f"Okendo sent a subscription that is not a JSON object: {shorten(repr(data))}")
        pairs = data.get("subscriptions") or []
        events = tuple(
            okendo.event_name(str(pair.get("resourceType")), str(pair.get("topic")))
            for pair in pairs if isinstance(pair, dict)
        )
        return cls(
            subscription_id=optional_str(data.get("webhookSubscriptionId")),
            endpoint_url=optional_str(data.get("endpointUrl")),
            enabled=data.get("isEnabled") if isinstance(data.get("isEnabled"), bool) else None,
            version=optional_str(data.get("version")),
            events=events,
            created=optional_str(data.get("dateCreated")),
        )


@dataclass(frozen=True)
class CreatedSubscription:
    subscription: Subscription
    secret: str | None  # None when the answer carried none we recognise
    fields: tuple[str, ...]  # the answer's top-level keys, to explain a missing secret


class Subscriptions(Transport):
    """The two subscription operations, on the shared transport."""

    def list_subscriptions(self) -> list[Subscription]:
        """Every subscription, following `nextUrl` page after page."""
        url: str | None = f"{self.base_url}{SUBSCRIPTIONS_PATH}"
        params: dict[str, Any] | None = {"limit": PAGE_SIZE}
        found: list[Subscription] = []
        for _page in range(MAX_PAGES):
            if url is None:
                return found
            body = self._call("GET", url, params=params)
            if not isinstance(body, dict) or not isinstance(body.get("webhookSubscriptions"), list):
                raise OkendoApiError(f"Okendo's answer to GET {SUBSCRIPTIONS_PATH} has no webhookSubscriptions list: "
                                     f"{shorten(json.dumps(body))}; check okendo.api_base_url ({self.base_url})")
            found.extend(Subscription.from_json(item) for item in body["webhookSubscriptions"])
            url, params = self._next_url(body.get("nextUrl")), None
        raise OkendoApiError(f"Okendo kept sending a nextUrl after {MAX_PAGES} pages; stopped listing")

    def create_subscription(self, endpoint_url: str, events: Iterable[str]) -> CreatedSubscription:
        pairs = []
        for name in events:
            resource_type, _, topic = name.rpartition(".")
            pairs.append({"resourceType": resource_type, "topic": topic})
        body = self._call("POST", f"{self.base_url}{SUBSCRIPTIONS_PATH}", json_body={
            "endpointUrl": endpoint_url,
            "isEnabled": True,
            "subscriptions": pairs,
            "version": API_VERSION,
        })
        if not isinstance(body, dict):
            raise OkendoApiError("Okendo's answer to the new subscription is not a JSON object; "
                                 "run `connector okendo list` to see whether it was created")
        return CreatedSubscription(Subscription.from_json(body), _find_secret(body), tuple(sorted(body)))


def _find_secret(body: dict[str, Any]) -> str | None:
    for field in SECRET_FIELDS:
        if isinstance(body.get(field), str) and body[field]:
            return body[field]
    return next((value for value in body.values() if isinstance(value, str) and value.startswith("whsec_")), None)
