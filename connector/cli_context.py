"""What every `connector` command shares: the config file it was given, the ledger it opens, the
checks of names an operator types (exit 2 with "did you mean"), and their shell completion.

Commands live beside the part of the connector they drive (connector/worker/commands.py,
connector/onboarding/commands.py, ...); connector/cli/ gathers them under one `connector` group.
Nothing heavy is imported at the top: a command module that imports this one stays cheap to list.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

    from connector.config import Settings
    from connector.mapping.engine import MappingSet


class Context:
    def __init__(self, config_path: Path | None):
        self.config_path = config_path

    def settings(self) -> Settings:
        from connector.config import ConfigError, load_settings
        from connector.logs import configure_logging

        try:
            settings = load_settings(self.config_path)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        configure_logging(settings)  # the configured format, and the secrets to redact
        return settings

    def mappings(self, settings: Settings) -> MappingSet:
        from connector.config import ConfigError
        from connector.mapping.loader import load_mappings

        try:
            return load_mappings(settings)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None


pass_context = click.make_pass_decorator(Context)


def ledger_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from connector.ledger import create_ledger_engine

    return create_ledger_engine(settings)


def current_ledger(settings: Settings):  # type: ignore[no-untyped-def]
    """The ledger's engine, once it is reachable and migrated (else a clear error, not a traceback)."""
    from sqlalchemy.exc import SQLAlchemyError

    from connector.ledger.migrate import is_current

    engine = ledger_engine(settings)
    try:
        current = is_current(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        raise click.ClickException(ledger_error(settings, error)) from None
    if not current:
        engine.dispose()
        raise click.ClickException("the ledger's migrations are not current: run `connector db upgrade` first")
    return engine


def ledger_error(settings: Settings, error: SQLAlchemyError) -> str:
    return (f"the ledger is unavailable ({settings.source}: database.url): "
            f"{error.__class__.__name__}: {getattr(error, 'orig', None) or error}")


def did_you_mean(value: str, known: list[str] | tuple[str, ...]) -> str:
    """"; did you mean 'x' or 'y'?" naming the closest of `known`, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def one_of(value: str | None, known: list[str] | tuple[str, ...], option: str, what: str) -> str | None:
    """`value` when it is one of `known`; else a usage error (exit 2) naming the closest ones."""
    if value is None or value in known:
        return value
    listed = f" (known: {', '.join(known)})" if len(known) <= 12 else ""
    raise click.BadParameter(f"{value!r} is not a {what}{did_you_mean(value, known)}{listed}", param_hint=option)


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given to `option` (UTC unless it says otherwise); else a usage error (exit 2)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-27T10:00:00Z)",
                                 param_hint=option) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --- the names a filter option takes ---------------------------------------------------------------

TOPIC_WHAT = "resource type or event name"
DESTINATION_WHAT = "destination (configured, or with deliveries in the ledger)"


def known_topics() -> list[str]:
    """What --topic takes: a resource type (review) or an event name (review.create)."""
    from connector import okendo

    events = sorted(okendo.event_name(kind, verb) for kind in okendo.RESOURCE_ID_FIELDS for verb in okendo.TOPICS)
    return sorted(okendo.RESOURCE_ID_FIELDS) + events


def known_destinations(settings: Settings, engine) -> list[str]:  # type: ignore[no-untyped-def]
    """The configured destinations, and those the ledger has deliveries for (one removed from the config since)."""
    from connector.worker.replay import delivery_destinations

    return sorted(set(settings.destinations) | set(delivery_destinations(engine)))


def check_destination(value: str | None, settings: Settings, engine) -> str | None:  # type: ignore[no-untyped-def]
    if value is None or value in settings.destinations:
        return value
    return one_of(value, known_destinations(settings, engine), "--destination", DESTINATION_WHAT)


# Shell completion of those names (https://click.palletsprojects.com/en/stable/shell-completion/#custom-type-completion):
# `shell_complete=` on an option; each returns the values starting with what was typed.

def complete_topic(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [name for name in known_topics() if name.startswith(incomplete)]


def complete_state(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from connector.status.queries import DELIVERY_STATES, EVENT_STATES

    return [state for state in EVENT_STATES + DELIVERY_STATES if state.startswith(incomplete)]


def complete_destination(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The destinations of the config file the command line names (--config), else of $CONNECTOR_CONFIG."""
    from connector.config import ConfigError, load_settings

    try:
        settings = load_settings(ctx.find_root().params.get("config_path"))
    except (ConfigError, OSError):
        return []  # nothing to offer from a config that does not load; the command itself will say why
    return [name for name in sorted(settings.destinations) if name.startswith(incomplete)]
