"""`connector setup salesforce`: the objects, fields and permissions the mappings need, in one
reviewed command (or one exported package).

It reads the declaration (mappings/salesforce.schema.yaml and the files under
`mappings.salesforce_schema`), compares it with the org, says what is missing, invisible to the
connecting user or different, asks, deploys what is missing through the Metadata API with the
`Okendo_Connector` permission set, and assigns that set to the connecting user. A field that exists
with another type is reported and never changed. Re-running on a complete org changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import click

from connector.cli_context import Context, pass_context

DEFAULT_API_VERSION = "62.0"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _differ(count: int) -> str:
    return f"{_plural(count, 'field')} {'differs' if count == 1 else 'differ'}"


def _but_required(state) -> str:  # type: ignore[no-untyped-def]
    count = sum(len(fields) for fields in state.required.values())
    return "" if not count else " but that required field" if count == 1 else " but those required fields"


def _left_alone(name: str, different: dict[str, str]) -> None:
    for field_name, how in different.items():
        click.echo(f"{name}: left alone: {field_name} {how}; change it in Salesforce, or the mapping, yourself")


def _report(name: str, state) -> None:  # type: ignore[no-untyped-def]
    from connector.destinations.salesforce_schema.package import PERMISSION_SET

    for sobject in state.missing_objects:
        click.echo(f"{name}: missing object {sobject} (with {_plural(len(state.missing[sobject]), 'field')})")
    for sobject, fields in state.missing.items():
        if sobject not in state.missing_objects:
            click.echo(f"{name}: {sobject} is missing {', '.join(fields)}")
    for sobject in state.invisible_objects:
        click.echo(f"{name}: object {sobject} exists but {state.user} cannot read it")
    for sobject, fields in state.invisible.items():
        if sobject not in state.invisible_objects:
            click.echo(f"{name}: {sobject}: {', '.join(fields)} {'exists but is' if len(fields) == 1 else 'exist but are'} "
                       f"invisible to {state.user} (field-level security)")
    _left_alone(name, state.different)
    if state.to_deploy or state.to_grant:
        for sobject, fields in state.required.items():
            for field_name in fields:
                click.echo(f"{name}: {sobject}.{field_name} is required in Salesforce: every user who may edit "
                           f"{sobject} can read and edit it, so the {PERMISSION_SET} permission set leaves it out "
                           "(Salesforce refuses field permissions on a required field); a record created without "
                           "it is refused")
        click.echo(f"{name}: the {PERMISSION_SET} permission set will grant {state.user} read and edit on every "
                   "declared object and field" + _but_required(state)
                   + ", and be assigned to them")


@click.command("salesforce")
@click.option("--yes", is_flag=True, help="Deploy without asking.")
@click.option("--check-only", is_flag=True, help="Have Salesforce validate the deploy without committing it.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the whole package to DIR instead (metadata format, for "
                   "`sf project deploy start --metadata-dir DIR`); needs no Salesforce credentials.")
@click.option("--destination", "destination_name", help="The Salesforce destination (default: the only one).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=600, show_default=True, metavar="SECONDS",
              help="How long to wait for Salesforce to finish the deploy.")
@pass_context
def setup_salesforce(ctx: Context, yes: bool, check_only: bool, export_dir: Path | None,
                     destination_name: str | None, wait_s: float) -> None:
    """Create the custom objects, fields and permissions the mappings need in Salesforce."""
    from connector.destinations.salesforce_schema import SchemaError, schema_for
    from connector.destinations.salesforce_schema.package import ExportError, build_package

    settings = ctx.settings()
    try:
        schema = schema_for(settings)
    except SchemaError as error:
        raise click.ClickException(str(error)) from None
    names = [n for n, config in settings.destinations.items() if config.type == "salesforce"]
    if destination_name is not None and destination_name not in names:
        raise click.ClickException(f"{settings.source}: no destination of type salesforce named "
                                   f"{destination_name!r}" + (f" (there is: {', '.join(names)})" if names else ""))
    if destination_name is None and len(names) > 1:
        raise click.ClickException(f"{settings.source}: {len(names)} Salesforce destinations "
                                   f"({', '.join(names)}): choose one with --destination")
    name = destination_name or (names[0] if names else None)

    if export_dir is not None and check_only:
        raise click.UsageError("--check-only validates a deploy to Salesforce; --export deploys nothing: validate "
                               "the exported package with `sf project deploy start --dry-run --metadata-dir DIR`")
    if export_dir is not None:
        # Without the org, every declared field is in the package, none of them required, so the permission set
        # grants each: a field an org has as required is made optional by the same deploy, which then accepts
        # its field permissions. `--yes` sees the org and leaves such a field alone, and out of the set.
        version = settings.destinations[name].api_version if name else DEFAULT_API_VERSION  # type: ignore[union-attr]
        package = build_package(schema, api_version=version)
        try:
            written, removed = package.write(export_dir)
        except ExportError as error:
            raise click.ClickException(str(error)) from None
        for path in removed:
            click.echo(f"removed {path}: no longer in the package")
        for kind, full_name in package.components():
            click.echo(f"  {kind} {full_name}")
        click.echo(f"wrote {_plural(len(written), 'file')} ({_plural(len(package.components()), 'component')}) to "
                   f"{export_dir}; deploy with: sf project deploy start --metadata-dir {export_dir}")
        click.echo(f"then assign the {'Okendo_Connector'} permission set to the connector's user "
                   "(Setup > Permission Sets > Manage Assignments)")
        return
    if name is None:
        raise click.ClickException(f"{settings.source}: no destination of type salesforce is configured")
    _setup(settings, name, schema, yes=yes, check_only=check_only, wait_s=wait_s)


def _setup(settings, name: str, schema, *, yes: bool, check_only: bool, wait_s: float) -> None:  # type: ignore[no-untyped-def]
    from connector.destinations import build_destination
    from connector.destinations.errors import DeliveryError
    from connector.destinations.salesforce import SalesforceDestination
    from connector.destinations.salesforce_setup import DeployTimedOut, SetupError
    from connector.destinations.salesforce_schema.package import PERMISSION_SET, build_package

    destination = build_destination(name, settings)
    if not isinstance(destination, SalesforceDestination):
        raise click.ClickException(f"destination {name}: no Salesforce credentials (set SALESFORCE_CLIENT_ID with "
                                   "SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE, or an access token); or "
                                   "write the package with --export DIR for an admin to deploy")
    try:
        state = destination.compare(schema)
        _report(name, state)
        if state.complete:
            click.echo(f"{name}: every declared object and field exists and {state.user} can use it; nothing to do")
            if state.different:
                raise click.ClickException(f"{_differ(len(state.different))} from the declaration "
                                           "(listed above, left alone)")
            return
        package = build_package(schema, api_version=destination.config.api_version, missing=state.missing,
                                create_objects=set(state.missing_objects), required=state.required)
        count = len(package.components())
        verb = "Validate (check only)" if check_only else "Deploy"
        if not yes and not click.confirm(f"{verb} {_plural(count, 'component')} to {name}?", default=False):
            raise click.ClickException("nothing changed")
        try:
            outcome = destination.deploy(package, check_only=check_only, timeout_s=wait_s,
                                         on_poll=lambda status: click.echo(f"{name}: deploy {status}"))
        except DeployTimedOut as late:
            # Not a failure: Salesforce goes on with it, and commits it (or rolls it back) on its own.
            raise click.ClickException(
                f"{name}: the deploy {late.async_id} is still {late.state} after {late.waited_s:.0f} s and may yet "
                "finish: follow it in Setup > Deployment Status, then run `connector setup salesforce` again "
                "(it deploys only what is still missing, and assigns the permission set)") from None
        if outcome.status != "Succeeded":
            for failure in outcome.failures:
                click.echo(f"{name}: refused: {failure.name()}: {failure.problem}", err=True)
            if outcome.error_message:
                click.echo(f"{name}: refused: {outcome.error_code or 'the deploy'}: {outcome.error_message}", err=True)
            raise click.ClickException(
                f"{name}: the deploy {outcome.async_id} ended {outcome.status}; nothing was changed (Salesforce rolls "
                "a failed deploy back). Fix what Salesforce says above, or give an admin the package from "
                "`connector setup salesforce --export DIR`")
        for component in outcome.successes:  # Salesforce's own list, not the package's
            how = "created" if component.created else "changed" if component.changed else "unchanged"
            click.echo(f"{name}: {'valid' if check_only else 'deployed'}: {component.name()} ({how})")
            if component.problem:
                click.echo(f"{name}: warning: {component.name()}: {component.problem}")
        if check_only:
            click.echo(f"{name}: validation passed; nothing was committed (run without --check-only to deploy)")
            return
        if destination.assign_permission_set():
            click.echo(f"{name}: assigned {PERMISSION_SET} to {state.user}")
        after = destination.compare(schema)
        if not after.complete:
            _report(name, after)
            raise click.ClickException(f"{name}: deployed, but Salesforce still lacks or hides what is listed above")
        # The grant made hidden fields visible to describe, which tells more than FieldDefinition did.
        newly = {key: text for key, text in after.different.items() if key not in state.different}
        _left_alone(name, newly)
        different = {**state.different, **newly}
        if different:
            raise click.ClickException(f"{name}: deployed what was missing, but {_differ(len(different))} from the "
                                       "declaration (listed above, left alone)")
        click.echo(f"{name}: done: every declared object and field exists and {after.user} can use it")
    except SetupError as error:
        raise click.ClickException(f"{name}: {error}") from None
    except DeliveryError as error:
        hint = ""
        if error.code in ("INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS_OR_READONLY", "API_DISABLED_FOR_ORG"):
            hint = ("; the connecting user may not deploy metadata (it needs \"Modify Metadata Through Metadata API "
                    "Functions\" or \"Customize Application\"): give an admin the package from "
                    "`connector setup salesforce --export DIR`")
        raise click.ClickException(f"{name}: Salesforce answered: {error}{hint}") from None
    finally:
        destination.close()
