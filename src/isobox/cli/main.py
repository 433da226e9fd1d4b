"""The ``isobox`` command: Docker's verbs, daemonless, straight over the engine."""

from __future__ import annotations

import json
import sys

import click

from isobox import __version__
from isobox.cli import (
    build_cmds,
    fs_cmds,
    manage_cmds,
    monitor_cmds,
    network_cmds,
    system_cmds,
    vm_cmds,
    volume_cmds,
)
from isobox.cli import containers as container_commands
from isobox.cli import images as image_commands
from isobox.cli import run as run_commands
from isobox.cli.context import Context, make_context, pass_ctx


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="isobox")
@click.option("--root", envvar="ISOBOX_ROOT", default=None,
              help="State directory (default /var/lib/isobox; also ISOBOX_ROOT)")
@click.option("--insecure-registry", "insecure", multiple=True,
              help="Registry to reach over plain HTTP or unverified TLS")
@click.pass_context
def cli(click_ctx: click.Context, root: str | None, insecure: tuple[str, ...]) -> None:
    """isobox: containers with process or VM isolation, Docker's interface."""
    click_ctx.obj = make_context(root, insecure)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@pass_ctx
def info(ctx: Context, fmt: str) -> None:
    """Show what this host offers to containers."""
    from isobox.engine.hostinfo import host_facts

    facts = host_facts(ctx.config)
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} ({v})" for k, v in value.items())
        click.echo(f"{key}: {value}")


image_commands.register(cli)
container_commands.register(cli)
run_commands.register(cli)
monitor_cmds.register(cli)
fs_cmds.register(cli)
manage_cmds.register(cli)
volume_cmds.register(cli)
system_cmds.register(cli)
network_cmds.register(cli)
vm_cmds.register(cli)
build_cmds.register(cli)


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
