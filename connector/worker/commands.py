"""`connector worker`, `prune` and `replay`: the delivery worker and the operator's tools on its ledger."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import click

from connector.cli_context import (
    Context,
    complete_destination,
    complete_topic,
    current_ledger,
    ledger_engine,
    ledger_error,
    parse_time,
    pass_context,
)


@click.command()
@click.option("--threads", type=click.IntRange(1, 64), help="Delivery threads (default: worker.threads).")
@click.option("--share", type=click.IntRange(1, 1000), default=None, hidden=True,
              help="Deprecated, ignored: every worker shares each CRM's whole rate limit through the ledger.")
@click.option("--once", is_flag=True,
              help="Drain what is due now, then exit with a one-line summary of what was done.")
@pass_context
def worker(ctx: Context, threads: int | None, share: int | None, once: bool) -> None:
    """Run delivery workers: any number, on any host sharing the ledger. SIGTERM stops within a bound.

    Every worker on the ledger draws on each CRM account's one rate limit (connector.destinations.ratelimit).
    """
    import signal
    import threading

    from connector.ledger.migrate import is_current
    from connector.serving import Configuration, reload_configuration
    from connector.worker.runner import Worker

    if share is not None:
        # Kept so systemd units and scripts that still pass it start; it no longer divides anything.
        click.echo("connector worker: --share is deprecated and ignored: every worker now shares each CRM's "
                   "whole rate limit through the ledger; remove --share (and WORKER_SHARE) from the command line",
                   err=True)
    settings = ctx.settings()
    mappings = ctx.mappings(settings)
    engine = ledger_engine(settings)
    if not is_current(engine):
        raise click.ClickException("the ledger's migrations are not current: run `connector db upgrade` first")
    if once:
        _drain_once(settings, mappings, engine)
        return
    runner = Worker(settings, mappings, engine)
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
        runner = Worker(running.settings, running.mappings, engine).start(threads)
    click.echo("stopping: finishing or releasing the current batches")
    runner.stop()


def _drain_once(settings, mappings, engine) -> None:  # type: ignore[no-untyped-def]
    """`worker --once`: deliver what is due now, then say in one line what was done."""
    from connector import metrics
    from connector.worker.runner import Worker

    started, calls_before = time.monotonic(), _crm_calls(metrics)
    events_before, attempts_before = _events_waiting(engine), _newest_attempt(engine)
    runner = Worker(settings, mappings, engine)
    try:
        while runner.run_once():
            pass
    finally:
        runner.stop(timeout=0)
    planned = _events_planned(engine, *events_before)
    click.echo(_once_summary(planned, _outcomes(engine, runner.name, attempts_before), _crm_calls(metrics) - calls_before,
                             time.monotonic() - started))


def _newest_attempt(engine) -> int:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT max(id) FROM delivery_attempts")).scalar_one() or 0


def _outcomes(engine, worker_name: str, after_attempt: int) -> Counter[str]:  # type: ignore[no-untyped-def]
    """What this worker's attempts came to, by outcome: each attempt names the worker that made it
    (deliveries found stale or with nothing to do count too); read after the attempts that were there."""
    import sqlalchemy as sa

    with engine.connect() as connection:
        return Counter(dict(connection.execute(sa.text(
            "SELECT outcome, count(*) FROM delivery_attempts WHERE id > :after AND worker = :name GROUP BY outcome"),
            {"after": after_attempt, "name": worker_name}).all()))


def _crm_calls(metrics) -> int:  # type: ignore[no-untyped-def]
    """CRM calls this process made so far (each retry counts), from its own metrics (connector/metrics.py)."""
    return int(sum(sample.value for family in metrics.CRM_CALLS.collect() for sample in family.samples
                   if sample.name.endswith("_total")))


def _events_waiting(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(the newest event id, how many events up to it wait to be planned)."""
    import sqlalchemy as sa

    with engine.connect() as connection:
        newest = connection.execute(sa.text("SELECT max(id) FROM events")).scalar_one() or 0
        waiting = connection.execute(sa.text("SELECT count(*) FROM events WHERE state = 'received' AND id <= :n"),
                                     {"n": newest}).scalar_one()
    return newest, waiting


def _events_planned(engine, newest: int, waiting: int) -> int:  # type: ignore[no-untyped-def]
    """Events planned since `_events_waiting`: those no longer waiting, and any that arrived and were planned.
    (Read from the ledger: a server's embedded workers planning meanwhile count too.)"""
    import sqlalchemy as sa

    with engine.connect() as connection:
        still = connection.execute(sa.text("SELECT count(*) FROM events WHERE state = 'received' AND id <= :n"),
                                   {"n": newest}).scalar_one()
        arrived = connection.execute(sa.text("SELECT count(*) FROM events WHERE state <> 'received' AND id > :n"),
                                     {"n": newest}).scalar_one()
    return max(waiting - still, 0) + arrived


def _once_summary(planned: int, outcomes: Counter[str], crm_calls: int, seconds: float) -> str:
    # The outcomes of connector/worker/delivery.py's Finished: delivered, skipped, stale, retry, dead, paused.
    handled = sum(outcomes.values())
    parts = [f"{outcomes['delivered']} delivered", f"{outcomes['dead']} failed (dead)",
             f"{outcomes['retry']} retrying"]
    parts += [f"{outcomes[name]} {name}" for name in ("stale", "skipped", "paused") if outcomes[name]]
    return (f"worker --once: {planned} event(s) planned; {handled} delivery(ies) handled: {', '.join(parts)}; "
            f"{crm_calls} CRM call(s); {seconds:.1f} s")


@click.command()
@click.option("--older-than-days", type=float, help="Default: retention.finished_days.")
@pass_context
def prune(ctx: Context, older_than_days: float | None) -> None:
    """Delete finished events older than the retention period (never one still needing delivery)."""
    from sqlalchemy.exc import SQLAlchemyError

    from connector.worker.retention import prune as prune_events

    settings = ctx.settings()
    days = older_than_days if older_than_days is not None else settings.retention.finished_days
    if days is None:
        raise click.ClickException(f"{settings.source}: retention.finished_days is not set; pass --older-than-days")
    engine = current_ledger(settings)
    try:
        removed = prune_events(engine, days, batch_size=settings.retention.batch_size)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    click.echo(f"pruned {removed} finished event(s) older than {days:g} days; open deliveries and links are kept")


@click.command()
@click.option("--event", "event_ids", type=int, multiple=True, help="An event id (repeatable).")
@click.option("--delivery", "delivery_ids", type=int, multiple=True, help="A delivery id (repeatable).")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["dead", "retrying", "pending", "delivered", "skipped", "stale"]),
              help="Deliveries in this state (repeatable).")
@click.option("--topic", shell_complete=complete_topic,
              help="An event name, e.g. review.create, or a resource type, e.g. review.")
@click.option("--destination", shell_complete=complete_destination, help="A destination name, e.g. hubspot.")
@click.option("--since", help="Events received at or after this time (ISO 8601).")
@click.option("--until", help="Events received before this time (ISO 8601).")
@click.option("--origin", type=click.Choice(["webhook", "backfill", "reconcile"]),
              help="Events that came by webhook, or were read from Okendo's API by a backfill or a reconciliation.")
@click.option("--by", default=lambda: os.environ.get("USER") or "cli", help="Who is replaying (recorded).")
@click.option("--yes", is_flag=True, help="Do it without asking.")
@pass_context
def replay(ctx: Context, event_ids: tuple[int, ...], delivery_ids: tuple[int, ...], states: tuple[str, ...],
           topic: str | None, destination: str | None, since: str | None, until: str | None, origin: str | None,
           by: str, yes: bool) -> None:
    """Queue deliveries again (the signature is not checked again: it was verified on arrival)."""
    from sqlalchemy.exc import SQLAlchemyError

    from connector.cli_context import TOPIC_WHAT, check_destination, known_topics, one_of
    from connector.worker.replay import ReplayFilter, count, replay as requeue

    settings = ctx.settings()
    # A misspelt name would select nothing and "replay" nothing, successfully: refused instead.
    topic = one_of(topic, known_topics(), "--topic", TOPIC_WHAT)

    selection = ReplayFilter(event_ids=event_ids, delivery_ids=delivery_ids, states=states, topic=topic,
                             destination=destination, since=parse_time(since, "--since"),
                             until=parse_time(until, "--until"), origin=origin)
    if selection.is_empty():
        raise click.UsageError("say what to replay: --event, --delivery, --state, --topic, --destination, "
                               "--since, --until or --origin")
    engine = current_ledger(settings)
    try:
        check_destination(destination, settings, engine)
        preview = count(engine, selection)
        click.echo(f"{preview.requeued} delivery(ies) to replay"
                   + (f"; {preview.held} held by a worker right now are left alone" if preview.held else ""))
        if not preview.requeued and not event_ids:
            return
        if not yes and not click.confirm("Replay them?", default=False):
            raise click.ClickException("nothing replayed")
        summary = requeue(engine, selection, by=by)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    click.echo(f"replayed {summary.requeued} delivery(ies) as {by}"
               + (f"; re-mapping {len(summary.replanned_events)} event(s)" if summary.replanned_events else ""))

