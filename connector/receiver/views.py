"""`POST /webhooks/okendo`: verify, store, acknowledge. Nothing else happens here.

Order matters: bound the body, verify the signature on the raw bytes, store
the event and commit, and only then answer 2xx (Okendo allows 15 s; we take
milliseconds). The CRM work belongs to the worker.

Every answer comes within `receiver.answer_within_s` of the request's start,
however long the ledger's queue or lock: 202 once stored, else 503 with
Retry-After, and Svix sends the event again (https://docs.svix.com/retries).

The endpoint is a plain WSGI app in front of Flask, not a Flask view. A store
in a burst sends hundreds of webhooks a second, and each of them would pay for
Flask's request context, session cookie, URL routing and after-request hooks,
none of which a signed JSON post needs; on two CPUs those layers cost more than
storing the event. Everything else (status page, probes, metrics) is Flask.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.http import HTTP_STATUS_CODES

from connector import metrics
from connector.ledger import IncomingEvent
from connector.ledger.database import is_lock_timeout
from connector.ledger.intake import LedgerWriteTimeout
from connector.ledger.models import MESSAGE_ID_MAX
from connector.receiver.envelope import classify
from connector.receiver.signature import SIGNATURE_HEADERS
from connector.runtime import EXTENSION_KEY, Runtime
from connector.status.hardening import SECURITY_HEADERS

log = logging.getLogger(__name__)

PATH = "/webhooks/okendo"
# Kept back from the bound for what follows the store: the answer still has to be written.
ANSWER_MARGIN_S = 0.2
RETRY_AFTER_S = "5"

# Headers kept on the ledger row: enough to re-verify or explain a delivery.
STORED_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "content-type",
    "user-agent",
)


def _environ_key(header: str) -> str:
    # How a WSGI server passes a request header (PEP 3333: HTTP_ + upper case, - as _).
    return "CONTENT_TYPE" if header == "content-type" else "HTTP_" + header.upper().replace("-", "_")


_STORED_KEYS = tuple((name, _environ_key(name)) for name in STORED_HEADERS)
_SIGNATURE_KEYS = tuple((name, _environ_key(name)) for name in SIGNATURE_HEADERS)
# Every answer of the app carries the security headers (connector/status/hardening.py).
_ANSWER_HEADERS = [("Content-Type", "application/json"), *SECURITY_HEADERS.items()]

Answer = tuple[int, dict[str, Any], list[tuple[str, str]]]
StartResponse = Callable[..., Any]


class WebhookEndpoint:
    """WSGI middleware: answers PATH itself and hands every other request to the Flask app."""

    def __init__(self, app: Flask, inner: Callable[[dict, StartResponse], Iterable[bytes]]):
        self.app = app
        self.inner = inner

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.inner(environ, start_response)
        started = time.monotonic()
        if environ.get("REQUEST_METHOD") != "POST":
            status, payload, headers = 405, {"error": "method not allowed: send a POST"}, [("Allow", "POST")]
        else:
            try:
                status, payload, headers = _receive(self.app.extensions[EXTENSION_KEY], environ, started)
            except Exception:  # answer, log, and keep serving: Svix retries a 500
                log.exception("webhook %.80r: unexpected error, answering 500", _message_id(environ))
                status, payload, headers = 500, {"error": "internal error; the event was not stored"}, []
        body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        # Svix gives up on an attempt after 15 s: this histogram shows how close the answers come.
        metrics.webhook_answered(status, time.monotonic() - started)
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}",  # as Werkzeug words it
                       [*_ANSWER_HEADERS, ("Content-Length", str(len(body))), *headers])
        return [body]


def install(app: Flask) -> None:
    """Put the endpoint in front of the app's WSGI callable (before anything wraps it, such as the
    status page's ProxyFix, so that those wrappers see webhooks too)."""
    app.wsgi_app = WebhookEndpoint(app, app.wsgi_app)  # type: ignore[method-assign]


def _error(status: int, error: str, headers: list[tuple[str, str]] | None = None, **extra: str) -> Answer:
    return status, {"error": error, **extra}, headers or []


def _not_stored(reason: str) -> Answer:
    """`ledger_busy`: not stored within the bound (locked, or a write stalled); `ledger_unavailable`: an error."""
    metrics.webhook_rejected(reason)
    return _error(503, "ledger unavailable, retry later", [("Retry-After", RETRY_AFTER_S)])


def _too_large(limit: int) -> Answer:
    metrics.webhook_rejected("too_large")
    return _error(413, "body too large", limit_bytes=str(limit))


def _read_bounded_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The raw body, or None when it is larger than `limit` (read at most limit+1 bytes)."""
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH", "")
    if declared.isdigit():
        length = int(declared)
        if length > limit:
            return None
    elif environ.get("wsgi.input_terminated"):  # chunked: read until the end or one byte past the limit
        length = limit + 1
    else:  # no usable length (a malformed Content-Length): no body, as Werkzeug reads it
        return b""
    chunks: list[bytes] = []
    total = 0
    while total < length and (chunk := stream.read(min(65536, length - total))):
        chunks.append(chunk)
        total += len(chunk)
    return None if total > limit else b"".join(chunks)


def _message_id(environ: dict[str, Any]) -> str | None:
    # svix-* wins when both families are present, as in the svix package.
    return environ.get("HTTP_SVIX_ID") or environ.get("HTTP_WEBHOOK_ID")


def _logged_message_id(environ: dict[str, Any]) -> str | None:
    # Unverified requests choose their own ids: log a bounded prefix.
    message_id = _message_id(environ)
    return message_id[:80] if message_id else None


def _webhook_timestamp(environ: dict[str, Any]) -> datetime | None:
    raw = environ.get("HTTP_SVIX_TIMESTAMP") or environ.get("HTTP_WEBHOOK_TIMESTAMP")
    try:
        return datetime.fromtimestamp(int(raw), tz=timezone.utc) if raw else None
    except (ValueError, OverflowError, OSError):
        return None


def _receive(rt: Runtime, environ: dict[str, Any], started: float) -> Answer:
    settings = rt.settings.receiver
    remote = environ.get("REMOTE_ADDR")

    if not rt.verifier.configured and not settings.insecure_dev_mode:
        # 503, not 4xx: Svix keeps retrying for about a day, so nothing is lost
        # while the operator sets the secret.
        log.error("webhook refused: no signing secret configured (set OKENDO_WEBHOOK_SECRETS)",
                  extra={"message_id": _logged_message_id(environ), "reason": "no_secret_configured"})
        metrics.webhook_rejected("no_secret_configured")
        return _error(503, "no webhook signing secret configured", hint="set OKENDO_WEBHOOK_SECRETS")

    body = _read_bounded_body(environ, settings.max_body_bytes)
    if body is None:
        log.warning("webhook rejected: body over %d bytes from %s", settings.max_body_bytes, remote,
                    extra={"message_id": _logged_message_id(environ), "reason": "too_large", "remote_addr": remote})
        return _too_large(settings.max_body_bytes)

    verified_by = None
    if rt.verifier.configured:
        verification = rt.verifier.verify(body, {name: environ[key] for name, key in _SIGNATURE_KEYS if key in environ})
        if not verification.ok:
            log.warning(
                "webhook rejected: signature %s (message id %.80r, from %s)",
                verification.reason,
                _message_id(environ),
                remote,
                extra={"message_id": _logged_message_id(environ), "reason": verification.reason,
                       "remote_addr": remote},
            )
            metrics.webhook_rejected(verification.reason)
            return _error(401, "signature verification failed", reason=verification.reason or "")
        verified_by = verification.secret_position

    message_id = _message_id(environ)
    if not message_id:
        # Only reachable in insecure development mode: a signed request always has one.
        metrics.webhook_rejected("missing_message_id")
        return _error(400, "missing webhook-id header")
    if len(message_id) > MESSAGE_ID_MAX:
        metrics.webhook_rejected("message_id_too_long")
        return _error(400, f"webhook-id longer than {MESSAGE_ID_MAX} characters")

    envelope = classify(body)
    incoming = IncomingEvent(
        message_id=message_id,
        body=body,
        headers={name: environ[key] for name, key in _STORED_KEYS if key in environ},
        state=envelope.state,
        state_reason=envelope.reason,
        webhook_timestamp=_webhook_timestamp(environ),
        resource_type=envelope.resource_type,
        topic=envelope.topic,
        resource_id=envelope.resource_id,
        sequence_number=envelope.sequence_number,
        customer_email=envelope.customer_email,
        verified_by_secret=verified_by,
    )
    deadline = started + settings.answer_within_s - ANSWER_MARGIN_S
    try:
        stored = rt.intake.store(incoming, deadline=deadline)
    except LedgerWriteTimeout as error:
        # Never acknowledge what is not stored: Svix will retry (its retry may find it stored after all,
        # and is then answered as a redelivery).
        log.error("webhook %s answered 503 within the %g s bound: %s", message_id, settings.answer_within_s, error,
                  extra={"message_id": message_id, "reason": "ledger_busy"})
        return _not_stored("ledger_busy")
    except SQLAlchemyError as error:
        reason = "ledger_busy" if is_lock_timeout(error) else "ledger_unavailable"
        log.error("webhook %s not stored, answering 503: %s", message_id, error.__class__.__name__,
                  extra={"message_id": message_id, "reason": reason})
        return _not_stored(reason)

    if stored.created:
        log.info(
            "webhook %s stored as event %d (%s.%s, state %s)",
            message_id,
            stored.event_id,
            envelope.resource_type,
            envelope.topic,
            envelope.state,
            extra={"message_id": message_id, "event_id": stored.event_id, "resource_type": envelope.resource_type,
                   "topic": envelope.topic, "state": envelope.state},
        )
        metrics.event_received(envelope.resource_type, envelope.topic, envelope.state)
        return 202, {"event_id": stored.event_id, "state": envelope.state}, []
    log.info("webhook %s is a redelivery of event %d", message_id, stored.event_id,
             extra={"message_id": message_id, "event_id": stored.event_id, "duplicate": True})
    metrics.webhook_redelivered()
    return 200, {"event_id": stored.event_id, "duplicate": True}, []
