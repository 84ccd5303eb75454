"""`POST /webhooks/okendo`: verify, store, acknowledge. Nothing else happens here.

Order matters: bound the body, verify the signature on the raw bytes, store
the event and commit, and only then answer 2xx (Okendo allows 15 s; we take
milliseconds). The CRM work belongs to the worker.

Every answer comes within `receiver.answer_within_s` of the request's start,
however long the ledger's queue or lock: 202 once stored, else 503 with
Retry-After, and Svix sends the event again (https://docs.svix.com/retries).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from connector import metrics
from connector.ledger import IncomingEvent
from connector.ledger.database import is_lock_timeout
from connector.ledger.intake import LedgerWriteTimeout
from connector.ledger.models import MESSAGE_ID_MAX
from connector.receiver.envelope import classify
from connector.runtime import runtime

log = logging.getLogger(__name__)

bp = Blueprint("receiver", __name__)

# Kept back from the bound for what follows the store: the answer still has to be written.
ANSWER_MARGIN_S = 0.2
RETRY_AFTER_S = "5"


@bp.before_request
def _start_clock() -> None:
    g.webhook_started = time.monotonic()


@bp.after_request
def _time_answer(response: Response) -> Response:
    # Svix gives up on an attempt after 15 s: this histogram shows how close the answers come.
    started = g.get("webhook_started")
    if started is not None:
        metrics.webhook_answered(response.status_code, time.monotonic() - started)
    return response

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


def _error(status: int, error: str, **extra: str) -> tuple[Response, int]:
    return jsonify(error=error, **extra), status


def _not_stored(reason: str) -> tuple[Response, int]:
    """`ledger_busy`: not stored within the bound (locked, or a write stalled); `ledger_unavailable`: an error."""
    metrics.webhook_rejected(reason)
    response, status = _error(503, "ledger unavailable, retry later")
    response.headers["Retry-After"] = RETRY_AFTER_S
    return response, status


def _read_bounded_body(limit: int) -> bytes | None:
    """The raw body, or None when it is larger than `limit` (read at most limit+1 bytes)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    # A chunked body has no declared length: read until the end or one byte past the limit.
    chunks: list[bytes] = []
    total = 0
    while chunk := request.stream.read(min(65536, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return None
    return b"".join(chunks)


def _message_id() -> str | None:
    # svix-* wins when both families are present, as in the svix package.
    return request.headers.get("svix-id") or request.headers.get("webhook-id")


def _logged_message_id() -> str | None:
    # Unverified requests choose their own ids: log a bounded prefix.
    message_id = _message_id()
    return message_id[:80] if message_id else None


def _webhook_timestamp() -> datetime | None:
    raw = request.headers.get("svix-timestamp") or request.headers.get("webhook-timestamp")
    try:
        return datetime.fromtimestamp(int(raw), tz=timezone.utc) if raw else None
    except (ValueError, OverflowError, OSError):
        return None


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_error_: RequestEntityTooLarge) -> tuple[Response, int]:
    metrics.webhook_rejected("too_large")
    return _error(413, "body too large", limit_bytes=str(runtime().settings.receiver.max_body_bytes))


@bp.post("/webhooks/okendo")
def receive_okendo_webhook() -> tuple[Response, int]:
    rt = runtime()
    settings = rt.settings.receiver
    remote = request.remote_addr

    if not rt.verifier.configured and not settings.insecure_dev_mode:
        # 503, not 4xx: Svix keeps retrying for about a day, so nothing is lost
        # while the operator sets the secret.
        log.error("webhook refused: no signing secret configured (set OKENDO_WEBHOOK_SECRETS)",
                  extra={"message_id": _logged_message_id(), "reason": "no_secret_configured"})
        metrics.webhook_rejected("no_secret_configured")
        return _error(503, "no webhook signing secret configured", hint="set OKENDO_WEBHOOK_SECRETS")

    body = _read_bounded_body(settings.max_body_bytes)
    if body is None:
        log.warning("webhook rejected: body over %d bytes from %s", settings.max_body_bytes, remote,
                    extra={"message_id": _logged_message_id(), "reason": "too_large", "remote_addr": remote})
        raise RequestEntityTooLarge()

    verified_by = None
    if rt.verifier.configured:
        verification = rt.verifier.verify(body, request.headers)
        if not verification.ok:
            log.warning(
                "webhook rejected: signature %s (message id %.80r, from %s)",
                verification.reason,
                _message_id(),
                remote,
                extra={"message_id": _logged_message_id(), "reason": verification.reason, "remote_addr": remote},
            )
            metrics.webhook_rejected(verification.reason)
            return _error(401, "signature verification failed", reason=verification.reason or "")
        verified_by = verification.secret_position

    message_id = _message_id()
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
        headers={name: request.headers[name] for name in STORED_HEADERS if name in request.headers},
        state=envelope.state,
        state_reason=envelope.reason,
        webhook_timestamp=_webhook_timestamp(),
        resource_type=envelope.resource_type,
        topic=envelope.topic,
        resource_id=envelope.resource_id,
        sequence_number=envelope.sequence_number,
        customer_email=envelope.customer_email,
        verified_by_secret=verified_by,
    )
    deadline = g.webhook_started + settings.answer_within_s - ANSWER_MARGIN_S
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
        return jsonify(event_id=stored.event_id, state=envelope.state), 202
    log.info("webhook %s is a redelivery of event %d", message_id, stored.event_id,
             extra={"message_id": message_id, "event_id": stored.event_id, "duplicate": True})
    metrics.webhook_redelivered()
    return jsonify(event_id=stored.event_id, duplicate=True), 200
