"""`connector check` and `connector preview`: the configuration and the mappings, checked without serving.

They read the config file, the mapping files and (check --remote) each CRM together, so they live
here rather than beside any one of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from connector.cli_context import Context, pass_context

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.mapping.engine import MappingSet


_STRICT_HELP = "Fail when a mapping reads a payload path found in no sample nor Okendo's documented fields."


@click.command()
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


@click.command()
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
