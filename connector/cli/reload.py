"""`connector reload`: have the running server adopt an edited config and mappings (SIGHUP), once they validate."""

from __future__ import annotations

from pathlib import Path

import click

from connector.cli_context import Context, pass_context


@click.command()
@click.option("--pidfile", type=click.Path(path_type=Path), default=None,
              help="gunicorn's pidfile (default: $CONNECTOR_PIDFILE, else data/gunicorn.pid beside the config)")
@pass_context
def reload(ctx: Context, pidfile: Path | None) -> None:
    """Check the edited config and mappings, then have the running server adopt them (SIGHUP).

    An edit that does not validate is refused here, and the server is not signalled; the server
    checks again itself and keeps its running configuration if anything is wrong. Standalone
    `connector worker` processes reload on their own SIGHUP (`kill -HUP PID`, systemd's ExecReload).
    """
    import os
    import signal

    from connector.serving import pidfile_path

    settings = ctx.settings()
    ctx.mappings(settings)
    path = pidfile or pidfile_path(ctx.config_path)
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no pidfile, so no server started from this config is running "
                                   "(start it with `make run`, or give --pidfile)") from None
    except ValueError:
        raise click.ClickException(f"{path}: does not hold a process id") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise click.ClickException(f"{path}: process {pid} is not running (a stale pidfile: the server "
                                   "stopped without removing it)") from None
    click.echo(f"config valid; asked the server (pid {pid}) to reload: its log says "
               "`configuration reloaded` once new workers run it")
