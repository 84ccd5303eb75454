"""What an alert says: the same content for every target, fixed when the alert is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from connector.alerts.config import AlertsConfig

# Condition names: the outbox's `condition` column, the webhook's `condition` field.
DEAD = "dead"
PAUSED = "paused"
NO_LIVE_WORKER = "no_live_worker"
OLDEST_WAITING = "oldest_waiting"
WEBHOOKS_503 = "webhooks_503"
TEST = "test"


@dataclass(frozen=True)
class Alert:
    condition: str
    group: str  # what the condition is about: `hubspot PROPERTY_DOESNT_EXIST`, `salesforce`, `receiver`
    title: str  # one line: an email's subject, a chat message's first line
    text: str  # what happened and what to do
    at: datetime  # when it was found
    link: str | None = None  # the status page's list of what the alert is about
    facts: dict[str, Any] = field(default_factory=dict)  # counts and names, for machines reading the webhook

    def to_json(self) -> dict[str, Any]:
        return {"condition": self.condition, "group": self.group, "title": self.title, "text": self.text,
                "at": self.at.isoformat(), "link": self.link, "facts": self.facts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        return cls(data["condition"], data["group"], data["title"], data["text"],
                   datetime.fromisoformat(data["at"]), data.get("link"), dict(data.get("facts") or {}))


@dataclass(frozen=True)
class Outgoing:
    """One alert on its way to one target."""

    alert: Alert
    key: str  # the same on every try of one outbox row: a receiver may deduplicate on it
    repeat: bool = False  # an earlier try was interrupted (a crash) and may have arrived

    @property
    def test(self) -> bool:
        return self.alert.condition == TEST


def status_link(config: AlertsConfig, path: str, **query: str) -> str:
    """The status page's address for `path` (and a filter): absolute with `alerts.status_url`, else the path."""
    suffix = f"{path}?{urlencode(query)}" if query else path
    return f"{config.status_url}{suffix}" if config.status_url else suffix
