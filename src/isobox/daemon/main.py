"""The ``isoboxd`` entry point. The Engine API arrives with its own issue;
until then the command says so instead of pretending to serve."""

from __future__ import annotations

import sys

import click

from isobox import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="isoboxd")
@click.option("-H", "--host", default="unix:///run/isobox/isobox.sock", show_default=True)
def cli(host: str) -> None:
    """Serve the Docker Engine API (not yet implemented)."""
    click.echo(f"isoboxd: the Engine API is not implemented yet (would listen on {host})",
               err=True)
    sys.exit(125)


def main() -> None:
    cli.main(standalone_mode=True)
