"""``system df``, ``system prune`` (and ``system events``)."""

from __future__ import annotations

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import DockerGroup, confirm, daemon_errors, human_size
from isobox.cli.output import render

DF_HEADERS = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
              "Reclaimable": "RECLAIMABLE"}
DF_KEYS = ["Type", "TotalCount", "Active", "Size", "Reclaimable"]


def _reclaimable(reclaimable: int, total: int) -> str:
    """The docker CLI's: ``1.2MB (50%)``, or the bare size when the total is 0."""
    if total > 0:
        return f"{human_size(reclaimable)} ({reclaimable * 100 // total}%)"
    return human_size(reclaimable)


@click.group("system", cls=DockerGroup)
def system() -> None:
    """Manage the engine."""


@system.command("df")
@click.option("--format", "fmt", default=None, help="Format output using a Go template, "
              "'table', or 'json'")
@pass_ctx
@daemon_errors
def df(ctx: Context, fmt: str | None) -> None:
    """Show disk usage of images, containers, local volumes and build cache."""
    from isobox.engine.system import disk_usage

    rows = []
    for u in disk_usage(ctx.containers):
        reclaim = (human_size(u.reclaimable) if u.type == "Build Cache"
                   else _reclaimable(u.reclaimable, u.size))
        rows.append({"Type": u.type, "TotalCount": str(u.total), "Active": str(u.active),
                     "Size": human_size(u.size), "Reclaimable": reclaim})
    click.echo(render(fmt, rows, [DF_HEADERS[k] for k in DF_KEYS], DF_KEYS, DF_HEADERS),
               nl=False)


@system.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images not just "
              "dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--volumes", is_flag=True, help="Prune anonymous volumes")
@pass_ctx
@daemon_errors
def prune(ctx: Context, all_: bool, force: bool, volumes: bool) -> None:
    """Remove unused data: stopped containers, dangling images (all unused
    ones with -a) and, with --volumes, unused anonymous volumes."""
    from isobox.engine.system import prune as engine_prune

    items = ["all stopped containers", "all networks not used by at least one container"]
    if volumes:
        items.append("all anonymous volumes not used by at least one container")
    items.append("all images without at least one container associated to them" if all_
                 else "all dangling images")
    items.append("unused build cache" if not all_ else "all build cache")
    warning = "WARNING! This will remove:\n" + "".join(f"  - {i}\n" for i in items)
    if not force and not confirm(warning):
        return
    pruned = engine_prune(ctx.containers, all_images=all_, volumes=volumes)
    for title, lines in (("Deleted Containers:", pruned.containers),
                         ("Deleted Volumes:", pruned.volumes),
                         ("Deleted Images:", pruned.images)):
        if lines:
            click.echo(title)
            for line in lines:
                click.echo(line)
            click.echo()
    click.echo(f"Total reclaimed space: {human_size(pruned.reclaimed)}")


def register(cli: click.Group) -> None:
    from isobox.cli.monitor_cmds import events

    system.add_command(events, "events")
    cli.add_command(system)
