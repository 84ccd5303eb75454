"""Sign test requests exactly as Svix does, with the `standardwebhooks` package (the scheme Svix signs with)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from connector.samples import sample_bytes, sample_paths

SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
UNKNOWN_SECRET = "whsec_" + base64.b64encode(bytes(range(200, 232))).decode()


SAMPLE_PATHS = sample_paths()
# The reference copy the package's samples were taken from, when it is beside the checkout.
SHARED_SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "okendo" / "samples"

__all__ = ["SAMPLE_PATHS", "sample_bytes"]


def signature(body: bytes, msg_id: str, when: datetime, secret: str = SECRET) -> str:
    return Webhook(secret).sign(msg_id, when, body.decode("utf-8"))


def signed_headers(
    body: bytes,
    msg_id: str,
    *,
    secrets: tuple[str, ...] = (SECRET,),
    family: str = "webhook",
    age: timedelta = timedelta(0),
) -> dict[str, str]:
    """Headers of one Svix delivery attempt; several secrets give a multi-signature header."""
    when = datetime.now(tz=timezone.utc) - age
    signatures = " ".join(signature(body, msg_id, when, secret) for secret in secrets)
    return {
        f"{family}-id": msg_id,
        f"{family}-timestamp": str(int(when.timestamp())),
        f"{family}-signature": signatures,
        "content-type": "application/json",
    }


def raw_hmac_headers(body: bytes, msg_id: str, secret: str = SECRET) -> dict[str, str]:
    """Sign arbitrary bytes (even non-UTF-8) with a plain HMAC, as Svix's algorithm defines it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    timestamp = str(int(datetime.now(tz=timezone.utc).timestamp()))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
