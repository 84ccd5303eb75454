"""Pre-signed Okendo deliveries for the ingest benchmark, built from the shipped samples.

Each request has a unique message id and resource id, and is signed with `standardwebhooks`
(the scheme Svix signs with) exactly as Svix signs a delivery, before the clock starts. Every cycle through the
topics is another shopper (email and customer id), so delivering them writes many contacts,
as a store's burst of webhooks would, not one contact over and over.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

from connector.samples import sample_paths

SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

_ID_KEYS = ("reviewId", "loyaltyCustomerId", "loyaltyTransactionId", "surveyResponseId")


def _templates() -> list[dict]:
    return [json.loads(path.read_bytes()) for path in sample_paths()]


def signed_requests(count: int, label: str, secret: str = SECRET) -> list[tuple[dict[str, str], bytes]]:
    """`count` (headers, body) pairs, message ids `{label}-{n}`, cycling through every topic."""
    templates = _templates()
    webhook = Webhook(secret)
    now = datetime.now(tz=timezone.utc)
    timestamp = str(int(now.timestamp()))
    requests = []
    for n in range(count):
        document = json.loads(json.dumps(templates[n % len(templates)]))
        document["sequenceNumber"] = str(6_000_000_000_000 + n)
        resource = document["resource"]
        for key in _ID_KEYS:
            if key in resource:
                resource[key] = f"{label}-{n}"
        shopper = f"{label}-{n // len(templates)}"
        if "reviewer" in resource:
            resource["reviewer"]["email"] = f"shopper-{shopper}@example.com"
        if "customer" in resource:
            resource["customer"].update(email=f"shopper-{shopper}@example.com", customerId=f"customer-{shopper}")
        body = json.dumps(document).encode()
        message_id = f"msg_{label}_{n}"
        requests.append(({
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": webhook.sign(message_id, now, body.decode()),
            "content-type": "application/json",
        }, body))
    return requests
