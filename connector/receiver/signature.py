"""Svix signature verification against every configured secret.

Okendo delivers through Svix; the `svix` package does the HMAC and its
constant-time comparison (https://docs.svix.com/receiving/verifying-payloads/how-manual;
the library: https://github.com/svix/svix-webhooks). We only choose which headers
to hand it and turn each way it can fail into a short reason code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from svix.webhooks import Webhook, WebhookVerificationError

# Both header families: Svix's own and the white-labelled Standard Webhooks ones.
SIGNATURE_HEADERS = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)

# The svix package's messages (svix 2.x / standardwebhooks 1.x) -> our reason codes.
_REASONS_BY_MESSAGE = {
    "Missing required headers": "missing_headers",
    "Invalid Signature Headers": "malformed_timestamp",
    "Message timestamp too old": "timestamp_too_old",
    "Message timestamp too new": "timestamp_too_new",
    "No matching signature found": "no_matching_signature",
}
# Failures that do not depend on which secret is tried: no point trying the others.
_SECRET_INDEPENDENT = frozenset({"missing_headers", "malformed_timestamp", "timestamp_too_old", "timestamp_too_new"})


@dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str | None = None  # a reason code when not ok
    secret_position: int | None = None  # 1-based, when ok


def _reason_for(error: Exception) -> str:
    if isinstance(error, WebhookVerificationError):
        return _REASONS_BY_MESSAGE.get(str(error), "verification_failed")
    if isinstance(error, UnicodeDecodeError):
        return "body_not_utf8"
    # A signature entry without a comma, or with bad base64 (binascii.Error is a ValueError).
    if isinstance(error, ValueError):
        return "malformed_signature_header"
    return "verification_failed"


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]):
        self._webhooks = [Webhook(secret) for secret in secrets]

    @property
    def configured(self) -> bool:
        return bool(self._webhooks)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verification:
        relevant = {name: headers[name] for name in SIGNATURE_HEADERS if name in headers}
        first_reason = None
        for position, webhook in enumerate(self._webhooks, start=1):
            try:
                webhook.verify(body, relevant)
            except Exception as error:  # the svix package raises several types; none may escape
                reason = _reason_for(error)
                first_reason = first_reason or reason
                if reason in _SECRET_INDEPENDENT:
                    break
                continue
            return Verification(ok=True, secret_position=position)
        return Verification(ok=False, reason=first_reason or "no_secret_configured")
