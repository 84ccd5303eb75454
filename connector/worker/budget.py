"""Daily API budgets: keep a reserve of each CRM's daily allocation for the merchant's other tools.

Both CRMs cap API calls per day across every integration of the account: Salesforce's
`DailyApiRequests` over a rolling 24 hours, reported on every answer in `Sforce-Limit-Info`
and by `/limits` (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm);
HubSpot's daily limit per private app, reported in `X-HubSpot-RateLimit-Daily` and
`-Daily-Remaining`, which resets at midnight in the account's time zone
(https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines). A backlog
drained at full speed could spend it all, and the merchant's other integrations would fail
until the window turns. So the workers stop claiming a destination's deliveries once only
the reserve (`destinations.NAME.daily_reserve_percent`, 10% by default) is left, and go on
when a newer reading shows room again: Salesforce's `/limits` is read every
`worker.budget_check_s` while held; HubSpot's reading lapses at its reset.

The readings are each destination's last `quota()`, which every worker writes on the
destination's status row after each batch, so every process on every host sees the same one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from connector.config import Settings
from connector.destinations.base import Destination
from connector.ledger.database import write_transaction
from connector.ledger.models import DestinationStatus, utcnow

log = logging.getLogger(__name__)

_status = DestinationStatus.__table__

# Each CRM's vocabulary in `quota()`, as data: (the key of calls used, or None; of calls left, or None; of the cap).
QUOTA_KEYS: dict[str, tuple[str | None, str | None, str]] = {
    "salesforce": ("api_usage", None, "api_limit"),
    "hubspot": (None, "daily_remaining", "daily_max"),
}

# How often the held destinations' gate is read from the ledger by each worker.
_GATE_TTL_S = 5.0


@dataclass(frozen=True)
class Budget:
    destination: str
    kind: str
    used: int
    limit: int
    reserve_percent: float
    observed_at: datetime
    resets: str | None = None  # a calendar-day limit: the time zone whose midnight starts it over

    @property
    def stop_at(self) -> int:
        """Calls used at which the connector stops, leaving the reserve to the merchant's other tools."""
        return math.floor(self.limit * (1 - self.reserve_percent / 100))

    @property
    def held(self) -> bool:
        return self.limit > 0 and self.used >= self.stop_at

    def describe(self) -> str:
        return (f"{self.destination}: {self.used:,} of {self.limit:,} daily API calls used; the last "
                f"{self.reserve_percent:g}% ({self.limit - self.stop_at:,}) is kept for your other integrations")

    def waiting_for(self, check_s: float) -> str:
        """What a held destination waits for."""
        if self.resets is not None:
            return f"the daily limit's reset at midnight ({self.resets})"
        return f"a newer reading with room (the CRM's usage is read again every {check_s:g} s)"

    def to_json(self) -> dict[str, Any]:
        return {"used": self.used, "limit": self.limit, "reserve_percent": self.reserve_percent,
                "stop_at": self.stop_at, "held": self.held, "observed_at": self.observed_at.isoformat()}


def reading(kind: str, quota: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(calls used, daily cap) from a destination's quota, when it holds a daily reading."""
    keys = QUOTA_KEYS.get(kind)
    if keys is None or not quota:
        return None
    used_key, remaining_key, limit_key = keys
    limit = quota.get(limit_key)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if used_key is not None and isinstance(quota.get(used_key), int):
        return quota[used_key], limit
    if remaining_key is not None and isinstance(quota.get(remaining_key), int):
        return max(limit - quota[remaining_key], 0), limit
    return None


def last_reset(kind: str, settings_for_destination: Any, now: datetime) -> datetime | None:
    """When the destination's daily window last started over, for a calendar-day limit (HubSpot)."""
    zone_name = getattr(settings_for_destination, "daily_reset_timezone", None)
    if kind != "hubspot" or not zone_name:
        return None  # Salesforce counts a rolling 24 hours: a reading holds until a newer one
    local = now.astimezone(ZoneInfo(zone_name))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def budgets(connection: Connection, settings: Settings, now: datetime | None = None) -> dict[str, Budget]:
    """The last daily reading of every configured destination that reported one (lapsed ones left out)."""
    now = now or utcnow()
    rows = connection.execute(select(_status.c.destination, _status.c.quota, _status.c.updated_at)).all()
    found: dict[str, Budget] = {}
    for name, quota, updated_at in rows:
        config = settings.destinations.get(name)
        if config is None:
            continue
        pair = reading(config.type, quota)
        if pair is None:
            continue
        reset = last_reset(config.type, config, now)
        if reset is not None and updated_at < reset:
            continue  # read before the window started over: it says nothing about today
        found[name] = Budget(name, config.type, pair[0], pair[1], config.daily_reserve_percent, updated_at,
                             getattr(config, "daily_reset_timezone", None) if reset is not None else None)
    return found


class BudgetGate:
    """One worker's view of which destinations are held for their budget, read at most every few seconds,
    and the refresh of a held destination's reading (Salesforce's `/limits`) every `budget_check_s`."""

    def __init__(self, engine: Engine, settings: Settings, destinations: Mapping[str, Destination],
                 clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.engine = engine
        self.settings = settings
        self.destinations = destinations
        self._clock = clock
        self._read_at = float("-inf")
        self._held: dict[str, Budget] = {}
        self._refreshed: dict[str, float] = {}

    def held(self) -> dict[str, Budget]:
        if self._clock() - self._read_at < _GATE_TTL_S:
            return self._held
        self._read_at = self._clock()
        try:
            with self.engine.connect() as connection:
                current = {name: budget for name, budget in budgets(connection, self.settings).items() if budget.held}
        except SQLAlchemyError:
            return self._held  # the last view, until the ledger answers again
        for name in current.keys() - self._held.keys():
            log.warning("%s: deliveries wait for %s", current[name].describe(),
                        current[name].waiting_for(self.settings.worker.budget_check_s), extra={"destination": name})
        for name in self._held.keys() - current.keys():
            log.info("%s: the daily API budget has room again; delivering", name, extra={"destination": name})
        self._held = current
        for name in current:
            self._refresh(name)
        return self._held

    def _refresh(self, name: str) -> None:
        """Ask the CRM how much of its day is left, at most every `budget_check_s` per destination."""
        destination = self.destinations.get(name)
        if destination is None or self._clock() - self._refreshed.get(name, float("-inf")) < \
                self.settings.worker.budget_check_s:
            return
        self._refreshed[name] = self._clock()
        try:
            quota = destination.refresh_quota()
        except Exception as error:  # a failed check leaves the destination held; the next one tries again
            log.warning("%s: could not read the daily API budget (%s)", name, error, extra={"destination": name})
            return
        if not quota:
            return
        try:
            with write_transaction(self.engine) as connection:
                connection.execute(update(_status).where(_status.c.destination == name)
                                   .values(quota=quota, updated_at=utcnow()))
        except SQLAlchemyError:
            return
        self._read_at = float("-inf")  # read the gate again at the next claim

