"""okendo-crm-connector: Okendo webhooks (via Svix) into Salesforce and HubSpot."""

from connector.app import create_app

__all__ = ["create_app"]
