"""``isobox vm``: set up VM isolation on this host."""

from __future__ import annotations

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import daemon_errors


@click.group("vm")
def vm() -> None:
    """Manage VM isolation (the guest kernel and its accelerator)."""


@vm.command("setup")
@click.option("--package", default=None,
              help="Debian kernel package to use (default: linux-image-amd64's current one)")
@pass_ctx
@daemon_errors
def setup(ctx: Context, package: str | None) -> None:
    """Fetch the guest kernel, build the initramfs, probe KVM (else TCG), make
    the VM templates containers start from."""
    from isobox.engine.vmhost import setup as vm_setup

    result = vm_setup(ctx.config, package)
    click.echo(f"guest kernel {result['Kernel']} ready ({result['KernelPath']})")
    click.echo(f"initramfs {result['Initramfs']}")
    click.echo(f"accelerator: {result['Accelerator']}: {result['Reason']}")
    click.echo(f"VM templates: {result['Templates']}")


def register(cli: click.Group) -> None:
    cli.add_command(vm)
