"""``port`` and ``update``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import DockerCommand, add_to_group, daemon_errors, fail
from isobox.errors import IsoboxError


@click.command("port", cls=DockerCommand)
@click.argument("container")
@click.argument("private_port", required=False)
@pass_ctx
@daemon_errors
def port(ctx: Context, container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container."""
    from isobox.engine import ports

    if private_port:
        for address in ports.lookup(ctx.containers, container, private_port):
            click.echo(address)
        return
    for private, addresses in ports.published(ctx.containers, container).items():
        for address in addresses:
            click.echo(f"{private} -> {address}")


def _value(flag: str, text: str | None, parse: Callable[[str], Any]) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        fail(f'invalid argument "{text}" for "{flag}" flag: {exc}')
        return None


def _swap(text: str) -> int:
    from isobox.cli.runopts_parse import ram_in_bytes

    return -1 if text == "-1" else ram_in_bytes(text)


@click.command("update", cls=DockerCommand)
@click.argument("containers", nargs=-1, required=True)
@click.option("--blkio-weight", default=None, help="Block IO (relative weight), between 10 "
              "and 1000, or 0 to disable")
@click.option("--cpu-period", default=None, help="Limit CPU CFS (Completely Fair Scheduler) "
              "period")
@click.option("--cpu-quota", default=None, help="Limit CPU CFS (Completely Fair Scheduler) "
              "quota")
@click.option("--cpus", default=None, help="Number of CPUs")
@click.option("--cpuset-cpus", default=None, help="CPUs in which to allow execution (0-3, 0,1)")
@click.option("--cpuset-mems", default=None, help="MEMs in which to allow execution (0-3, 0,1)")
@click.option("-c", "--cpu-shares", default=None, help="CPU shares (relative weight)")
@click.option("-m", "--memory", default=None, help="Memory limit")
@click.option("--memory-reservation", default=None, help="Memory soft limit")
@click.option("--memory-swap", default=None, help="Swap limit equal to memory plus swap: -1 "
              "to enable unlimited swap")
@click.option("--pids-limit", default=None, help="Tune container pids limit (set -1 for "
              "unlimited)")
@click.option("--restart", default=None, help="Restart policy to apply when a container "
              "exits; it takes effect from the container's next start")
@pass_ctx
@daemon_errors
def update(ctx: Context, /, containers: tuple[str, ...], **flags: str | None) -> None:
    """Update configuration of one or more containers.

    Resource limits apply at once to a running container and are kept for
    its next starts; a new --restart policy takes effect from the next start.
    """
    from isobox.cli.runopts_parse import (
        parse_int,
        parse_nano_cpus,
        parse_restart,
        ram_in_bytes,
    )
    from isobox.engine.update import update as engine_update

    body: dict[str, Any] = {
        "BlkioWeight": _value("--blkio-weight", flags["blkio_weight"],
                              lambda t: parse_int(t, 16, signed=False)),
        "CpuPeriod": _value("--cpu-period", flags["cpu_period"], parse_int),
        "CpuQuota": _value("--cpu-quota", flags["cpu_quota"], parse_int),
        "NanoCpus": _value("--cpus", flags["cpus"], parse_nano_cpus),
        "CpusetCpus": flags["cpuset_cpus"],
        "CpusetMems": flags["cpuset_mems"],
        "CpuShares": _value("--cpu-shares", flags["cpu_shares"], parse_int),
        "Memory": _value("--memory", flags["memory"], ram_in_bytes),
        "MemoryReservation": _value("--memory-reservation", flags["memory_reservation"],
                                    ram_in_bytes),
        "MemorySwap": _value("--memory-swap", flags["memory_swap"], _swap),
        "PidsLimit": _value("--pids-limit", flags["pids_limit"], parse_int),
    }
    body = {k: v for k, v in body.items() if v}
    if flags["restart"] is not None:
        policy = _value("--restart", flags["restart"], parse_restart)
        body["RestartPolicy"] = {"Name": policy.name or "no",
                                 "MaximumRetryCount": policy.maximum_retry_count or 0}
    if not body:
        fail("you must provide one or more flags when using this command")
    failed = False
    for name in containers:
        try:
            engine_update(ctx.containers, name, body)
            click.echo(name)
        except IsoboxError as exc:
            text = str(exc)
            if not text.startswith("Cannot update container"):
                try:
                    cid = ctx.containers.store.lookup(name).id
                    text = f"Cannot update container {cid}: {text}"
                except IsoboxError:
                    pass
            click.echo(f"Error response from daemon: {text}", err=True)
            failed = True
    if failed:
        sys.exit(1)


def register(cli: click.Group) -> None:
    for command in (port, update):
        cli.add_command(command)
    add_to_group(cli, "container", [(port, "port"), (update, "update")])
