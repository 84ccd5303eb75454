"""Svix signature verification against every configured secret.

Okendo delivers through Svix. The HMAC and its constant-time comparison are the
`standardwebhooks` package's: Svix's signature scheme is the Standard Webhooks one
(https://docs.svix.com/receiving/verifying-payloads/how-manual,
https://github.com/standard-webhooks/standard-webhooks), and the `svix` package's own
`Webhook.verify` only renames the `svix-*` headers and calls it. We use it directly: the
`svix` package also imports its whole API client (about 13 MB in every process). We only
choose which headers to hand it and turn each way it can fail into a short reason code.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# Both header families: Svix's own and the white-labelled Standard Webhooks ones.
SIGNATURE_HEADERS = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)

# The standardwebhooks package's messages (1.x) -> our reason codes.
_REASONS_BY_MESSAGE = {
    "Missing required headers": "missing_headers",
    "Invalid Signature Headers": "malformed_timestamp",
    "Message timestamp too old": "timestamp_too_old",
    "Message timestamp too new": "timestamp_too_new",
    "No matching signature found": "no_matching_signature",
}
# Failures that do not depend on which secret is tried: no point trying the others.
_SECRET_INDEPENDENT = frozenset({"missing_headers", "malformed_timestamp", "timestamp_too_old", "timestamp_too_new"})


def _standard_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # As svix's Webhook.verify does: names in any case, and Svix's own win over the Standard Webhooks ones.
    headers = {name.lower(): value for name, value in headers.items()}
    return {f"webhook-{part}": value for part in ("id", "timestamp", "signature")
            if (value := headers.get(f"svix-{part}", headers.get(f"webhook-{part}"))) is not None}


@dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str | None = None  # a reason code when not ok
    secret_position: int | None = None  # 1-based, when ok


def _malformed(body: bytes, headers: Mapping[str, str]) -> str | None:
    """What no secret can make valid, checked here rather than left to the package: up to 1.1 it raised
    on a signature entry without a comma or with bad base64, and on a body that is not UTF-8; 1.3 compares
    the entries as whole strings and verifies any bytes, so a malformed header would read as a wrong secret.
    Svix signs the UTF-8 JSON text and sends `v1,<base64>` entries separated by spaces
    (https://docs.svix.com/receiving/verifying-payloads/how-manual)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "body_not_utf8"
    signature = headers.get("webhook-signature")
    if not signature:
        return None  # the package's "Missing required headers"
    for entry in signature.split(" "):
        _version, comma, value = entry.partition(",")
        if not comma:
            return "malformed_signature_header"
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            return "malformed_signature_header"
    return None


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
        relevant = _standard_headers(headers)
        if self._webhooks and (reason := _malformed(body, relevant)) is not None:
            return Verification(ok=False, reason=reason)
        first_reason = None
        for position, webhook in enumerate(self._webhooks, start=1):
            try:
                webhook.verify(body, relevant, json_parse=False)
            except Exception as error:  # the package raises several types; none may escape
                reason = _reason_for(error)
                first_reason = first_reason or reason
                if reason in _SECRET_INDEPENDENT:
                    break
                continue
            return Verification(ok=True, secret_position=position)
        return Verification(ok=False, reason=first_reason or "no_secret_configured")
