"""A generic JSON webhook: one POST per alert, with an idempotency key to deduplicate on.

The body: `{"id", "condition", "group", "title", "text", "at", "link", "facts", "test", "repeat"}`.
`id` (also the `Idempotency-Key` header) is the same on every try of one message, so a receiver
that may see a message twice (a crash right after it answered; see docs/alerts.md) can drop the second.
"""

from __future__ import annotations

from typing import Any

from connector.alerts.message import Outgoing
from connector.alerts.targets.base import HttpTarget


class WebhookTarget(HttpTarget):
    label = "JSON webhook"

    def headers(self, outgoing: Outgoing) -> dict[str, str]:
        headers = {"Idempotency-Key": outgoing.key, "User-Agent": "okendo-crm-connector-alerts"}
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        return headers

    def document(self, outgoing: Outgoing) -> dict[str, Any]:
        return {"id": outgoing.key, **outgoing.alert.to_json(), "test": outgoing.test, "repeat": outgoing.repeat}
