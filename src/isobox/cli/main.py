"""The ``isobox`` command: Docker's verbs, daemonless, straight over the engine.

Command modules are imported when a command needs them: ``isobox run``
imports the run flags, not the image, volume or network verbs (each CLI
start pays only for what it runs)."""

from __future__ import annotations

import importlib
import sys

import click

from isobox import __version__
from isobox.cli.context import Context, fail, make_context, pass_ctx
from isobox.errors import IsoboxError

#: Every command module, in registration order (a later one may add to a
#: group an earlier one made: ``container``, ``image``, ``system``).
MODULES = ("images", "containers", "run", "monitor_cmds", "fs_cmds", "manage_cmds",
           "volume_cmds", "system_cmds", "network_cmds", "vm_cmds", "build_cmds")

#: Top-level commands whose module alone is enough (checked by the unit
#: tests against the full registration); any other name loads every module.
ALONE = {
    **dict.fromkeys(("run", "create", "exec", "attach"), "run"),
    **dict.fromkeys(("ps", "start", "stop", "restart", "kill", "pause", "unpause", "rm",
                     "logs", "wait", "rename"), "containers"),
}


class IsoboxGroup(click.Group):
    """The top-level group: command modules registered on first need."""

    loaded: set[str]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.loaded = set()
        self.complete = False

    def load(self, module: str) -> None:
        if module not in self.loaded:
            importlib.import_module(f"isobox.cli.{module}").register(self)
            self.loaded.add(module)

    def load_all(self) -> None:
        if not self.complete:
            for module in MODULES:  # all of them, in order, even if one was loaded alone
                importlib.import_module(f"isobox.cli.{module}").register(self)
                self.loaded.add(module)
            self.complete = True

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if not self.complete:
            if cmd_name in ALONE and cmd_name not in self.commands:
                self.load(ALONE[cmd_name])
            elif cmd_name not in ALONE:
                self.load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_all()
        return super().list_commands(ctx)


@click.group(cls=IsoboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="isobox")
@click.option("--root", envvar="ISOBOX_ROOT", default=None,
              help="State directory (default /var/lib/isobox; also ISOBOX_ROOT)")
@click.option("--insecure-registry", "insecure", multiple=True,
              help="Registry to reach over plain HTTP or unverified TLS")
@click.pass_context
def cli(click_ctx: click.Context, root: str | None, insecure: tuple[str, ...]) -> None:
    """isobox: containers with process or VM isolation, Docker's interface."""
    try:
        click_ctx.obj = make_context(root, insecure)
    except IsoboxError as exc:  # a bad settings file: one line, not a traceback
        fail(str(exc), 125)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@pass_ctx
def info(ctx: Context, fmt: str) -> None:
    """Show what this host offers to containers."""
    import json

    from isobox.engine.hostinfo import host_facts

    facts = host_facts(ctx.config)
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} ({v})" for k, v in value.items())
        click.echo(f"{key}: {value}")


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
