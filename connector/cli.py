"""The `connector` command line (click)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.config import CONFIG_PATH_ENV, ConfigError, Settings, load_settings


class Context:
    def __init__(self, config_path: Path | None):
        self.config_path = config_path

    def settings(self) -> Settings:
        try:
            return load_settings(self.config_path)
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = Context(config_path)


@main.command()
@pass_context
def check(ctx: Context) -> None:
    """Validate the configuration without serving; exit 1 with the problems found."""
    from connector.ledger.database import normalize_url

    settings = ctx.settings()
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
