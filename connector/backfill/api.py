"""Okendo's API client for backfills and reconciliations, paced by one limit for the whole account.

Okendo allows about 2 requests per second per API key, with a small burst, then answers 429
(https://docs.okendo.io/merchant-rest-api). A backfill in a terminal and the reconciliation of
every worker on every host may read at the same moment, so their pace is kept in the ledger, as
the CRMs' limits are (connector.destinations.ratelimit): evenly spaced slots of one account, taken
with one short statement before each request. Without a shared ledger (a single process) the
client's own token bucket paces it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlalchemy import Engine

from connector.config import ConfigError, Settings

REQUESTS = 2  # per second, Okendo's documented limit
PER_SECONDS = 1.0
DESTINATION_NAME = "okendo-api"  # how the shared window row names its user, for people


def account_key(base_url: str, user_id: str) -> str:
    """The Okendo account whose limit a client spends, as a hash (the API key is never stored)."""
    return hashlib.sha256("\0".join(["okendo", base_url.rstrip("/"), user_id]).encode()).hexdigest()


def shared_pacer(engine: Engine | None, base_url: str, user_id: str) -> Callable[[], None] | None:
    """A callable that returns when the next request to Okendo may go, for every process on the ledger."""
    from connector.destinations.ratelimit import SharedRateLimiter
    from connector.ledger.rate_limits import store_for

    store = store_for(engine) if engine is not None else None
    if store is None:
        return None
    limiter = SharedRateLimiter(store, account_key(base_url, user_id), DESTINATION_NAME, REQUESTS, PER_SECONDS)

    def pace() -> None:
        with limiter.request():
            pass

    return pace


def open_api(settings: Settings, engine: Engine | None):  # type: ignore[no-untyped-def]
    """Okendo's API client from `okendo:` in the config; ConfigError names the missing settings."""
    from connector.okendo_api import OkendoApi

    config = settings.okendo
    missing = [variable for variable, value in (("OKENDO_USER_ID", config.user_id), ("OKENDO_API_KEY", config.api_key))
               if not value]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: reading Okendo's API needs your Okendo user id and API key "
            f"({settings.source}: okendo.user_id and okendo.api_key, read from those variables by the shipped "
            "config.yaml; https://docs.okendo.io/merchant-rest-api says where to find them)")
    assert config.user_id is not None and config.api_key is not None
    return OkendoApi(config.api_base_url, config.user_id, config.api_key, timeout=config.timeout_s,
                     pacer=shared_pacer(engine, config.api_base_url, config.user_id))
