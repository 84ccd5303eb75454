"""CRM destinations: one module per CRM behind the small interface in base.py.

A configured destination without credentials runs as a dry-run destination,
so the connector works, and shows what it would do, with no CRM at all.
"""

from __future__ import annotations

from sqlalchemy import Engine

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, Settings
from connector.destinations.base import Destination
from connector.destinations.ratelimit import limiter_for


def has_credentials(config: HubSpotDestinationConfig | SalesforceDestinationConfig) -> bool:
    if isinstance(config, HubSpotDestinationConfig):
        return bool(config.access_token)
    return config.auth_mode is not None


def build_destination(name: str, settings: Settings, ledger: Engine | None = None) -> Destination:
    """The destination `name`; its CRM calls share one rate limit with every process on `ledger`
    (without a ledger, with this process's other calls only)."""
    from connector.destinations.dryrun import DryRunDestination

    config = settings.destinations[name]
    if isinstance(config, HubSpotDestinationConfig):
        if not has_credentials(config):
            return DryRunDestination(name, "hubspot", source_key_property=config.source_key_property)
        from connector.destinations.hubspot import HubSpotDestination

        return HubSpotDestination(name, config, limiter=limiter_for(name, config, ledger))
    if not has_credentials(config):
        return DryRunDestination(name, "salesforce", api_version=config.api_version)
    from connector.destinations.salesforce import SalesforceDestination

    return SalesforceDestination(name, config, base_dir=settings.base_dir, limiter=limiter_for(name, config, ledger))


def build_destinations(settings: Settings, ledger: Engine | None = None) -> dict[str, Destination]:
    return {name: build_destination(name, settings, ledger) for name in settings.destinations}
