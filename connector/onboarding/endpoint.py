"""The connector's webhook address, as a subscription gives it to Okendo: catch what cannot work before Okendo does.

Okendo delivers from its servers (through Svix: https://docs.okendo.io/webhooks/getting-started),
so the URL must be one they can reach: never this machine or a private network. Okendo's own
validation (a 422) still has the last word on everything else.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Where the connector receives Okendo's webhooks (connector/receiver/views.py).
WEBHOOK_PATH = "/webhooks/okendo"


class EndpointError(ValueError):
    """The URL cannot receive Okendo's webhooks; the message says why and what to use."""


def check_endpoint_url(url: str) -> list[str]:
    """Raise EndpointError when Okendo could never deliver to `url`; return warnings otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"--url {url!r}: expected the connector's public address, "
                            f"https://YOUR-HOST{WEBHOOK_PATH}")
    host = parts.hostname
    if host == "localhost" or host.endswith((".localhost", ".local")) or _is_private_address(host):
        raise EndpointError(
            f"--url {url!r}: Okendo's servers cannot reach {host}. Serve the connector on a public HTTPS "
            f"address (a reverse proxy or a tunnel in front of gunicorn) and subscribe https://THAT-HOST{WEBHOOK_PATH}; "
            "to try events locally meanwhile, use `connector send`")
    warnings = []
    if parts.scheme == "http":
        warnings.append("http:// carries every event unencrypted, and Okendo may refuse it: prefer https://")
    if parts.path.rstrip("/") != WEBHOOK_PATH:
        warnings.append(f"the connector receives events at {WEBHOOK_PATH}; this URL's path is "
                        f"{parts.path or '/'!r} (fine only if a proxy rewrites it)")
    return warnings


def _is_private_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: whether it resolves publicly is Okendo's to find out
    return address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified
