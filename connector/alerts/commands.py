"""`connector alerts test|list|run`: try each target now, see the outbox, or evaluate without a worker."""

from __future__ import annotations

import signal
import threading

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.alerts.message import TEST, Alert, Outgoing, status_link
from connector.ledger.models import utcnow


@click.group()
def alerts() -> None:
    """Alert targets and the alert outbox (see docs/alerts.md)."""


def _configured(ctx):  # type: ignore[no-untyped-def]
    settings = ctx.settings()
    if not settings.alerts.enabled:
        raise click.ClickException(f"{settings.source}: alerts.targets is empty: add a webhook, slack or email "
                                   "target (see the alerts section of config.yaml)")
    return settings


@alerts.command("test")
@click.option("--target", "names", multiple=True, help="Only this target (repeatable; default: every one).")
@click.pass_obj
def test_alert(ctx, names: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """Send a test alert to each target now (not through the outbox) and say what each answered."""
    from connector.alerts.targets import SendError, build_targets

    settings = _configured(ctx)
    targets = build_targets(settings.alerts)
    unknown = sorted(set(names) - set(targets))
    if unknown:
        raise click.ClickException(f"{settings.source}: no alert target named {', '.join(unknown)} under "
                                   f"alerts.targets (configured: {', '.join(sorted(targets))})")
    now = utcnow()
    alert = Alert(TEST, "test", "Test alert from the okendo-crm-connector",
                  "This is a test: alerts from this connector reach this target. Nothing is wrong.", now,
                  status_link(settings.alerts, "/status"), {})
    failed = 0
    for name, target in sorted(targets.items()):
        if names and name not in names:
            continue
        try:
            target.send(Outgoing(alert, f"okendo-alert-test-{int(now.timestamp())}-{name}"))
        except SendError as error:
            failed += 1
            click.echo(f"FAIL {name} ({target.describe()}): {error}")
            continue
        click.echo(f"ok   {name} ({target.describe()}): test alert taken")
    if failed:
        raise click.ClickException(f"{failed} target(s) did not take the test alert: fix the lines marked FAIL")


@alerts.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def list_alerts(ctx, limit: int) -> None:  # type: ignore[no-untyped-def]
    """The newest messages in the alert outbox: sent, waiting to be retried, or given up."""
    from connector.alerts.outbox import recent
    from connector.cli_context import current_ledger, ledger_error

    settings = ctx.settings()
    engine = current_ledger(settings)
    try:
        with engine.connect() as connection:
            rows = recent(connection, limit)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    if not rows:
        click.echo("the alert outbox is empty")
    for row in rows:
        when = row.sent_at or row.created_at
        line = (f"{row.id:>6} {when:%Y-%m-%d %H:%M:%S} {row.state:<8} {row.target}: "
                f"{row.message.get('title', row.condition)} ({row.attempts} attempt(s))")
        if row.state != "sent" and row.last_error:
            line += f"; last error: {row.last_error}"
        click.echo(line)


@alerts.command("run")
@click.option("--once", is_flag=True, help="Evaluate and send once, then exit (for a cron job or a timer).")
@click.pass_obj
def run_alerts(ctx, once: bool) -> None:  # type: ignore[no-untyped-def]
    """Evaluate the alerts and send them without delivering anything.

    Delivery workers already do this; run it on another host too to hear that no worker is alive
    (a worker cannot say that of itself).
    """
    from connector.alerts.loop import AlertLoop
    from connector.cli_context import current_ledger
    from connector.worker.runner import worker_name

    settings = _configured(ctx)
    engine = current_ledger(settings)
    loop = AlertLoop(settings, engine, f"alerts:{worker_name()}")
    try:
        if once:
            tick = loop.tick()
            click.echo(f"{tick.written} message(s) written, {tick.sent} sent, {tick.failed} failed")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        loop.start()
        click.echo("alerts running; SIGTERM or Ctrl-C stops")
        stop.wait()
        loop.stop()
    except SQLAlchemyError as error:
        from connector.cli_context import ledger_error

        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
