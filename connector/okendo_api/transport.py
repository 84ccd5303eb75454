"""One request to Okendo's Merchant REST API: authentication, pacing, retries and errors.

Everything here follows Okendo's documentation (https://docs.okendo.io/merchant-rest-api):
- base URL `https://api.okendo.io/enterprise`; HTTP Basic with the Okendo user id as the
  username and the API key as the password;
- the version is chosen with the `okendo-api-version` header (`2025-02-01`); third-party
  clients report that requests without it are rejected (Okendo's docs do not say);
- 2 requests/s sustained with a small burst, then 429: we keep under it ourselves (a burst
  of two, then one request every half second, unless the caller brings a `pacer` shared with
  other processes using the same API key) and, on a 429, wait as long as `Retry-After` says,
  a bounded number of times;
- lists page with `nextUrl`, whose form is not documented (see `_next_url`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connector import okendo

API_VERSION_HEADER = "okendo-api-version"
API_VERSION = okendo.SUBSCRIPTION_API_VERSION
# 2 requests/s sustained with a small burst (Okendo's documented limit): two at once, then
# one every half second.
REQUESTS_PER_SECOND = 2.0
BURST = 2
# A 429 is retried after Retry-After this many times in all; a longer wait than
# MAX_RETRY_AFTER_S is not worth blocking a terminal for: we say so instead.
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER_S = 30.0
# When a 429 carries no Retry-After: one second restores two requests' worth of budget.
DEFAULT_RETRY_AFTER_S = 1.0
ERROR_TEXT_LIMIT = 600  # characters of an error answer worth showing

CREDENTIALS_HINT = "check OKENDO_USER_ID and OKENDO_API_KEY (config.yaml: okendo.user_id, okendo.api_key)"
BASE_URL_HINT = "Okendo's is https://api.okendo.io/enterprise"


class OkendoApiError(Exception):
    """Okendo refused a request or could not be reached; the message says what to do."""

    def __init__(self, message: str, status: int | None = None, details: Iterable[str] = ()):
        super().__init__(message)
        self.status = status
        self.details = list(details)


class _RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"429, retry after {retry_after:g} s")
        self.retry_after = retry_after


class _Unavailable(Exception):
    """A 5xx or a timeout on a request that is safe to repeat (a read)."""

    def __init__(self, error: OkendoApiError):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Answer:
    """Okendo's answer to the attempt that succeeded, with what was asked and when."""

    status: int
    body: Any  # parsed JSON; None for an accepted 404 without a JSON body
    request: str  # method, path and query as sent ("GET /enterprise/reviews?status=approved&..."); no credentials
    sent_at: datetime  # UTC, just before that attempt went out (after any pacing)


def optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def shorten(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_details(response: requests.Response) -> list[str]:
    """Okendo's own words from an error answer, as short lines.

    The error body is not documented (Okendo's docs list only the statuses), so this reads the
    usual shapes: `message`/`error`/`detail`/`title`, and an `errors` list of strings
    or of objects with a message and a path or field. Anything else is shown as text.
    """
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return [shorten(text)] if text else []
    found: list[str] = []

    def add(text: str) -> None:
        text = shorten(text, 300)
        if text and text not in found and len(found) < 20:
            found.append(text)

    if isinstance(body, str):
        add(body)
    elif isinstance(body, dict):
        for key in ("message", "error", "detail", "title", "description"):
            if isinstance(body.get(key), str):
                add(body[key])
        errors = body.get("errors") or body.get("details") or body.get("validationErrors")
        if isinstance(errors, dict):
            errors = [{"path": key, "message": value} for key, value in errors.items()]
        for item in errors if isinstance(errors, list) else []:
            if isinstance(item, str):
                add(item)
            elif isinstance(item, dict):
                message = next((item[key] for key in ("message", "msg", "detail", "error") if isinstance(item.get(key), str)),
                               None)
                where = next((item[key] for key in ("path", "field", "property", "instancePath", "dataPath")
                              if isinstance(item.get(key), str) and item.get(key)), None)
                if message is not None:
                    add(f"{where}: {message}" if where else message)
                else:
                    add(json.dumps(item, ensure_ascii=False))
        if not found:
            add(json.dumps(body, ensure_ascii=False))
    return found


def _retry_after(response: requests.Response) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    return max(moment.timestamp() - time.time(), 0.0)


class Transport:
    """The session, the pace and the retries every operation shares.

    `pacer`, when given, is called before every request (retries included) instead of the
    built-in token bucket: several processes may use one API key, and Okendo's limit is per key
    (https://docs.okendo.io/merchant-rest-api), so only a pace they share keeps them all under it.
    """

    def __init__(self, base_url: str, user_id: str, api_key: str, *, timeout: float = 15.0,
                 max_attempts: int = MAX_ATTEMPTS, max_retry_after: float = MAX_RETRY_AFTER_S,
                 pacer: Callable[[], None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self._pacer = pacer
        self._session = requests.Session()
        self._session.auth = (user_id, api_key)
        self._session.headers.update({
            API_VERSION_HEADER: API_VERSION,
            "accept": "application/json",
            "user-agent": "okendo-crm-connector (connector okendo)",
        })
        self._pace_lock = threading.Lock()
        self._tokens = float(BURST)
        self._refilled = time.monotonic()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _next_url(self, next_url: Any) -> str | None:
        """Where the next page is. Okendo documents `nextUrl` but not its form: accept an
        absolute URL on the API's own origin, a path under the base URL, or a path relative to it.
        The credentials never go to another host."""
        if not isinstance(next_url, str) or not next_url:
            return None
        base = urlsplit(self.base_url)
        if "://" in next_url:
            target = urlsplit(next_url)
            if (target.scheme, target.netloc) != (base.scheme, base.netloc):
                raise OkendoApiError(f"Okendo's nextUrl points to another host ({target.netloc}); "
                                     "not following it with your credentials")
            return next_url
        if base.path and next_url.startswith(base.path + "/"):
            return f"{base.scheme}://{base.netloc}{next_url}"
        return f"{self.base_url}/{next_url.lstrip('/')}"

    def _pace(self) -> None:
        """Wait for the caller's pacer, or take one request from a token bucket of Okendo's size."""
        if self._pacer is not None:
            self._pacer()
            return
        with self._pace_lock:
            now = time.monotonic()
            self._tokens = min(float(BURST), self._tokens + (now - self._refilled) * REQUESTS_PER_SECOND)
            self._refilled = now
            self._tokens -= 1.0  # may go below zero: the debt is the wait, and later callers queue behind it
            wait = -self._tokens / REQUESTS_PER_SECOND if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)

    def _call(self, method: str, url: str, *, params: dict[str, Any] | None = None,
              json_body: Any = None) -> Any:
        """The parsed body of a 2xx answer; OkendoApiError for anything else."""
        return self._exchange(method, url, params=params, json_body=json_body).body

    def _exchange(self, method: str, url: str, *, params: dict[str, Any] | None = None,
                  json_body: Any = None, absent_is_answer: bool = False) -> Answer:
        """The answer with what was sent and when. `absent_is_answer`: a 404 is an answer
        (a lookup of something that does not exist), not a wrong base URL."""
        # A read can be repeated after a 5xx or a timeout; a create cannot: Okendo may
        # have made the subscription before the answer was lost. A 429 was not acted on,
        # so it is retried for both.
        retryable = (_RateLimited, _Unavailable) if method == "GET" else (_RateLimited,)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, _RateLimited):
                return error.retry_after
            return min(0.5 * 2.0 ** (state.attempt_number - 1), 4.0)

        retrying = Retrying(stop=stop_after_attempt(self.max_attempts), wait=wait,
                            retry=retry_if_exception_type(retryable), reraise=True)
        try:
            return retrying(self._attempt, method, url, params, json_body, absent_is_answer)
        except _RateLimited:
            raise OkendoApiError(
                f"Okendo kept answering 429 Too Many Requests after {self.max_attempts} attempts "
                "(its limit is 2 requests/s per API key, shared with anything else using it); "
                "wait a minute and try again", 429) from None
        except _Unavailable as unavailable:
            raise unavailable.error from None

    def _attempt(self, method: str, url: str, params: dict[str, Any] | None, json_body: Any,
                 absent_is_answer: bool) -> Answer:
        self._pace()
        path = urlsplit(url).path
        sent_at = datetime.now(UTC)
        try:
            response = self._session.request(method, url, params=params, json=json_body, timeout=self.timeout,
                                             allow_redirects=False)
        except requests.Timeout as error:
            if method == "POST":
                raise OkendoApiError(
                    f"no answer from Okendo within {self.timeout:g} s ({type(error).__name__}); the subscription "
                    "may or may not have been created: run `connector okendo list` before trying again") from None
            raise _Unavailable(OkendoApiError(
                f"no answer from Okendo at {self.base_url} within {self.timeout:g} s; try again later")) from None
        except requests.RequestException as error:
            # Not retried: a wrong address, DNS or a firewall do not heal in seconds; the user reruns.
            raise OkendoApiError(
                f"cannot reach Okendo at {self.base_url} ({type(error).__name__}): check okendo.api_base_url "
                f"(OKENDO_API_BASE_URL; {BASE_URL_HINT}) and this machine's network"
            ) from None
        # The prepared request's path and query, as they went out: the credentials travel in a header.
        sent = f"{method} {response.request.path_url}"
        status = response.status_code
        if status == 429:
            retry_after = _retry_after(response)
            if retry_after > self.max_retry_after:
                raise OkendoApiError(
                    f"Okendo's rate limit (2 requests/s): it asks to wait {retry_after:.0f} s; try again then", 429)
            raise _RateLimited(retry_after)
        if 200 <= status < 300:
            try:
                return Answer(status, response.json(), sent, sent_at)
            except ValueError:
                raise OkendoApiError(
                    f"Okendo answered {method} {path} with {status} but not JSON "
                    f"({shorten(response.text, 200)!r}); check okendo.api_base_url ({self.base_url})") from None
        if status == 404 and absent_is_answer:
            try:
                body = response.json()
            except ValueError:
                body = None
            return Answer(status, body, sent, sent_at)
        details = error_details(response)
        said = f": {'; '.join(details)}" if details else ""
        if status in (401, 403):
            raise OkendoApiError(f"Okendo refused the credentials (HTTP {status}{said}); {CREDENTIALS_HINT}", status)
        if status in (400, 422):
            # Okendo's reasons travel as details: the caller knows which option each one concerns.
            raise OkendoApiError(f"Okendo refused the request (HTTP {status})", status, details)
        if status == 404:
            raise OkendoApiError(f"Okendo answered 404 Not Found for {method} {path}{said}: check "
                                 f"okendo.api_base_url ({self.base_url}; {BASE_URL_HINT})", status)
        if 300 <= status < 400:
            raise OkendoApiError(f"Okendo answered {method} {path} with a redirect ({status}) to "
                                 f"{response.headers.get('Location', '?')}: check okendo.api_base_url ({self.base_url})",
                                 status)
        if status >= 500:
            failure = OkendoApiError(f"Okendo answered {status} (a problem on Okendo's side){said}; try again later"
                                     + ("; run `connector okendo list` first: the subscription may exist"
                                        if method == "POST" else ""), status)
            if method == "POST":
                raise failure
            raise _Unavailable(failure)
        raise OkendoApiError(f"Okendo answered {method} {path} with HTTP {status}{said}", status)
