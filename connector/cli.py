"""The `connector` command line (click)."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.config import CONFIG_PATH_ENV, ConfigError, Settings, load_settings
from connector.logs import configure_logging
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings


class Context:
    def __init__(self, config_path: Path | None):
        self.config_path = config_path

    def settings(self) -> Settings:
        try:
            settings = load_settings(self.config_path)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        configure_logging(settings)  # the configured format, and the secrets to redact
        return settings

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


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from connector.ledger import create_ledger_engine

    return create_ledger_engine(settings)


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


@main.command()
@click.option("--threads", type=click.IntRange(1, 64), help="Delivery threads (default: worker.threads).")
@click.option("--share", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="How many worker processes share each CRM's rate limit (each takes 1/N of it).")
@click.option("--once", is_flag=True, help="Drain what is due now, then exit.")
@pass_context
def worker(ctx: Context, threads: int | None, share: int, once: bool) -> None:
    """Run delivery workers: any number, on any host sharing the ledger. SIGTERM stops within a bound."""
    import signal
    import threading

    from connector.ledger.migrate import is_current
    from connector.serving import Configuration, reload_configuration
    from connector.worker.runner import Worker

    settings = ctx.settings()
    mappings = ctx.mappings(settings)
    engine = _engine(settings)
    if not is_current(engine):
        raise click.ClickException("the ledger's migrations are not current: run `connector db upgrade` first")
    runner = Worker(settings, mappings, engine, limit_share=share)
    if once:
        while runner.run_once():
            pass
        runner.stop(timeout=0)
        return
    stop, hangup = threading.Event(), threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: (hangup.set(), stop.set()))
    runner.start(threads)
    click.echo(f"worker {runner.name} running; SIGHUP reloads config.yaml and the mappings, "
               "SIGTERM or Ctrl-C stops it")
    running = Configuration(settings, mappings)
    while True:
        stop.wait()
        if not hangup.is_set():
            break
        stop.clear(), hangup.clear()
        adopted = reload_configuration(running, ctx.config_path, logging.getLogger("connector.worker"))
        if adopted is running:
            continue
        if adopted.settings.database.url != running.settings.database.url:
            logging.getLogger("connector.worker").warning(
                "database.url changed: a worker keeps its ledger until it is restarted")
        # Finish (or give back) the current batches under the old mappings, then go on with the new.
        runner.stop()
        running = adopted
        runner = Worker(running.settings, running.mappings, engine, limit_share=share).start(threads)
    click.echo("stopping: finishing or releasing the current batches")
    runner.stop()


def _current_ledger(settings: Settings):  # type: ignore[no-untyped-def]
    """The ledger's engine, once it is reachable and migrated (else a clear error, not a traceback)."""
    from connector.ledger.migrate import is_current

    engine = _engine(settings)
    try:
        current = is_current(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        raise click.ClickException(_ledger_error(settings, error)) from None
    if not current:
        engine.dispose()
        raise click.ClickException("the ledger's migrations are not current: run `connector db upgrade` first")
    return engine


def _ledger_error(settings: Settings, error: SQLAlchemyError) -> str:
    return (f"the ledger is unavailable ({settings.source}: database.url): "
            f"{error.__class__.__name__}: {getattr(error, 'orig', None) or error}")


@main.command()
@click.option("--older-than-days", type=float, help="Default: retention.finished_days.")
@pass_context
def prune(ctx: Context, older_than_days: float | None) -> None:
    """Delete finished events older than the retention period (never one still needing delivery)."""
    from connector.worker.retention import prune as prune_events

    settings = ctx.settings()
    days = older_than_days if older_than_days is not None else settings.retention.finished_days
    if days is None:
        raise click.ClickException(f"{settings.source}: retention.finished_days is not set; pass --older-than-days")
    engine = _current_ledger(settings)
    try:
        removed = prune_events(engine, days, batch_size=settings.retention.batch_size)
    except SQLAlchemyError as error:
        raise click.ClickException(_ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    click.echo(f"pruned {removed} finished event(s) older than {days:g} days; open deliveries and links are kept")


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-27T10:00:00Z)",
                                 param_hint=option) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@main.command()
@click.option("--event", "event_ids", type=int, multiple=True, help="An event id (repeatable).")
@click.option("--delivery", "delivery_ids", type=int, multiple=True, help="A delivery id (repeatable).")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["dead", "retrying", "pending", "delivered", "skipped", "stale"]),
              help="Deliveries in this state (repeatable).")
@click.option("--topic", help="An event name, e.g. review.create, or a resource type, e.g. review.")
@click.option("--destination", help="A destination name, e.g. hubspot.")
@click.option("--since", help="Events received at or after this time (ISO 8601).")
@click.option("--until", help="Events received before this time (ISO 8601).")
@click.option("--by", default=lambda: os.environ.get("USER") or "cli", help="Who is replaying (recorded).")
@click.option("--yes", is_flag=True, help="Do it without asking.")
@pass_context
def replay(ctx: Context, event_ids: tuple[int, ...], delivery_ids: tuple[int, ...], states: tuple[str, ...],
           topic: str | None, destination: str | None, since: str | None, until: str | None, by: str,
           yes: bool) -> None:
    """Queue deliveries again (the signature is not checked again: it was verified on arrival)."""
    from connector.worker.replay import ReplayFilter, count, replay as requeue

    selection = ReplayFilter(event_ids=event_ids, delivery_ids=delivery_ids, states=states, topic=topic,
                             destination=destination, since=_parse_time(since, "--since"),
                             until=_parse_time(until, "--until"))
    if selection.is_empty():
        raise click.UsageError("say what to replay: --event, --delivery, --state, --topic, --destination, "
                               "--since or --until")
    settings = ctx.settings()
    engine = _current_ledger(settings)
    try:
        preview = count(engine, selection)
        click.echo(f"{preview.requeued} delivery(ies) to replay"
                   + (f"; {preview.held} held by a worker right now are left alone" if preview.held else ""))
        if not preview.requeued and not event_ids:
            return
        if not yes and not click.confirm("Replay them?", default=False):
            raise click.ClickException("nothing replayed")
        summary = requeue(engine, selection, by=by)
    except SQLAlchemyError as error:
        raise click.ClickException(_ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    click.echo(f"replayed {summary.requeued} delivery(ies) as {by}"
               + (f"; re-mapping {len(summary.replanned_events)} event(s)" if summary.replanned_events else ""))


# --- onboarding: subscribe Okendo, send signed test events, check a setup ----------------------


def _okendo_api(settings: Settings):  # type: ignore[no-untyped-def]
    from connector.onboarding.okendo_api import OkendoApi

    config = settings.okendo
    missing = [variable for variable, value in (("OKENDO_USER_ID", config.user_id), ("OKENDO_API_KEY", config.api_key))
               if not value]
    if missing:
        raise click.ClickException(
            f"{' and '.join(missing)} not set: Okendo's API needs your Okendo user id and API key "
            f"({settings.source} reads them as okendo.user_id and okendo.api_key, as the project's config.yaml does)")
    return OkendoApi(config.api_base_url, config.user_id, config.api_key, timeout=config.timeout_s)


def _okendo_failure(error: Exception) -> click.ClickException:
    """Okendo's error as the command's error, with Okendo's own reasons one per line."""
    lines = [str(error), *(f"  {detail}" for detail in getattr(error, "details", []))]
    return click.ClickException("\n".join(lines))


@main.group()
def okendo() -> None:
    """Okendo's webhook subscriptions (Merchant REST API; needs OKENDO_USER_ID and OKENDO_API_KEY)."""


@okendo.command("subscribe")
@click.option("--url", "endpoint_url", required=True,
              help="The connector's public webhook address, e.g. https://YOUR-HOST/webhooks/okendo.")
@click.option("--topics", "topics", multiple=True,
              help="Events, comma-separated (review.create,review.update; review.* works). "
                   "Default: every event the enabled mappings handle.")
@click.option("--allow-duplicate", is_flag=True,
              help="Create a subscription even if one already points at this URL.")
@pass_context
def okendo_subscribe(ctx: Context, endpoint_url: str, topics: tuple[str, ...], allow_duplicate: bool) -> None:
    """Subscribe the connector to Okendo's webhooks and print the signing secret, once."""
    from connector.onboarding.endpoint import EndpointError, check_endpoint_url
    from connector.onboarding.okendo_api import OkendoApiError
    from connector.onboarding.topics import TopicError, default_events, parse_events

    endpoint_url = endpoint_url.strip()
    try:
        warnings = check_endpoint_url(endpoint_url)
    except EndpointError as error:
        raise click.BadParameter(str(error).removeprefix(f"--url {endpoint_url!r}: "), param_hint="--url") from None
    settings = ctx.settings()
    if topics:
        try:
            events = parse_events(topics)
        except TopicError as error:
            raise click.BadParameter(str(error), param_hint="--topics") from None
    else:
        events, left_out = default_events(ctx.mappings(settings))
        if not events:
            raise click.ClickException(f"no enabled mapping handles an Okendo event ({settings.source}: mappings); "
                                       "enable one, or name the events with --topics")
        if left_out:
            click.echo(f"not subscribed: {', '.join(left_out)} (your mappings handle them, but Okendo documents no "
                       "such events; name them in --topics to ask for them anyway)", err=True)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    with _okendo_api(settings) as api:
        try:
            existing = [s for s in api.list_subscriptions()
                        if (s.endpoint_url or "").rstrip("/") == endpoint_url.rstrip("/")]
            if existing and not allow_duplicate:
                found = existing[0]
                raise click.ClickException(
                    f"Okendo already has subscription {found.subscription_id} for {found.endpoint_url} "
                    f"({len(found.events)} event(s)). A second one would deliver every event twice under "
                    "different message ids, which the connector cannot deduplicate. Keep using its secret; if "
                    "that is lost, delete the subscription in Okendo first, or pass --allow-duplicate")
            click.echo(f"subscribing {endpoint_url} to {len(events)} event(s): {', '.join(events)}")
            created = api.create_subscription(endpoint_url, events)
        except OkendoApiError as error:
            if error.status in (400, 422):
                raise _okendo_failure(OkendoApiError(
                    f"Okendo refused the subscription (HTTP {error.status}); fix --url (a public HTTPS address) "
                    "or --topics (leave out what Okendo does not offer), as Okendo says:", error.status,
                    error.details)) from None
            raise _okendo_failure(error) from None
    subscription = created.subscription
    click.echo(f"created subscription {subscription.subscription_id} for {subscription.endpoint_url}: "
               f"{len(subscription.events)} event(s), {'enabled' if subscription.enabled else 'NOT enabled'}")
    if not created.secret:
        raise click.ClickException(
            f"Okendo's answer carries no signing secret we recognise (its fields: {', '.join(created.fields)}). "
            "Do not subscribe again (events would arrive twice): find the secret in Okendo's admin or ask Okendo "
            "support, then set OKENDO_WEBHOOK_SECRETS")
    # The only time a secret is ever printed: Okendo shows it once, and it is written nowhere.
    click.echo("\nOkendo shows this signing secret once and the connector stores it nowhere. Put it in the "
               "environment the connector runs with, and restart it:\n")
    click.echo(f"  export OKENDO_WEBHOOK_SECRETS='{created.secret}'\n")
    if os.environ.get("OKENDO_WEBHOOK_SECRETS"):
        click.echo("OKENDO_WEBHOOK_SECRETS is already set here: to accept the old and the new secret while "
                   "switching, list both, separated by a space.")
    click.echo("Until it is set, /webhooks/okendo answers 503 and Svix keeps retrying: nothing is lost.")


@okendo.command("list")
@pass_context
def okendo_list(ctx: Context) -> None:
    """Show the webhook subscriptions Okendo has for your store."""
    from connector.onboarding.okendo_api import OkendoApiError

    settings = ctx.settings()
    with _okendo_api(settings) as api:
        try:
            subscriptions = api.list_subscriptions()
        except OkendoApiError as error:
            raise _okendo_failure(error) from None
    if not subscriptions:
        click.echo("no webhook subscriptions yet: create one with "
                   "`connector okendo subscribe --url https://YOUR-HOST/webhooks/okendo`")
        return
    click.echo(f"{len(subscriptions)} subscription(s):")
    for subscription in subscriptions:
        state = {True: "enabled", False: "DISABLED", None: "state unknown"}[subscription.enabled]
        click.echo(f"  {subscription.subscription_id}  {subscription.endpoint_url}  {state}  "
                   f"version {subscription.version}  created {subscription.created}")
        click.echo(f"    {len(subscription.events)} event(s): {', '.join(subscription.events) or 'none'}")


@main.command()
@click.argument("samples", nargs=-1, metavar="[SAMPLE.json|NAME]...")
@click.option("--all", "send_all", is_flag=True, help="Post every shipped sample (creates, then updates, then deletes).")
@click.option("--url", help="The connector's webhook endpoint; a base URL gets /webhooks/okendo. "
                            "Default: http://127.0.0.1:8000/webhooks/okendo, where `make run` serves.")
@click.option("--id", "message_id", help="The message id (webhook-id); default: a new msg_… id for each event.")
@click.option("--secret", help="Signing secret; default: the first of $OKENDO_WEBHOOK_SECRETS "
                               "(prefer the variable: options show in `ps` and shell history).")
@click.option("--redeliver", is_flag=True,
              help="Post each event a second time with the same message id, as Svix retries: a duplicate.")
@click.option("--svix-headers", is_flag=True, help="Send svix-id/-timestamp/-signature instead of webhook-*.")
@click.option("--timeout", type=click.FloatRange(0.1, 120), default=10.0, show_default=True, help="Seconds per post.")
def send(samples: tuple[str, ...], send_all: bool, url: str | None, message_id: str | None, secret: str | None,
         redeliver: bool, svix_headers: bool, timeout: float) -> None:
    """Sign events exactly as Svix does and post them to the connector, printing each answer.

    Each argument is a JSON file or a shipped sample's name (review.create, loyalty_customer.update, ...;
    see --all). Exits 1 when the connector does not acknowledge a post.
    """
    from connector.onboarding import samples as sample_bodies
    from connector.onboarding import signed_post

    if send_all and samples:
        raise click.UsageError("give sample names or files, or --all, not both")
    if not send_all and not samples:
        raise click.UsageError("name a sample (e.g. `connector send review.create`), a JSON file, or use --all")
    try:
        target = signed_post.webhook_url(url or signed_post.DEFAULT_URL)
        if message_id is not None:
            message_id = signed_post.check_message_id(message_id)
        signing_secret = signed_post.signing_secret(secret)
        bodies = sample_bodies.all_shipped() if send_all else [sample_bodies.load(name) for name in samples]
    except (signed_post.SendError, sample_bodies.SampleError) as error:
        raise click.ClickException(str(error)) from None
    if message_id is not None and len(bodies) > 1:
        raise click.UsageError("--id names one event's message id: send one event with it")
    family = "svix" if svix_headers else "webhook"

    refused, new, duplicates = 0, 0, 0
    for sample in bodies:
        problem = sample_bodies.json_problem(sample.body)
        if problem:
            click.echo(f"note: {sample.label} is {problem}; the connector stores it as invalid", err=True)
        msg_id = message_id or signed_post.new_message_id()
        first_event = None
        for attempt in range(2 if redeliver else 1):
            headers = signed_post.signed_headers(sample.body, msg_id, signing_secret, family=family)
            try:
                answer = signed_post.post(target, sample.body, headers, timeout)
            except signed_post.SendError as error:
                raise click.ClickException(str(error)) from None
            again = " (again, same message id)" if attempt else ""
            click.echo(f"{sample.label} -> {target}  {msg_id}{again}")
            click.echo(f"  {signed_post.shown(answer)}")
            click.echo(f"  {signed_post.meaning(answer)}")
            event_id = (answer.data or {}).get("event_id")
            if not answer.acknowledged:
                refused += 1
                break
            if (answer.data or {}).get("duplicate"):
                duplicates += 1
            else:
                new += 1
            if attempt and event_id != first_event:
                click.echo(f"  expected the redelivery to be event {first_event} again", err=True)
                refused += 1
            first_event = event_id
    if len(bodies) > 1 or redeliver:
        click.echo(f"{new + duplicates + refused} post(s): {new} new, {duplicates} duplicate(s), "
                   f"{refused} not acknowledged")
    if refused:
        raise click.ClickException(f"{refused} post(s) not acknowledged by {target}")


@main.command()
@pass_context
def doctor(ctx: Context) -> None:
    """Check everything a first run needs, one line per check with what to do when it fails."""
    from connector.onboarding.doctor import FAIL, WARN, run_checks

    failures = warnings = 0
    for check in run_checks(ctx.config_path):
        line = f"{check.status:<5}{check.name}: {check.summary}"
        if check.fix and check.status in (FAIL, WARN):
            line += f" -> {check.fix}"
        click.echo(line)
        for detail in check.details:
            click.echo(f"       {detail}")
        failures += check.status == FAIL
        warnings += check.status == WARN
    if failures:
        raise click.ClickException(f"{failures} check(s) failed, {warnings} warning(s): fix the lines marked FAIL")
    click.echo("all checks passed" + (f", {warnings} warning(s)" if warnings else ""))


# Commands that live beside the part of the connector they drive.
from connector.worker.pause_commands import destination  # noqa: E402
from connector.alerts.commands import alerts  # noqa: E402
from connector.serve import serve  # noqa: E402

main.add_command(destination)
main.add_command(alerts)
main.add_command(serve)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
