"""What a CRM call sent and what the CRM answered, taken where both client libraries still show it.

hubspot-api-client deserialises answers into models and keeps headers only on `*_with_http_info`
results and on its ApiException (https://github.com/HubSpot/hubspot-api-python); simple-salesforce
raises SalesforceError with the body but not the headers. So each destination listens one level
lower: the SDK's REST client (`ApiClient.rest_client.request`) and simple-salesforce's requests
Session report every exchange to the destination's `Wire`, and the destination reads the last one
of its thread right after a call (forensics.py keeps one delivery's share of it).

Kept in memory only, per thread: a destination serves every worker thread of its process. Request
headers are never taken (they carry the credentials); of the answer's headers, only those that
matter to an operator (KEPT_HEADERS).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

# Retry-After; HubSpot's rate-limit and correlation headers
# (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines); Salesforce's API usage
# (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm); the request
# ids a proxy in front of either may add.
KEPT_HEADERS = (
    "Retry-After",
    "X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining", "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining", "X-HubSpot-RateLimit-Secondly",
    "X-HubSpot-RateLimit-Secondly-Remaining", "X-HubSpot-Correlation-Id",
    "Sforce-Limit-Info",
    "X-Request-Id", "X-Correlation-Id",
)
_KEPT = {name.lower(): name for name in KEPT_HEADERS}
# Answers are parsed only this far: what is stored is capped at 64 KiB anyway (forensics.ANSWER_LIMIT).
PARSE_LIMIT = 1024 * 1024
TEXT_PREVIEW = 128 * 1024


@dataclass(frozen=True)
class Exchange:
    """One HTTP request to a CRM and its answer (or why there was none)."""

    method: str
    path: str  # path and query, without scheme and host
    sent: Any  # the JSON body sent, None when there was none
    status: int | None = None  # None: no answer
    headers: dict[str, str] = field(default_factory=dict)  # KEPT_HEADERS only
    answer: Any = None  # the answer's body: parsed JSON, else text; None when empty
    failure: str | None = None  # why there was no answer: a timeout, a dropped connection

    @property
    def answered(self) -> bool:
        return self.status is not None


class Wire:
    """The last exchange of each thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def clear(self) -> None:
        self._local.last = None

    def record(self, exchange: Exchange) -> None:
        self._local.last = exchange

    @property
    def last(self) -> Exchange | None:
        return getattr(self._local, "last", None)


def kept_headers(headers: Any) -> dict[str, str]:
    """The headers that matter, under their documented names, whatever case they arrived in."""
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) or hasattr(headers, "items") else headers
    return {_KEPT[str(name).lower()]: str(value) for name, value in items if str(name).lower() in _KEPT}


def parse_body(raw: bytes | str | None) -> Any:
    """An answer's body as JSON when it is JSON, else as text (a large one only as its beginning)."""
    if raw is None or raw == b"" or raw == "":
        return None
    if len(raw) > PARSE_LIMIT:
        raw = raw[:TEXT_PREVIEW]
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except ValueError:
        return text


def path_of(url: str, query: Any = None) -> str:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if query:
        path += ("&" if "?" in path else "?") + urlencode(query, doseq=True)
    return path


def _no_answer(error: BaseException) -> str:
    return f"no answer: {type(error).__name__}: {error}"


# --- hubspot-api-client ------------------------------------------------------------------------------


def tap_hubspot(api: Any, wire: Wire) -> None:
    """Report every exchange of one hubspot-api-client API object (its REST client) to `wire`.

    The SDK sends through `rest_client.request(method, url, query_params=..., body=...)`, which
    returns the raw answer or raises ApiException with `status`, `headers` and `body`; transport
    errors (urllib3's) and status 0 (the SDK's wrapping of TLS errors) mean no answer.
    """
    rest = api.api_client.rest_client
    send = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = path_of(url, kwargs.get("query_params"))
        sent = kwargs.get("body")
        try:
            response = send(method, url, *args, **kwargs)
        except Exception as error:
            status = getattr(error, "status", None) or None
            if status is None:
                wire.record(Exchange(method.upper(), path, sent, failure=_no_answer(error)))
            else:
                wire.record(Exchange(method.upper(), path, sent, status, kept_headers(getattr(error, "headers", None)),
                                     parse_body(getattr(error, "body", None))))
            raise
        wire.record(Exchange(method.upper(), path, sent, response.status, kept_headers(response.getheaders()),
                             parse_body(getattr(response, "data", None))))
        return response

    rest.request = request


# --- simple-salesforce (requests) ---------------------------------------------------------------------


class RecordingSession(requests.Session):
    """simple-salesforce's session: every request with a timeout (the library's write calls take none)
    and every exchange reported to `wire`."""

    def __init__(self, timeout: tuple[float, float], wire: Wire):
        super().__init__()
        self._timeout = timeout
        self.wire = wire

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        path = path_of(url, kwargs.get("params"))
        sent = kwargs["json"] if kwargs.get("json") is not None else parse_body(kwargs.get("data"))
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as error:
            self.wire.record(Exchange(method.upper(), path, sent, failure=_no_answer(error)))
            raise
        self.wire.record(Exchange(method.upper(), path, sent, response.status_code, kept_headers(response.headers),
                                  parse_body(response.content)))
        return response
