"""Where alerts go: one module per kind of target behind the small interface in `base`."""

from __future__ import annotations

from connector.alerts.config import AlertsConfig, AlertTargetConfig
from connector.alerts.targets.base import SendError, Target
from connector.alerts.targets.email import EmailTarget
from connector.alerts.targets.slack import SlackTarget
from connector.alerts.targets.webhook import WebhookTarget

_KINDS: dict[str, type[Target]] = {"webhook": WebhookTarget, "slack": SlackTarget, "email": EmailTarget}


def build_target(name: str, config: AlertTargetConfig) -> Target:
    return _KINDS[config.type](name, config)


def build_targets(config: AlertsConfig) -> dict[str, Target]:
    return {name: build_target(name, target) for name, target in config.targets.items()}


__all__ = ["SendError", "Target", "build_target", "build_targets"]
