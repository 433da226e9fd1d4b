"""The ``isobox`` command. The engine issues fill in the container verbs;
for now it reports the version and what this host offers."""

from __future__ import annotations

import json
import platform
import shutil
import sys

import click

from isobox import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="isobox")
def cli() -> None:
    """isobox: containers with process or VM isolation, Docker's interface."""


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def info(fmt: str) -> None:
    """Show what this host offers to containers."""
    from isobox.cgroups import detect_version

    facts = {
        "Version": __version__,
        "Kernel": platform.release(),
        "CgroupVersion": str(detect_version()),
        "Runtimes": {
            name: path for name in ("isobox-runtime", "runc", "crun", "runsc")
            if (path := shutil.which(name))
        },
        "DefaultIsolation": "process",
    }
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} ({v})" for k, v in value.items())
        click.echo(f"{key}: {value}")


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
