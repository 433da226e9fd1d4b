"""``volume create|ls|inspect|rm|prune``."""

from __future__ import annotations

from typing import Any

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import DockerGroup, confirm, daemon_errors, fail, human_size
from isobox.cli.output import each, inspect_all, render

VOLUME_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE",
                  "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS",
                  "Size": "SIZE", "CreatedAt": "CREATED AT"}


def _ops(ctx: Context) -> Any:
    from isobox.engine.volume_ops import VolumeOps

    return VolumeOps(ctx.containers)


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            fail(f'invalid argument "{item}" for "{what}" flag: invalid label')
        out[key] = value
    return out


@click.group("volume", cls=DockerGroup)
def volume() -> None:
    """Manage volumes."""


@volume.command("create")
@click.argument("name", required=False)
@click.option("--name", "name_opt", default=None, help="Specify volume name")
@click.option("-d", "--driver", default="local", help="Specify volume driver name")
@click.option("-l", "--label", "labels", multiple=True, help="Set metadata for a volume")
@click.option("-o", "--opt", "opts", multiple=True, help="Set driver specific options")
@pass_ctx
@daemon_errors
def create(ctx: Context, name: str | None, name_opt: str | None, driver: str,
           labels: tuple[str, ...], opts: tuple[str, ...]) -> None:
    """Create a volume."""
    if name and name_opt and name != name_opt:
        fail("conflicting options: either specify --name or provide positional arg, not both")
    info = _ops(ctx).create(name or name_opt, labels=_pairs(labels, "--label"),
                            driver=driver, options=_pairs(opts, "--opt") or None)
    click.echo(info["Name"])


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names")
@click.option("-f", "--filter", "filters", multiple=True,
              help="Provide filter values (e.g. 'dangling=true')")
@click.option("--format", "fmt", default=None, help="Format output using a Go template")
@pass_ctx
@daemon_errors
def ls(ctx: Context, quiet: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List volumes."""
    rows = _ops(ctx).rows(list(filters))
    if quiet:
        click.echo("".join(f"{r['Name']}\n" for r in rows), nl=False)
        return
    if fmt == "json":
        rows = [{k: v for k, v in r.items() if k != "LabelsMap"} for r in rows]
    click.echo(render(fmt, rows, ["DRIVER", "VOLUME NAME"], ["Driver", "Name"],
                      VOLUME_HEADERS), nl=False)


@volume.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help="Format output using a Go template")
@pass_ctx
@daemon_errors
def inspect(ctx: Context, names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more volumes."""
    inspect_all(names, _ops(ctx).inspect, fmt)


@volume.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes")
@pass_ctx
@daemon_errors
def rm(ctx: Context, names: tuple[str, ...], force: bool) -> None:
    """Remove one or more volumes (refused while a container uses one)."""
    ops = _ops(ctx)
    each(names, lambda name: ops.remove(name, force=force))


@volume.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just "
              "anonymous ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. "
              "'label=<label>')")
@pass_ctx
@daemon_errors
def prune(ctx: Context, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused local volumes (anonymous ones unless -a)."""
    warning = ("WARNING! This will remove all local volumes not used by at least one "
               "container." if all_ else "WARNING! This will remove anonymous local volumes "
               "not used by at least one container.")
    if not force and not confirm(warning):
        return
    removed, freed = _ops(ctx).prune(all_volumes=all_, filters=list(filters))
    if removed:
        click.echo("Deleted Volumes:")
        for name in removed:
            click.echo(name)
        click.echo()
    click.echo(f"Total reclaimed space: {human_size(freed)}")


def register(cli: click.Group) -> None:
    cli.add_command(volume)
