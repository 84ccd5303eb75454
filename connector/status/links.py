"""Links that open a CRM record in the CRM's own UI."""

from __future__ import annotations

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, Settings

# HubSpot object type ids for record URLs (app.hubspot.com/contacts/{portal}/record/{type}/{id}).
HUBSPOT_OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5",
                           "notes": "0-46", "tasks": "0-27"}


def record_url(settings: Settings, destination: str, crm_object: str | None, record_id: str | None) -> str | None:
    config = settings.destinations.get(destination)
    if not record_id or not crm_object or config is None:
        return None
    if isinstance(config, HubSpotDestinationConfig):
        if not config.portal_id:
            return None
        type_id = HUBSPOT_OBJECT_TYPE_IDS.get(crm_object, crm_object)
        return f"https://app.hubspot.com/contacts/{config.portal_id}/record/{type_id}/{record_id}"
    if isinstance(config, SalesforceDestinationConfig) and config.instance_url:
        return f"{config.instance_url.rstrip('/')}/lightning/r/{crm_object}/{record_id}/view"
    return None
