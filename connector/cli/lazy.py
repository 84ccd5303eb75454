"""A click group whose subcommands are imported only when one of them runs.

Click's lazy-loading pattern (https://click.palletsprojects.com/en/stable/complex/#lazily-loading-subcommands):
`list_commands` names them, `get_command` imports the one asked for. As that page warns, the group's
own `--help` (and shell completion of command names) would still import every subcommand to read its
short help; here each lazy subcommand is registered with that one-line summary beside its import path,
so `connector --help` imports none of them (no flask, no sqlalchemy, no pydantic) and starts in a
fraction of the time. tests/test_cli_startup.py fails when a summary here no longer matches the
command's own help.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click
from click.shell_completion import CompletionItem


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy_subcommands: Mapping[str, tuple[str, str]] | None = None,
                 **kwargs: Any) -> None:
        """`lazy_subcommands`: name -> ("package.module:attribute", the command's one-line summary)."""
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands and cmd_name not in self.commands:
            self.add_command(self.load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def load(self, cmd_name: str) -> click.Command:
        target, _ = self.lazy_subcommands[cmd_name]
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} (the `{cmd_name}` command) is a {type(command).__name__}, not a click command")
        return command

    def _listed(self, ctx: click.Context) -> list[tuple[str, click.Command]]:
        """Each visible subcommand: the command itself once loaded, else a stand-in holding its summary."""
        listed = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                command = click.Command(name, help=self.lazy_subcommands[name][1])
            if not command.hidden:
                listed.append((name, command))
        return listed

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's Group.format_commands, over the stand-ins: the same layout and the same shortening.
        listed = self._listed(ctx)
        if not listed:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in listed)
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        # Command names from the summaries; options as click completes them (Command.shell_complete).
        results = [CompletionItem(name, help=command.get_short_help_str())
                   for name, command in self._listed(ctx) if name.startswith(incomplete)]
        results.extend(click.Command.shell_complete(self, ctx, incomplete))
        return results
