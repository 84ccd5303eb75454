"""The `connector` command line (click): one group gathering the commands, each imported when it runs.

Most commands live beside the part of the connector they drive, the way Flask apps register
theirs (https://flask.palletsprojects.com/en/stable/cli/#custom-commands):

- connector/worker/commands.py: `worker`, `prune`, `replay`; connector/worker/pause_commands.py: `destination`
- connector/status/commands.py: `events`, `show`, `stats` (the status page in a terminal)
- connector/onboarding/commands.py: `okendo`, `send`, `doctor`; connector/backfill/commands.py: `okendo backfill`
- connector/destinations/setup_commands.py: `setup hubspot|salesforce`
- connector/alerts/commands.py: `alerts`; connector/serve.py: `serve`

and, in this package, those with no better home: `check` and `preview` (check.py: the config and
the mappings together), `db` (db.py) and `reload` (reload.py).

Nothing heavy is imported here: `connector --help`, `--version` and shell completion of command
names read only the table below (lazy.py says how).
"""

from __future__ import annotations

from pathlib import Path

import click

from connector.cli.lazy import LazyGroup

# connector.config.CONFIG_PATH_ENV, spelt out: importing connector.config loads pydantic and sqlalchemy
# (tests/test_cli_startup.py checks that the two agree).
CONFIG_PATH_ENV = "CONNECTOR_CONFIG"

# name -> (where the command is, its one-line summary as `connector --help` lists it)
COMMANDS = {
    "alerts": ("connector.alerts.commands:alerts", "Alert targets and the alert outbox (see docs/alerts.md)."),
    "check": ("connector.cli.check:check",
              "Validate the configuration and mappings without serving; exit 1 with the problems found."),
    "db": ("connector.cli.db:db", "Ledger database commands."),
    "destination": ("connector.worker.pause_commands:destination",
                    "Pause, resume and list destinations (a paused one's deliveries wait and spend no attempts)."),
    "doctor": ("connector.onboarding.commands:doctor",
               "Check everything a first run needs, one line per check with what to do when it fails."),
    "events": ("connector.status.commands:events",
               "List events, newest last, with their deliveries' states; --follow prints new ones as they happen."),
    "okendo": ("connector.cli.okendo:okendo",
               "Okendo's webhook subscriptions (Merchant REST API; needs OKENDO_USER_ID and OKENDO_API_KEY)."),
    "preview": ("connector.cli.check:preview",
                "Print, as JSON, the operations each destination would perform for EVENT_FILE."),
    "prune": ("connector.worker.commands:prune",
              "Delete finished events older than the retention period (never one still needing delivery)."),
    "reload": ("connector.cli.reload:reload",
               "Check the edited config and mappings, then have the running server adopt them (SIGHUP)."),
    "replay": ("connector.worker.commands:replay",
               "Queue deliveries again (the signature is not checked again: it was verified on arrival)."),
    "send": ("connector.onboarding.commands:send",
             "Sign events exactly as Svix does and post them to the connector, printing each answer."),
    "serve": ("connector.serve:serve", "Serve the webhook endpoint, the status page and (worker.embedded) the "
              "delivery threads under gunicorn."),
    "setup": ("connector.destinations.setup_commands:setup", "Prepare a CRM for the mappings."),
    "show": ("connector.status.commands:show",
             "Print one event: headers, payload, each delivery and every attempt with its request and answer."),
    "stats": ("connector.status.commands:stats",
              "Print the status page's overview: events, queue, deliveries per destination and topic, workers."),
    "worker": ("connector.worker.commands:worker", "Run delivery workers: any number, on any host sharing the ledger."),
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="okendo-crm-connector", prog_name="connector")
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
    import logging

    from connector.cli_context import Context
    from connector.logs import configure_logging

    configure_logging()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = Context(config_path)

