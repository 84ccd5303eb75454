"""The `connector` command line (click)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.config import CONFIG_PATH_ENV, ConfigError, Settings, load_settings
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings


class Context:
    def __init__(self, config_path: Path | None):
        self.config_path = config_path

    def settings(self) -> Settings:
        try:
            return load_settings(self.config_path)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None

    def mappings(self, settings: Settings) -> MappingSet:
        try:
            return load_mappings(settings)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None


pass_context = click.make_pass_decorator(Context)


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_PATH_ENV,
    help=f"Config file (default: ${CONFIG_PATH_ENV} or ./config.yaml).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Okendo webhooks into Salesforce and HubSpot."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = Context(config_path)


@main.command()
@click.option("--remote", is_flag=True, help="Also check each CRM: credentials, and every object and field the mappings write.")
@pass_context
def check(ctx: Context, remote: bool) -> None:
    """Validate the configuration and mappings without serving; exit 1 with the problems found."""
    from connector.ledger.database import normalize_url

    settings = ctx.settings()
    secrets = len(settings.receiver.secrets)
    click.echo(f"{settings.source}: OK")
    database_url = normalize_url(settings.database.url, settings.base_dir)
    click.echo(f"  database: {database_url.render_as_string(hide_password=True)}")
    if secrets:
        click.echo(f"  receiver: {secrets} webhook secret(s) configured")
    elif settings.receiver.insecure_dev_mode:
        click.echo("  receiver: INSECURE development mode, unsigned events accepted")
    else:
        click.echo("  receiver: no webhook secret configured; events are refused (set OKENDO_WEBHOOK_SECRETS)")
    for name, destination in settings.destinations.items():
        click.echo(f"  destination {name}: {destination.type}")
    mappings = ctx.mappings(settings)
    click.echo(f"  mappings: {len(mappings.mappings)} enabled, for {len(mappings.handled_events())} event type(s)")
    for mapping in mappings.mappings:
        click.echo(f"    {mapping.name}: {', '.join(mapping.patterns)} -> {mapping.spec.destination} "
                   f"{mapping.spec.object} {mapping.spec.operation}")
    if remote:
        _check_remote(settings, mappings)


def _check_remote(settings: Settings, mappings: MappingSet) -> None:
    from connector.destinations import build_destination

    problems: list[str] = []
    for name in sorted(mappings.destinations()):
        destination = build_destination(name, settings)
        try:
            if destination.dry_run:
                click.echo(f"  remote {name}: no credentials, dry-run mode (nothing is written)")
                continue
            found = destination.check_remote(mappings)
        finally:
            destination.close()
        if found:
            problems.extend(found)
        else:
            click.echo(f"  remote {name}: OK, every object and field the mappings write exists")
    if problems:
        raise click.ClickException("the CRMs are not ready for the mappings:\n" + "\n".join(f"  {p}" for p in problems))


@main.group()
def setup() -> None:
    """Prepare a CRM for the mappings."""


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


@main.command()
@click.argument("event_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", "mapping_name", help="Only this mapping.")
@pass_context
def preview(ctx: Context, event_file: Path, mapping_name: str | None) -> None:
    """Print, as JSON, the operations each destination would perform for EVENT_FILE.

    EVENT_FILE is an Okendo webhook body. No network call is made.
    """
    from connector.receiver.envelope import classify

    settings = ctx.settings()
    mappings = ctx.mappings(settings)
    if mapping_name is not None and mappings.get(mapping_name) is None:
        raise click.ClickException(
            f"no enabled mapping named {mapping_name!r} (known: {', '.join(mappings.names()) or 'none'})"
        )
    body = event_file.read_bytes()
    envelope = classify(body)
    if envelope.state != "received":
        raise click.ClickException(f"{event_file}: the connector would store this event as {envelope.state}: {envelope.reason}")
    outcomes = mappings.plan(json.loads(body), only=mapping_name)
    click.echo(json.dumps([outcome.to_json() for outcome in outcomes], indent=2, ensure_ascii=False))
    if not outcomes:
        click.echo(f"no enabled mapping handles {envelope.resource_type}.{envelope.topic}", err=True)


@main.group()
def db() -> None:
    """Ledger database commands."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Apply the ledger's migrations (safe to run on every start)."""
    from connector.ledger import create_ledger_engine
    from connector.ledger.migrate import current_revision, upgrade

    settings = ctx.settings()
    engine = create_ledger_engine(settings)
    try:
        upgrade(engine)
        click.echo(f"ledger at revision {current_revision(engine)}")
    except SQLAlchemyError as error:
        raise click.ClickException(
            f"cannot migrate the ledger ({settings.source}: database.url): {error.__class__.__name__}: {error.orig if hasattr(error, 'orig') else error}"
        ) from None
    finally:
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
