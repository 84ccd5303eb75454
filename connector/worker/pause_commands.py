"""`connector destination pause|resume|list`: hold a destination's deliveries, or let them go again."""

from __future__ import annotations

import os

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.worker import pausing


def _who() -> str:
    return os.environ.get("USER") or "cli"


@click.group()
def destination() -> None:
    """Pause, resume and list destinations (a paused one's deliveries wait and spend no attempts)."""


def _engine_for(ctx, name: str | None):  # type: ignore[no-untyped-def]
    from connector.cli_context import current_ledger, did_you_mean

    settings = ctx.settings()
    if name is not None and name not in settings.destinations:
        configured = sorted(settings.destinations)
        # A usage error (exit 2), like a misspelt --destination of replay or events.
        raise click.BadParameter(f"{settings.source}: no destination named {name!r} under `destinations`"
                                 f"{did_you_mean(name, configured)} (configured: {', '.join(configured) or 'none'})",
                                 param_hint="NAME")
    return settings, current_ledger(settings)


@destination.command()
@click.argument("name")
@click.option("--reason", default="paused by an operator", show_default=True, help="Shown on the status page.")
@click.option("--by", default=_who, help="Who is pausing (recorded).")
@click.pass_context
def pause(click_ctx: click.Context, name: str, reason: str, by: str) -> None:
    """Stop delivering to NAME: its deliveries wait, no attempt is spent, until `resume`."""
    from connector.cli_context import ledger_error

    settings, engine = _engine_for(click_ctx.obj, name)
    try:
        changed = pausing.pause(engine, name, reason, by)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    click.echo(f"{name} paused: {reason}" if changed else f"{name} was paused already; nothing changed")


@destination.command()
@click.argument("name")
@click.pass_context
def resume(click_ctx: click.Context, name: str) -> None:
    """Deliver to NAME again: its waiting deliveries go at the workers' next claim."""
    from connector.cli_context import ledger_error

    settings, engine = _engine_for(click_ctx.obj, name)
    try:
        ended = pausing.resume(engine, name)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    if ended is None:
        click.echo(f"{name} was not paused; nothing changed")
    else:
        click.echo(f"{name} resumed (it was paused by {ended.by} at {ended.at:%Y-%m-%d %H:%M:%S} UTC: {ended.reason})")


@destination.command("list")
@click.pass_context
def list_destinations(click_ctx: click.Context) -> None:
    """Each configured destination, and whether it is paused and why."""
    from connector.cli_context import ledger_error

    settings, engine = _engine_for(click_ctx.obj, None)
    try:
        with engine.connect() as connection:
            pauses = pausing.paused(connection)
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error)) from None
    finally:
        engine.dispose()
    for name in sorted(set(settings.destinations) | set(pauses)):
        found = pauses.get(name)
        state = "delivering" if found is None else \
            f"paused by {found.by} at {found.at:%Y-%m-%d %H:%M:%S} UTC: {found.reason}"
        click.echo(f"{name}: {state}" + ("" if name in settings.destinations else " (no longer configured)"))
