"""CRM destinations: one module per CRM behind the small interface in base.py.

A configured destination without credentials runs as a dry-run destination,
so the connector works, and shows what it would do, with no CRM at all.
"""

from __future__ import annotations

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, Settings
from connector.destinations.base import Destination


def has_credentials(config: HubSpotDestinationConfig | SalesforceDestinationConfig) -> bool:
    if isinstance(config, HubSpotDestinationConfig):
        return bool(config.access_token)
    return config.auth_mode is not None


def build_destination(name: str, settings: Settings) -> Destination:
    from connector.destinations.dryrun import DryRunDestination

    config = settings.destinations[name]
    if isinstance(config, HubSpotDestinationConfig):
        if not has_credentials(config):
            return DryRunDestination(name, "hubspot", source_key_property=config.source_key_property)
        from connector.destinations.hubspot import HubSpotDestination

        return HubSpotDestination(name, config)
    if not has_credentials(config):
        return DryRunDestination(name, "salesforce", api_version=config.api_version)
    from connector.destinations.salesforce import SalesforceDestination

    return SalesforceDestination(name, config, base_dir=settings.base_dir)


def build_destinations(settings: Settings) -> dict[str, Destination]:
    return {name: build_destination(name, settings) for name in settings.destinations}
