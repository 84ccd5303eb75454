"""The `alerts:` section of config.yaml: where alerts go, which conditions raise them, how often.

Target URLs (a Slack webhook URL is its own credential) and SMTP passwords are secret keys
(`webhook_url`, `bearer_token`, `password` in connector.config.SECRET_KEYS): they are only read
from the environment through `${VAR}`, and never shown in an error, a log line or `check --show-config`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Hosts to which a credential may travel over plain HTTP or SMTP: local sinks and relays only.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# An address with no spaces, commas or line breaks (which would inject headers into the email).
_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _https_or_loopback(url: str) -> str:
    # The URL may carry a token (Slack's does, in its path): plain HTTP only to this machine. Never
    # echo the URL in the error: connector.config hides the input of secret keys, this must too.
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return url
    raise ValueError("must be an https:// URL (http:// only to localhost, for a local test sink)")


class _TargetBase(_Section):
    # Every send gives up after this long (connect and answer), so a dead target cannot hold the worker.
    timeout_s: float = Field(10.0, gt=0, le=60)


class _HttpTargetBase(_TargetBase):
    webhook_url: str | None = None  # required: checked below, so that an unset variable gets a clear error

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, url: str | None) -> str | None:
        return None if url is None else _https_or_loopback(url)

    @model_validator(mode="after")
    def _url_is_set(self) -> _HttpTargetBase:
        if self.webhook_url is None:
            raise ValueError("webhook_url is not set: write `webhook_url: ${SOME_VARIABLE}` and set that variable "
                             "(it is unset or empty now)")
        return self

    @property
    def url(self) -> str:
        assert self.webhook_url is not None  # the validator above
        return self.webhook_url


class WebhookTargetConfig(_HttpTargetBase):
    """A generic JSON webhook: each alert POSTed as one JSON object."""

    type: Literal["webhook"]
    bearer_token: str | None = None  # sent as `Authorization: Bearer ...` when set


class SlackTargetConfig(_HttpTargetBase):
    """A Slack incoming webhook (https://api.slack.com/messaging/webhooks), or a compatible one
    (Mattermost, Rocket.Chat): each alert POSTed as `{"text": ...}` in Slack's mrkdwn."""

    type: Literal["slack"]


class EmailTargetConfig(_TargetBase):
    """Email over SMTP with the standard library's smtplib: STARTTLS (port 587) by default,
    `tls` for implicit TLS (port 465), `none` only to a relay on this machine when it takes a password."""

    type: Literal["email"]
    host: str = Field(min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)  # default: 587 for starttls, 465 for tls, 25 for none
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    from_address: str
    to: list[str] = Field(min_length=1, max_length=50)
    ca_file: str | None = None  # a private CA for the server's certificate (default: the system's)
    timeout_s: float = Field(15.0, gt=0, le=60)

    @field_validator("from_address")
    @classmethod
    def _one_address(cls, address: str) -> str:
        if not _ADDRESS.match(address):
            raise ValueError("must be one email address such as connector@example.com")
        return address

    @field_validator("to")
    @classmethod
    def _addresses(cls, addresses: list[str]) -> list[str]:
        for position, address in enumerate(addresses, start=1):
            if not _ADDRESS.match(address):
                raise ValueError(f"address #{position} is not one email address such as ops@example.com")
        return addresses

    @model_validator(mode="after")
    def _credentials_are_protected(self) -> EmailTargetConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both (password from ${SOME_VARIABLE}) "
                             "or neither")
        if self.security == "none" and self.password and self.host not in LOOPBACK_HOSTS:
            raise ValueError("security: none would send the SMTP password unencrypted: use starttls or tls "
                             "(none only to a relay on localhost)")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


AlertTargetConfig = Annotated[
    Union[WebhookTargetConfig, SlackTargetConfig, EmailTargetConfig], Field(discriminator="type")
]


class AlertConditionsConfig(_Section):
    dead: bool = True  # deliveries went dead, per destination and error code
    paused: bool = True  # a destination is paused
    no_live_worker: bool = True  # deliveries wait and no worker's heartbeat is fresh
    oldest_waiting_minutes: float | None = Field(30.0, gt=0)  # null: never
    webhooks_503: bool = True  # webhooks answered 503 (Svix retries them, but nothing is stored meanwhile)


class AlertsConfig(_Section):
    targets: dict[str, AlertTargetConfig] = Field(default_factory=dict)
    # The connector's public address (https://connector.example.com), so an alert links to the status
    # page's filtered list; without it the alert gives the path (/status/events?state=dead&...).
    status_url: str | None = None
    # At most one message per condition and group (a destination, an error code) in this long.
    interval_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60)
    # How often each worker looks at the conditions and sends what is due.
    evaluate_every_s: float = Field(30.0, gt=0, le=3600)
    conditions: AlertConditionsConfig = Field(default_factory=AlertConditionsConfig)
    # A message a target did not take is tried again after retry_base_s, doubling up to retry_max_s (or
    # after the Retry-After it gave); after max_attempts tries (by default about 4 h) it is given up,
    # logged and kept as `failed` in the outbox.
    retry_base_s: float = Field(30.0, gt=0, le=3600)
    retry_max_s: float = Field(1800.0, gt=0, le=86400)
    max_attempts: int = Field(12, ge=1, le=100)
    keep_days: float = Field(30.0, gt=0)  # sent and failed messages are removed after this long

    @field_validator("targets")
    @classmethod
    def _names(cls, targets: dict[str, AlertTargetConfig]) -> dict[str, AlertTargetConfig]:
        for name in targets:
            if not _TARGET_NAME.match(name):
                raise ValueError(f"target name {name!r}: use up to 64 letters, digits, '.', '_' or '-'")
        return targets

    @field_validator("status_url")
    @classmethod
    def _status_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be the connector's public address, such as https://connector.example.com")
        return url.rstrip("/").removesuffix("/status")

    @property
    def enabled(self) -> bool:
        return bool(self.targets)
