"""`connector okendo subscribe|list`, `send` and `doctor`: getting Okendo's webhooks to the connector."""

from __future__ import annotations

import os

import click

from connector.cli_context import Context, pass_context
from connector.config import Settings


def _okendo_api(settings: Settings):  # type: ignore[no-untyped-def]
    from connector.okendo_api import OkendoApi

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


@click.group()
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
    from connector.okendo_api import OkendoApiError
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
    from connector.okendo_api import OkendoApiError

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


@click.command()
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


@click.command()
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
