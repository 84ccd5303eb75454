"""`connector serve`: gunicorn with the settings shipped in the package, from wherever it is installed.

The command replaces itself with gunicorn (exec), so gunicorn's master is the process a service
manager started: signals (SIGTERM, SIGHUP) reach it, and the pid it writes to its pidfile is the
one systemd tracks and `connector reload` signals.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from connector.config import CONFIG_PATH_ENV

# Read by connector/gunicorn_conf.py; the options below set them for the gunicorn they start.
BIND_ENV, WORKERS_ENV, THREADS_ENV = "BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS"
GUNICORN_SETTINGS = Path(__file__).with_name("gunicorn_conf.py")


def gunicorn_command(gunicorn_args: tuple[str, ...] = ()) -> list[str]:
    """The gunicorn this installation runs: its own interpreter, the shipped settings file, any extra arguments."""
    return [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_SETTINGS), *gunicorn_args]


@click.command()
@click.option("--bind", metavar="HOST:PORT", help=f"Where to listen (default: ${BIND_ENV}, else 127.0.0.1:8000).")
@click.option("--workers", type=click.IntRange(1, 64),
              help=f"gunicorn worker processes (default: ${WORKERS_ENV}, else 2).")
@click.option("--threads", type=click.IntRange(1, 64),
              help=f"Request threads per gunicorn worker (default: ${THREADS_ENV}, else 4).")
@click.option("--migrate", is_flag=True,
              help="Apply the ledger's migrations first (`connector db upgrade`). For one server; "
                   "with several sharing a database, run `connector db upgrade` once instead.")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- GUNICORN_ARGS]...")
@click.pass_context
def serve(click_ctx: click.Context, bind: str | None, workers: int | None, threads: int | None, migrate: bool,
          gunicorn_args: tuple[str, ...]) -> None:
    """Serve the webhook endpoint, the status page and (worker.embedded) the delivery threads under gunicorn.

    The gunicorn master validates config.yaml and the mappings before any worker starts, writes
    its pid to $CONNECTOR_PIDFILE (else data/gunicorn.pid beside the config) and reloads on
    SIGHUP. Arguments after `--` go to gunicorn as they are, over the shipped settings
    (`connector serve -- --timeout 60`).
    """
    if migrate:
        # `db upgrade` as the running command line holds it: under `python -m connector.cli` that is
        # __main__'s, whose context an imported copy of connector.cli would not recognise.
        db = click_ctx.find_root().command.get_command(click_ctx, "db")
        click_ctx.invoke(db.get_command(click_ctx, "upgrade"))
    config_path = click_ctx.obj.config_path
    if config_path is not None:  # --config: the gunicorn master and its workers read the same file
        os.environ[CONFIG_PATH_ENV] = str(config_path)
    for variable, value in ((BIND_ENV, bind), (WORKERS_ENV, workers), (THREADS_ENV, threads)):
        if value is not None:
            os.environ[variable] = str(value)
    command = gunicorn_command(gunicorn_args)
    # exec does not return, so whatever was printed must be written out first.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
