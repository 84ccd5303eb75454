"""`connector setup hubspot|salesforce`: create in a CRM what the mappings write and it lacks.

`setup salesforce` is in setup_salesforce.py; HubSpot's properties are made by HubSpotDestination
(hubspot_setup.py).
"""

from __future__ import annotations

import click

from connector.cli_context import Context, pass_context
from connector.destinations.setup_salesforce import setup_salesforce


@click.group()
def setup() -> None:
    """Prepare a CRM for the mappings."""


setup.add_command(setup_salesforce)


@setup.command("hubspot")
@click.option("--yes", is_flag=True, help="Create without asking.")
@pass_context
def setup_hubspot(ctx: Context, yes: bool) -> None:
    """Create the custom properties the mappings write that HubSpot lacks (in an Okendo group)."""
    from connector.destinations import build_destination
    from connector.destinations.errors import DeliveryError
    from connector.destinations.hubspot import HubSpotDestination

    settings = ctx.settings()
    mappings = ctx.mappings(settings)
    names = [name for name, config in settings.destinations.items() if config.type == "hubspot"]
    if not names:
        raise click.ClickException(f"{settings.source}: no destination of type hubspot is configured")
    for name in names:
        destination = build_destination(name, settings)
        if not isinstance(destination, HubSpotDestination):
            raise click.ClickException(f"destination {name}: no access token (set HUBSPOT_ACCESS_TOKEN)")
        try:
            missing = destination.missing_properties(mappings)
            if not missing:
                click.echo(f"{name}: every property the mappings write exists; nothing to do")
                continue
            for crm_object, properties in missing.items():
                click.echo(f"{name}: {crm_object} lacks {', '.join(properties)}")
            if not yes and not click.confirm(f"Create them in HubSpot ({name})?", default=False):
                raise click.ClickException("nothing created")
            for created in destination.create_missing_properties(mappings):
                click.echo(f"{name}: created {created}")
        except DeliveryError as error:
            raise click.ClickException(f"{name}: HubSpot answered: {error}") from None
        finally:
            destination.close()
