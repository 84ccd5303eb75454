"""What every `connector` command shares: the config file it was given, and the ledger it opens.

Commands live beside the part of the connector they drive (connector/worker/commands.py,
connector/onboarding/commands.py, ...); connector/cli.py gathers them under one `connector` group.
"""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.config import ConfigError, Settings, load_settings
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


def ledger_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from connector.ledger import create_ledger_engine

    return create_ledger_engine(settings)


def current_ledger(settings: Settings):  # type: ignore[no-untyped-def]
    """The ledger's engine, once it is reachable and migrated (else a clear error, not a traceback)."""
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


def one_of(value: str | None, known: list[str] | tuple[str, ...], option: str, what: str) -> str | None:
    """`value` when it is one of `known`; else a usage error (exit 2) naming the closest ones."""
    import difflib

    if value is None or value in known:
        return value
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = f" (known: {', '.join(known)})" if len(known) <= 12 else ""
    raise click.BadParameter(f"{value!r} is not a {what}{hint}{listed}", param_hint=option)
