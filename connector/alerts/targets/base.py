"""The interface every target implements, and the HTTP post the two webhook kinds share.

As django-anymail does for email providers: one small base, one module per target, each turning
the same message into what its service expects and its answer into sent / retry / give up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlsplit

import requests

from connector.alerts.message import Outgoing
from connector.logs import register_secrets


class SendError(Exception):
    """A target did not take the alert. The message never holds a secret (no URL path, no password)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent  # retrying cannot help (the target refused this message or this URL)
        self.retry_after = retry_after  # seconds, when the target said


class Target(ABC):
    def __init__(self, name: str, config: Any):
        self.name = name
        self.config = config

    @abstractmethod
    def send(self, outgoing: Outgoing) -> None:
        """Deliver one alert, within the target's timeout; raise SendError when it was not taken."""

    @abstractmethod
    def describe(self) -> str:
        """Where it sends, without any secret (for the CLI and the logs)."""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


class HttpTarget(Target):
    """POST a JSON document to `webhook_url`; a 2xx answer means taken."""

    label = "webhook"

    def __init__(self, name: str, config: Any):
        super().__init__(name, config)
        # The URL is a credential (Slack's token is its path): keep it out of every log line.
        register_secrets([config.url])

    def host(self) -> str:
        parts = urlsplit(self.config.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def describe(self) -> str:
        return f"{self.label} at {self.host()}"

    def headers(self, outgoing: Outgoing) -> dict[str, str]:
        return {}

    @abstractmethod
    def document(self, outgoing: Outgoing) -> dict[str, Any]:
        """The JSON body for this alert."""

    def send(self, outgoing: Outgoing) -> None:
        # Errors name the host only: requests' own messages quote the whole URL, token included.
        try:
            response = requests.post(self.config.url, json=self.document(outgoing), headers=self.headers(outgoing),
                                     timeout=(min(self.config.timeout_s, 5.0), self.config.timeout_s),
                                     allow_redirects=False)
        except requests.Timeout:
            raise SendError(f"{self.host()} did not answer within {self.config.timeout_s:g} s") from None
        except requests.RequestException as error:
            raise SendError(f"could not reach {self.host()} ({error.__class__.__name__})") from None
        with response:
            if 200 <= response.status_code < 300:
                return
            answer = response.text[:200].strip()
        detail = f"{self.host()} answered HTTP {response.status_code}" + (f": {answer}" if answer else "")
        if response.status_code == 429:
            raise SendError(detail, retry_after=_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500 or response.status_code == 408:
            raise SendError(detail)
        # 3xx (the URL moved: configure the new one), 4xx (a revoked hook, a refused payload).
        raise SendError(detail, permanent=True)
