"""Sign an event exactly as Svix does and post it to a connector; say what the answer means.

Signing is the `standardwebhooks` package's (`Webhook(secret).sign(id, timestamp, body)`: Svix's
scheme, which the `svix` package signs with too), over the exact bytes sent
(https://docs.svix.com/receiving/verifying-payloads/how-manual). Each attempt carries a fresh
timestamp and signature, and a redelivery reuses the message id, as Svix's retries do
(https://docs.svix.com/retries).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from connector.config import ReceiverConfig
from connector.onboarding.endpoint import WEBHOOK_PATH
DEFAULT_URL = f"http://127.0.0.1:8000{WEBHOOK_PATH}"  # where `make run` serves
SECRETS_ENV = "OKENDO_WEBHOOK_SECRETS"
ANSWER_TEXT_LIMIT = 2000  # characters of an answer worth printing
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_ALPHABET = string.ascii_letters + string.digits


class SendError(ValueError):
    """The post cannot be made; the message names the option or variable and what to do."""


@dataclass(frozen=True)
class Answer:
    """What the connector answered (status None: no answer at all)."""

    status: int | None
    reason: str
    text: str
    data: dict[str, Any] | None  # the JSON object, when the answer is one

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def new_message_id() -> str:
    """A fresh id shaped like Svix's (`msg_` and 27 letters and digits)."""
    return "msg_" + "".join(secrets.choice(_ALPHABET) for _ in range(27))


def check_message_id(message_id: str) -> str:
    if not _MESSAGE_ID.match(message_id):
        raise SendError(f"--id {message_id!r}: use letters, digits and _ . : - only, at most 200 characters "
                        "(Svix ids look like msg_2aBcD...)")
    return message_id


def webhook_url(url: str) -> str:
    """The endpoint to post to; a bare base URL (http://host:port) gets /webhooks/okendo."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SendError(f"--url {url!r}: expected http://HOST:PORT{WEBHOOK_PATH} (e.g. {DEFAULT_URL})")
    path = parts.path if parts.path not in ("", "/") else WEBHOOK_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def signing_secret(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """--secret, else the first of $OKENDO_WEBHOOK_SECRETS (spaces or commas, as config.yaml reads it)."""
    environ = os.environ if environ is None else environ
    if option is not None:
        candidate, source = option.strip(), "--secret"
    else:
        # Read as config.yaml's receiver.secrets reads it, so both ends agree on the list.
        try:
            listed = ReceiverConfig(secrets=environ.get(SECRETS_ENV, "")).secrets
        except ValidationError as error:
            problem = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise SendError(f"{SECRETS_ENV}: {problem}") from None
        if not listed:
            raise SendError(f"no signing secret: set {SECRETS_ENV} to the secret the connector runs with "
                            "(the same value in both shells), or pass --secret")
        candidate, source = listed[0], f"{SECRETS_ENV} (its first secret)"
    try:
        Webhook(candidate)
    except Exception:
        # Never echo the secret itself.
        raise SendError(f"{source} is not a valid Svix signing secret (expected whsec_ followed by base64, "
                        "as Okendo returned it)") from None
    return candidate


def signed_headers(body: bytes, message_id: str, secret: str, *, family: str = "webhook",
                   now: datetime | None = None) -> dict[str, str]:
    """The headers of one Svix delivery attempt: `webhook-*` (what Okendo is seen to send) or `svix-*`."""
    now = now or datetime.now(tz=timezone.utc)
    return {
        f"{family}-id": message_id,
        f"{family}-timestamp": str(int(now.timestamp())),
        f"{family}-signature": Webhook(secret).sign(message_id, now, body.decode("utf-8")),
        "content-type": "application/json",
        "user-agent": "okendo-crm-connector (connector send)",
    }


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """Post once; network failures raise SendError (they would fail every further post too)."""
    try:
        response = requests.post(url, data=body, headers=dict(headers), timeout=timeout, allow_redirects=False)
    except requests.ConnectionError as error:
        if isinstance(error, requests.ConnectTimeout) or "refused" in str(error).lower():
            raise SendError(f"nothing answers at {url}: start the connector (`make run`, serving on "
                            "127.0.0.1:8000) or pass --url") from None
        raise SendError(f"cannot reach {url} ({type(error).__name__}): check --url and that the connector runs") from None
    except requests.Timeout:
        raise SendError(f"no answer from {url} within {timeout:g} s: is the connector overloaded or stopped?") from None
    except requests.RequestException as error:
        raise SendError(f"cannot post to {url} ({type(error).__name__}): check --url") from None
    text = response.text
    try:
        data = response.json()
    except ValueError:
        data = None
    return Answer(response.status_code, response.reason or "", text[:ANSWER_TEXT_LIMIT],
                  data if isinstance(data, dict) else None)


def shown(answer: Answer) -> str:
    """The answer as one line: status and its JSON (compact) or text."""
    if answer.data is not None:
        body = json.dumps(answer.data, sort_keys=True)
    else:
        body = " ".join(answer.text.split())
    return f"{answer.status} {answer.reason}" + (f" {body}" if body else "")


def meaning(answer: Answer) -> str:
    """What the answer means for the event, and what to do when it was not acknowledged."""
    data = answer.data or {}
    status = answer.status
    if status in (200, 202) and data.get("duplicate"):
        return f"a redelivery of event {data.get('event_id')}: deduplicated, nothing stored twice"
    if status == 202:
        state = data.get("state")
        if state == "received":
            return f"stored as event {data.get('event_id')}; the worker delivers it to the CRMs"
        if state in ("invalid", "unsupported"):
            return (f"stored as event {data.get('event_id')} but {state}: the connector keeps it visible on the "
                    "status page and maps nothing (not an Okendo event it handles)")
        return f"stored as event {data.get('event_id')} ({state})"
    if status == 401:
        reason = data.get("reason")
        hints = {
            "no_matching_signature": f"the secret differs from the connector's: use the same {SECRETS_ENV} "
                                     "(or --secret) as the shell running it",
            "timestamp_too_old": "this machine's clock and the connector's differ by over 5 minutes",
            "timestamp_too_new": "this machine's clock and the connector's differ by over 5 minutes",
            "missing_headers": "the signature headers did not arrive (a proxy in between may drop them)",
        }
        return f"refused: {hints.get(reason, reason or 'signature verification failed')}"
    if status == 503:
        hint = data.get("hint")
        if hint:
            return f"refused until the connector has a signing secret: {hint} where it runs and restart it"
        return "the connector cannot store events right now (ledger unavailable); Okendo would retry; try again"
    if status == 413:
        return "refused: the body is larger than the connector's receiver.max_body_bytes"
    if status == 404:
        return f"nothing handles this path: the connector's endpoint is {WEBHOOK_PATH}"
    if status is not None and 300 <= status < 400:
        return "a redirect: Svix counts it as a failure; post to the final URL (--url)"
    return "not acknowledged: Okendo would retry this event"
