"""``network create|ls|inspect|rm|prune|connect|disconnect`` and ``system check``."""

from __future__ import annotations

import sys
from typing import Any

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import DockerGroup, daemon_errors, fail
from isobox.cli.output import each, inspect_all, render

NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                   "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            fail(f'invalid argument "{item}" for "{what}" flag: invalid value')
        out[key] = value
    return out


def _nets(ctx: Context) -> Any:
    return ctx.containers.networking.manager


@click.group("network", cls=DockerGroup)
def network() -> None:
    """Manage networks."""


@network.command("create")
@click.argument("name")
@click.option("-d", "--driver", default="bridge")
@click.option("--subnet", default="")
@click.option("--gateway", default="")
@click.option("--ip-range", default="")
@click.option("--internal", is_flag=True)
@click.option("--label", "labels", multiple=True)
@click.option("-o", "--opt", "opts", multiple=True)
@pass_ctx
@daemon_errors
def create(ctx: Context, name: str, driver: str, subnet: str, gateway: str, ip_range: str,
           internal: bool, labels: tuple[str, ...], opts: tuple[str, ...]) -> None:
    """Create a network."""
    net = _nets(ctx).create_network(name, driver=driver, subnet=subnet, gateway=gateway,
                                    ip_range=ip_range, internal=internal,
                                    labels=_pairs(labels, "--label"),
                                    options=_pairs(opts, "--opt"))
    click.echo(net.id)


def _row(net: Any) -> dict[str, Any]:
    return {"ID": net.id[:12], "Name": net.name, "Driver": net.driver, "Scope": "local",
            "Internal": str(net.internal).lower(),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(net.labels.items())),
            "CreatedAt": net.created}


def _match(net: Any, filters: tuple[str, ...]) -> bool:
    for item in filters:
        key, _, value = item.partition("=")
        if key == "name" and value not in net.name:
            return False
        if key == "id" and not net.id.startswith(value):
            return False
        if key == "driver" and net.driver != value:
            return False
        if key == "type" and (value == "custom") == net.predefined:
            return False
        if key == "label":
            k, sep, v = value.partition("=")
            if k not in net.labels or (sep and net.labels[k] != v):
                return False
        if key not in ("name", "id", "driver", "type", "label"):
            fail(f"invalid filter '{key}'")
    return True


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True)
@click.option("-f", "--filter", "filters", multiple=True)
@click.option("--format", "fmt", default=None)
@click.option("--no-trunc", is_flag=True)
@pass_ctx
@daemon_errors
def ls(ctx: Context, quiet: bool, filters: tuple[str, ...], fmt: str | None,
       no_trunc: bool) -> None:
    """List networks."""
    nets = sorted((n for n in _nets(ctx).networks() if _match(n, filters)),
                  key=lambda n: n.name)
    rows = [{**_row(n), "ID": n.id if no_trunc else n.id[:12]} for n in nets]
    if quiet:
        click.echo("".join(f"{r['ID']}\n" for r in rows), nl=False)
        return
    click.echo(render(fmt, rows, ["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                      ["ID", "Name", "Driver", "Scope"], NETWORK_HEADERS), nl=False)


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None)
@pass_ctx
@daemon_errors
def inspect(ctx: Context, names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more networks."""

    inspect_all(names, _nets(ctx).inspect, fmt, "Error: ")


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
@daemon_errors
def rm(ctx: Context, names: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    each(names, _nets(ctx).remove_network)


@network.command("prune")
@click.option("-f", "--force", is_flag=True)
@click.option("--filter", "filters", multiple=True)
@pass_ctx
@daemon_errors
def prune(ctx: Context, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused networks."""
    if not force:
        from isobox.cli.ops_common import confirm

        if not confirm("WARNING! This will remove all custom networks not used by at least "
                       "one container.\nAre you sure you want to continue?"):
            return
    labels: dict[str, str | None] = {}
    for item in filters:
        key, _, value = item.partition("=")
        if key != "label":
            fail(f"invalid filter '{key}'")
        k, sep, v = value.partition("=")
        labels[k] = v if sep else None
    removed = _nets(ctx).prune(labels or None)
    if removed:
        click.echo("Deleted Networks:")
        for name in removed:
            click.echo(name)


def _running(ctx: Context, container: str) -> tuple[Any, str, int]:
    from isobox.errors import Conflict

    record = ctx.containers.get(container)
    if record.state["Status"] not in ("running", "paused"):
        raise Conflict(f"container {record.id} is not running")
    return record, ctx.containers.dir(record.id), int(record.state["Pid"])


@network.command("connect")
@click.argument("net")
@click.argument("container")
@click.option("--ip", default=None)
@click.option("--alias", "aliases", multiple=True)
@pass_ctx
@daemon_errors
def connect(ctx: Context, net: str, container: str, ip: str | None,
            aliases: tuple[str, ...]) -> None:
    """Connect a container to a network."""
    record, d, pid = _running(ctx, container)
    ctx.containers.networking.connect(record, d, pid, net, ip=ip, aliases=aliases)


@network.command("disconnect")
@click.argument("net")
@click.argument("container")
@click.option("-f", "--force", is_flag=True)
@pass_ctx
@daemon_errors
def disconnect(ctx: Context, net: str, container: str, force: bool) -> None:
    """Disconnect a container from a network."""
    record = ctx.containers.get(container)
    ctx.containers.networking.disconnect(ctx.containers.dir(record.id), net)


@click.command("check")
@click.option("--fix", is_flag=True, help="Remove what is left over")
@pass_ctx
@daemon_errors
def check(ctx: Context, fix: bool) -> None:
    """List network leftovers (veths, bridges, rules no record claims)."""
    nets = _nets(ctx)
    if fix:
        live: list[str] = []
        for record in ctx.containers.records():
            live += ctx.containers.networking.load(ctx.containers.dir(record.id)).get(
                "endpoints") or []
        for ep_id in nets.reconcile(live):
            click.echo(f"released endpoint {ep_id}")
        for item in nets.fix():
            click.echo(f"fixed: {item}")
        return
    items = nets.check()
    for item in items:
        click.echo(item)
    if items:
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(network)
    system = cli.commands.get("system")
    if isinstance(system, click.Group):
        system.add_command(check)


@network.command("reattach", hidden=True)
@click.argument("container")
@pass_ctx
@daemon_errors
def reattach(ctx: Context, container: str) -> None:
    """For the monitor: connect a container that its restart policy restarted
    (a new network namespace) to its networks again, before it starts."""
    import os

    pid = int(os.environ.get("ISOBOX_INIT_PID") or 0)
    if pid <= 0:
        raise click.UsageError("ISOBOX_INIT_PID is not set")
    ctx.containers.reattach_network(container, pid)
