"""A Slack incoming webhook, or a compatible one (Mattermost, Rocket.Chat, Discord's /slack endpoint).

Slack takes `{"text": ...}` in its mrkdwn and answers 200 `ok`; a revoked or archived hook answers
403/404/410, which no retry can fix (https://api.slack.com/messaging/webhooks#handling_errors).
Text is escaped as https://api.slack.com/reference/surfaces/formatting#escaping asks.
"""

from __future__ import annotations

from typing import Any

from connector.alerts.message import Outgoing
from connector.alerts.targets.base import HttpTarget


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackTarget(HttpTarget):
    label = "Slack webhook"

    def document(self, outgoing: Outgoing) -> dict[str, Any]:
        alert = outgoing.alert
        lines = [f"*{escape(alert.title)}*", escape(alert.text)]
        if alert.link and alert.link.startswith(("http://", "https://")):
            lines.append(f"<{alert.link}|Open the list on the status page>")
        elif alert.link:  # a path only: alerts.status_url is not set
            lines.append(f"On the status page: {escape(alert.link)}")
        if outgoing.repeat:
            lines.append("_(sent again: an earlier try was interrupted and may have arrived)_")
        return {"text": "\n".join(lines)}
