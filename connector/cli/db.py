"""`connector db upgrade`: the ledger's migrations (connector/ledger/migrate.py does the work)."""

from __future__ import annotations

import click

from connector.cli_context import Context, pass_context


@click.group()
def db() -> None:
    """Ledger database commands."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Apply the ledger's migrations (safe to run on every start)."""
    from sqlalchemy.exc import SQLAlchemyError

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
