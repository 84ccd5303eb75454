"""`connector events`, `show` and `stats`: the status page in a terminal, read from the ledger directly
(no server needed), with the page's own filters and queries; `--json` for scripts.

Layout is in terminal.py; what the page's queries do not read (states per destination, what is
new for --follow) in follow.py.
"""

from __future__ import annotations

import json
import time

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.cli_context import (
    TOPIC_WHAT,
    Context,
    check_destination,
    complete_destination,
    complete_state,
    complete_topic,
    current_ledger,
    known_topics,
    ledger_error,
    one_of,
    parse_time,
    pass_context,
)
from connector.status import attempts, follow, queries, terminal

FOLLOW_EVERY_S = 1.0  # how often --follow looks at the ledger
SEARCH_MAX = 200  # characters of --search kept, as the status page's box (views.py) keeps them


def _complete_origin(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [origin for origin in queries.EVENT_ORIGINS if origin.startswith(incomplete)]


@click.command()
@click.option("--topic", shell_complete=complete_topic,
              help="An event name (review.create) or a resource type (review).")
@click.option("--state", shell_complete=complete_state,
              help="An event state (" + ", ".join(queries.EVENT_STATES) + ") or events with a delivery in this "
                   "state (" + ", ".join(queries.DELIVERY_STATES) + ").")
@click.option("--destination", shell_complete=complete_destination,
              help="Events with a delivery to this destination, e.g. hubspot.")
@click.option("--email", "text", metavar="TEXT",
              help="A shopper's email, or a resource id or message id (what the status page's search box takes).")
@click.option("--search", metavar="WORDS",
              help='Events whose payload holds every one of these words ("a phrase" in quotes), as the '
                   "status page's search finds them.")
@click.option("--since", help="Events received at or after this time (ISO 8601; UTC unless it says otherwise).")
@click.option("--until", help="Events received before this time (ISO 8601).")
@click.option("--origin", shell_complete=_complete_origin,
              help="Events that came by webhook, or were read from Okendo's API by a backfill or a reconciliation.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=queries.PAGE_SIZE, show_default=True,
              help="How many of the newest events to print (first, with --follow).")
@click.option("--follow", "-f", "follow_", is_flag=True,
              help="Then keep printing new events, and each delivery outcome as it happens, until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of text.")
@pass_context
def events(ctx: Context, topic: str | None, state: str | None, destination: str | None, text: str | None,
           search: str | None, since: str | None, until: str | None, origin: str | None, limit: int, follow_: bool,
           as_json: bool) -> None:
    """List events, newest last, with their deliveries' states; --follow prints new ones as they happen.

    Each line: the event id, when it was received (UTC), its topic, the resource id, its state, and
    its deliveries' states per destination. With --follow, new events follow as they arrive, and each
    delivery outcome as it happens: the event's columns, then `-> DESTINATION: STATE` with the
    mapping, attempt number, HTTP status, duration and error. The filters are the status page's;
    a misspelt topic, state, origin or destination is refused with a suggestion (exit 2).
    """
    settings = ctx.settings()
    # A misspelt name would match nothing, silently: refused instead (exit 2), as `connector replay` does.
    selection = queries.EventFilter(
        topic=one_of(topic, known_topics(), "--topic", TOPIC_WHAT),
        state=one_of(state, queries.EVENT_STATES + queries.DELIVERY_STATES, "--state",
                     "state of an event or a delivery"),
        origin=one_of(origin, queries.EVENT_ORIGINS, "--origin", "known origin"),
        since=parse_time(since, "--since"), until=parse_time(until, "--until"),
        text=(text or "").strip() or None, destination=destination,
        search=" ".join((search or "").split())[:SEARCH_MAX] or None)
    engine = current_ledger(settings)
    try:
        check_destination(destination, settings, engine)
        with engine.connect() as connection:
            last_event, last_attempt = follow.newest_event_id(connection), follow.newest_attempt_id(connection)
            rows = follow.newest_events(connection, selection, limit)
            by_destination = follow.states_by_destination(connection, [row["id"] for row in rows])
        _print_events(rows, by_destination, as_json)
        if follow_:
            _follow(settings, engine, selection, as_json, last_event, last_attempt)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --follow ends: exit 0, no traceback
    finally:
        engine.dispose()


def _print_events(rows: list[dict], by_destination: dict, as_json: bool) -> None:
    for row in rows:
        states = by_destination.get(row["id"], {})
        click.echo(terminal.json_line(terminal.event_json(row, states)) if as_json else terminal.event_line(row, states))


def _follow(settings, engine, selection: queries.EventFilter, as_json: bool, last_event: int,  # type: ignore[no-untyped-def]
            last_attempt: int) -> None:
    """Look every FOLLOW_EVERY_S: new events first, then the outcomes of attempts finished since."""
    unavailable = False
    while True:
        time.sleep(FOLLOW_EVERY_S)
        try:
            with engine.connect() as connection:
                up_to = follow.newest_attempt_id(connection)
                fresh = follow.events_after(connection, selection, last_event)
                by_destination = follow.states_by_destination(connection, [row["id"] for row in fresh])
                outcomes = follow.outcomes_between(connection, selection, last_attempt, up_to)
        except SQLAlchemyError as error:
            if not unavailable:  # said once; the next look may find it back
                click.echo(f"{ledger_error(settings, error)}; trying again every {FOLLOW_EVERY_S:g} s", err=True)
            unavailable = True
            continue
        if unavailable:
            click.echo("the ledger answers again", err=True)
            unavailable = False
        _print_events(fresh, by_destination, as_json)
        if fresh:
            last_event = fresh[-1]["id"]
        for row in outcomes:
            click.echo(terminal.json_line(terminal.outcome_json(row)) if as_json else terminal.outcome_line(row))
        # A full page leaves the rest for the next look; otherwise everything up to `up_to` was seen.
        last_attempt = outcomes[-1]["attempt_id"] if len(outcomes) >= 500 else up_to


@click.command()
@click.argument("event_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="The event as one JSON object (as GET /api/events/ID gives it).")
@pass_context
def show(ctx: Context, event_id: int, as_json: bool) -> None:
    """Print one event: headers, payload, each delivery and every attempt with its request and answer.

    Attempts are oldest first, each request with what was sent and what the CRM answered (status,
    headers, per-field errors with what to do, body), as on the status page's event page.
    """
    settings = ctx.settings()
    engine = current_ledger(settings)
    try:
        with engine.connect() as connection:
            detail = queries.event_detail(connection, event_id)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    if detail is None:
        raise click.ClickException(f"no event {event_id} in the ledger ({settings.source}: database.url); "
                                   "`connector events` lists the newest")
    attempts.annotate(detail, attempts.destination_kinds(settings))
    operations = []
    if detail["state"] not in ("invalid", "unsupported"):
        operations = [outcome.to_json() for outcome in ctx.mappings(settings).plan(detail["document"])]
    if as_json:
        click.echo(json.dumps(terminal.plain(terminal.detail_json(detail, operations)), indent=2,
                              ensure_ascii=False, default=str))
    else:
        click.echo("\n".join(terminal.detail_lines(detail, operations)))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object (as GET /api/stats gives them).")
@pass_context
def stats(ctx: Context, as_json: bool) -> None:
    """Print the status page's overview: events, queue, deliveries per destination and topic, workers."""
    settings = ctx.settings()
    engine = current_ledger(settings)
    try:
        with engine.connect() as connection:
            figures = queries.stats(connection, heartbeat_s=settings.worker.heartbeat_s, settings=settings)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(terminal.plain(figures.to_json()), indent=2, ensure_ascii=False, default=str))
        return
    destinations = sorted(set(settings.destinations) | set(figures.deliveries_by_destination))
    click.echo("\n".join(terminal.stats_lines(figures, destinations, queries.DELIVERY_STATES)))
