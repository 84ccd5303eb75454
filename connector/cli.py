"""The `connector` command line (click)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.cli_context import Context, pass_context
from connector.config import CONFIG_PATH_ENV, Settings
from connector.logs import configure_logging
from connector.mapping.engine import MappingSet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="okendo-crm-connector", prog_name="connector")
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
    configure_logging()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = Context(config_path)


_STRICT_HELP = "Fail when a mapping reads a payload path found in no sample nor Okendo's documented fields."


@main.command()
@click.option("--remote", is_flag=True, help="Also check each CRM: credentials, and every object and field the mappings write.")
@click.option("--strict", is_flag=True, help=_STRICT_HELP)
@click.option("--show-config", is_flag=True,
              help="Print the configuration in force (file, ${VAR}s and CONNECTOR_SECTION__KEY overrides), secrets masked.")
@pass_context
def check(ctx: Context, remote: bool, strict: bool, show_config: bool) -> None:
    """Validate the configuration and mappings without serving; exit 1 with the problems found."""
    from connector.ledger.database import normalize_url
    from connector.mapping.path_check import unknown_path_warnings

    settings = ctx.settings()
    if show_config:
        _show_config(settings)
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
    warnings = unknown_path_warnings(mappings.mappings)
    _fail_if_strict(warnings, strict)
    _print_warnings(warnings)
    if remote:
        _check_remote(settings, mappings)


def _show_config(settings: Settings) -> None:
    import yaml
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from connector.config import SECRET_KEYS
    from connector.config_overrides import masked

    click.echo(f"# in force, from {settings.source}; secrets masked")
    for path, variable in sorted(settings.overridden.items()):
        click.echo(f"# {path}: from {variable}")
    document = masked(settings.model_dump(mode="json"), SECRET_KEYS)
    try:  # a PostgreSQL URL may carry a password
        document["database"]["url"] = make_url(settings.database.url).render_as_string(hide_password=True)
    except ArgumentError:
        pass
    click.echo(yaml.safe_dump(document, sort_keys=False).rstrip())


def _fail_if_strict(unknown_paths: list[str], strict: bool) -> None:
    if strict and unknown_paths:
        raise click.ClickException(f"{len(unknown_paths)} payload path(s) in no sample nor Okendo's documented "
                                   "fields (--strict):\n" + "\n".join(f"  {line}" for line in unknown_paths))


def _print_warnings(unknown_paths: list[str]) -> None:
    # On stderr: `preview` prints its JSON on stdout.
    for line in unknown_paths:
        click.echo(f"warning: {line}", err=True)


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


def _add_setup_salesforce() -> None:
    from connector.destinations.setup_salesforce import setup_salesforce

    setup.add_command(setup_salesforce)


_add_setup_salesforce()


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
@click.option("--strict", is_flag=True, help=_STRICT_HELP + " Paths in EVENT_FILE count as known.")
@pass_context
def preview(ctx: Context, event_file: Path, mapping_name: str | None, strict: bool) -> None:
    """Print, as JSON, the operations each destination would perform for EVENT_FILE.

    EVENT_FILE is an Okendo webhook body. No network call is made.
    """
    from connector.mapping.path_check import unknown_path_warnings
    from connector.okendo import event_name as okendo_event_name
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
    document = json.loads(body)
    event_name = okendo_event_name(str(envelope.resource_type), str(envelope.topic))
    previewed = [mapping for mapping in mappings.mappings
                 if mapping.handles(event_name) and mapping_name in (None, mapping.name)]
    warnings = unknown_path_warnings(previewed, document, str(event_file))
    _fail_if_strict(warnings, strict)
    outcomes = mappings.plan(document, only=mapping_name)
    click.echo(json.dumps([outcome.to_json() for outcome in outcomes], indent=2, ensure_ascii=False))
    if not outcomes:
        click.echo(f"no enabled mapping handles {event_name}", err=True)
    _print_warnings(warnings)


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



# --- the worker and the operator's tools -------------------------------------------------------


@main.command()
@click.option("--pidfile", type=click.Path(path_type=Path), default=None,
              help="gunicorn's pidfile (default: $CONNECTOR_PIDFILE, else data/gunicorn.pid beside the config)")
@pass_context
def reload(ctx: Context, pidfile: Path | None) -> None:
    """Check the edited config and mappings, then have the running server adopt them (SIGHUP).

    An edit that does not validate is refused here, and the server is not signalled; the server
    checks again itself and keeps its running configuration if anything is wrong. Standalone
    `connector worker` processes reload on their own SIGHUP (`kill -HUP PID`, systemd's ExecReload).
    """
    import os
    import signal

    from connector.serving import pidfile_path

    settings = ctx.settings()
    ctx.mappings(settings)
    path = pidfile or pidfile_path(ctx.config_path)
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no pidfile, so no server started from this config is running "
                                   "(start it with `make run`, or give --pidfile)") from None
    except ValueError:
        raise click.ClickException(f"{path}: does not hold a process id") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise click.ClickException(f"{path}: process {pid} is not running (a stale pidfile: the server "
                                   "stopped without removing it)") from None
    click.echo(f"config valid; asked the server (pid {pid}) to reload: its log says "
               "`configuration reloaded` once new workers run it")


# Commands that live beside the part of the connector they drive.
from connector import serve as serve_command  # noqa: E402
from connector.alerts import commands as alert_commands  # noqa: E402
from connector.backfill import commands as backfill_commands  # noqa: E402
from connector.onboarding import commands as onboarding_commands  # noqa: E402
from connector.worker import commands as worker_commands, pause_commands  # noqa: E402

for command in (serve_command.serve, worker_commands.worker, worker_commands.prune, worker_commands.replay,
                pause_commands.destination, alert_commands.alerts, onboarding_commands.okendo,
                onboarding_commands.send, onboarding_commands.doctor):
    main.add_command(command)
onboarding_commands.okendo.add_command(backfill_commands.backfill)  # connector okendo backfill ...


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
