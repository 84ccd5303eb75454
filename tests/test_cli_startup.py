"""`connector --help`, `--version` and completion of command names import no command: nothing of
flask, sqlalchemy or pydantic (they took over a second before the first line was printed), and
the help they print is the one the commands themselves would give."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from connector.cli import COMMANDS, CONFIG_PATH_ENV, main
from connector.cli.lazy import LazyGroup

HEAVY = ("flask", "sqlalchemy", "pydantic", "connector.app", "connector.config")


def modules_after(*args: str, environ: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """What `connector ARGS` printed, and the modules loaded once it ran, in a fresh interpreter."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        listing = os.path.join(folder, "modules.json")
        script = (
            "import atexit, json, sys\n"
            f"atexit.register(lambda: open({listing!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
            "from connector.cli import main\n"
            f"main.main({list(args)!r}, prog_name='connector', complete_var='_CONNECTOR_COMPLETE')\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(environ or {})})
        assert done.returncode == 0, done.stderr
        with open(listing) as file:
            return done.stdout, json.loads(file.read())


def heavy_in(modules: list[str]) -> list[str]:
    return [name for name in modules if name in HEAVY or name.startswith(tuple(f"{h}." for h in HEAVY))]


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"]])
def test_help_and_version_import_no_flask_sqlalchemy_or_pydantic(args):
    out, modules = modules_after(*args)
    assert ("Commands:" in out) if args != ["--version"] else out.startswith("connector, version ")
    assert heavy_in(modules) == []
    assert not [name for name in modules if name.startswith("connector.") and name not in
                ("connector.cli", "connector.cli.lazy")]


def test_completing_a_command_name_imports_no_command():
    out, modules = modules_after(environ={"_CONNECTOR_COMPLETE": "bash_complete", "COMP_WORDS": "connector s",
                                          "COMP_CWORD": "1"})
    assert out.split() == ["plain,send", "plain,serve", "plain,setup", "plain,show", "plain,stats"]
    assert heavy_in(modules) == []


def test_completion_offers_the_configured_destinations_and_the_known_names(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("destinations:\n  hubspot: {type: hubspot}\n  hubspot_eu: {type: hubspot}\n"
                      "  salesforce: {type: salesforce}\n")

    def completed(words: str) -> list[str]:
        out, _ = modules_after(environ={"_CONNECTOR_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})
        return [line.split(",", 1)[1] for line in out.split()]

    assert completed(f"connector --config {config} events --destination hub") == ["hubspot", "hubspot_eu"]
    assert completed(f"connector --config {config} replay --destination s") == ["salesforce"]
    assert completed("connector events --topic review.") == ["review.create", "review.delete", "review.update"]
    assert completed("connector events --state de") == ["delivered", "dead"]
    assert completed("connector events --origin ") == ["webhook", "backfill", "reconcile"]


def fresh_lazy_group() -> LazyGroup:
    """The `connector` group as a new process builds it: no command loaded yet."""
    return LazyGroup(name=main.name, lazy_subcommands=COMMANDS, params=main.params, callback=main.callback,
                     help=main.help, context_settings=main.context_settings)


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_the_listed_summaries_are_the_commands_own_help(width):
    lazy = CliRunner().invoke(fresh_lazy_group(), ["--help"], prog_name="connector", terminal_width=width)
    for name in COMMANDS:  # every command loads, from where the table says
        assert main.get_command(None, name) is not None, name  # type: ignore[arg-type]
    loaded = CliRunner().invoke(main, ["--help"], prog_name="connector", terminal_width=width)
    assert lazy.exit_code == 0 and loaded.exit_code == 0
    assert lazy.output == loaded.output  # a summary that drifted from its command's help shows here


def test_the_config_variable_is_the_one_the_config_reads():
    from connector import config

    assert CONFIG_PATH_ENV == config.CONFIG_PATH_ENV


def test_connector_create_app_is_still_importable():
    from connector import create_app
    from connector.app import create_app as the_app_factory

    assert create_app is the_app_factory
