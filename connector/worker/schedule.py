"""The durable retry schedule: when a failed delivery is tried again, or given up."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from connector.config import WorkerConfig
from connector.destinations.errors import DeliveryError, ErrorClass

# The least a class waits before its next try, whatever the backoff says.
MINIMUM_WAIT_S = {
    ErrorClass.RETRY_SOON: 0.0,
    ErrorClass.RETRY_LATER: 15 * 60.0,  # a spent quota: minutes to hours, not seconds
    ErrorClass.REAUTHENTICATE: 5 * 60.0,  # credentials need a person, or a token refresh upstream
}


def next_attempt(error: DeliveryError, attempts: int, created_at: datetime, now: datetime,
                 config: WorkerConfig, rng: random.Random | None = None) -> datetime | None:
    """When to try again after `attempts` tries; None: give up (the delivery goes `dead`)."""
    if not error.retryable or attempts >= config.max_attempts:
        return None
    # Exponential backoff with jitter (half to full), so a burst of failures does not retry in step.
    backoff = min(config.backoff_base_s * 2 ** max(attempts - 1, 0), config.backoff_max_s)
    delay = backoff * (rng or random).uniform(0.5, 1.0)
    delay = max(delay, error.retry_after or 0.0, MINIMUM_WAIT_S[error.error_class])
    when = now + timedelta(seconds=delay)
    if when - created_at > timedelta(hours=config.max_age_hours):
        return None
    return when
