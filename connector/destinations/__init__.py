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


def _shared_limits(config, share: int):  # type: ignore[no-untyped-def]
    """Several processes draining one ledger divide a CRM's request budget between them."""
    if share <= 1 or config.rate_limit.requests is None:
        return config
    requests = max(config.rate_limit.requests // share, 1)
    return config.model_copy(update={"rate_limit": config.rate_limit.model_copy(update={"requests": requests})})


def build_destination(name: str, settings: Settings, limit_share: int = 1) -> Destination:
    from connector.destinations.dryrun import DryRunDestination

    config = _shared_limits(settings.destinations[name], limit_share)
    if isinstance(config, HubSpotDestinationConfig):
        if not has_credentials(config):
            return DryRunDestination(name, "hubspot", source_key_property=config.source_key_property)
        from connector.destinations.hubspot import HubSpotDestination

        return HubSpotDestination(name, config)
    if not has_credentials(config):
        return DryRunDestination(name, "salesforce", api_version=config.api_version)
    from connector.destinations.salesforce import SalesforceDestination

    return SalesforceDestination(name, config, base_dir=settings.base_dir)


def build_destinations(settings: Settings, limit_share: int = 1) -> dict[str, Destination]:
    return {name: build_destination(name, settings, limit_share) for name in settings.destinations}
