"""``run``, ``create``, ``exec`` and ``attach``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from isobox.cli.containers import Command
from isobox.cli.context import Context, errors, pass_ctx
from isobox.cli.runopts import (
    RunCommand,
    client_options,
    create_options,
    run_options,
    to_create_request,
)


class _RunCommand(Command, RunCommand):
    """Docker's run flags, with errors on one line."""


def _create(ctx: Context, image: str, command: tuple[str, ...], options: dict[str, Any]
            ) -> tuple[str, Any]:
    from isobox.engine.api_types import encode
    from isobox.errors import NotFound

    flags = client_options(options)
    request = to_create_request(image, list(command), options)
    body = __import__("json").loads(encode(request))
    pulling = flags.pull == "always"
    if flags.pull == "missing":
        try:
            ctx.images.get(image)
        except NotFound:
            pulling = True
            if not flags.quiet:
                click.echo(f"Unable to find image '{image}' locally", err=True)
    if not pulling or flags.quiet:
        # No progress display (and none of the registry client's imports,
        # about a fifth of a run's time) unless something is pulled.
        cid = ctx.containers.create(body, name=flags.name, pull=flags.pull,
                                    platform=flags.platform)
    else:
        from isobox.engine.images import terminal_progress

        with terminal_progress(sys.stderr) as progress:
            cid = ctx.containers.create(body, name=flags.name, pull=flags.pull,
                                        platform=flags.platform, progress=progress)
    cidfile = options.get("cidfile")
    if cidfile:
        with open(cidfile, "x") as f:
            f.write(cid)
    return cid, flags


@click.command("create", cls=_RunCommand)
@create_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
@errors()
def create(ctx: Context, /, image: str, command: tuple[str, ...], **options: Any) -> None:
    """Create a new container."""
    cid, _ = _create(ctx, image, command, options)
    click.echo(cid)


@click.command("run", cls=_RunCommand)
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
@errors()
def run(ctx: Context, /, image: str, command: tuple[str, ...], **options: Any) -> None:
    """Create and run a new container from an image."""
    from isobox.cli.attach import attach_and_start, parse_detach_keys

    cid, flags = _create(ctx, image, command, options)
    auto_remove = bool(options.get("rm"))
    if flags.detach:
        try:
            ctx.containers.start(cid)
        except BaseException:
            if auto_remove:
                ctx.containers.remove(cid, force=True)
            raise
        click.echo(cid)
        return
    interactive = bool(options.get("interactive"))
    try:
        code = attach_and_start(ctx, cid, stdin=interactive, start=True,
                                detach_keys=parse_detach_keys(flags.detach_keys),
                                sig_proxy=flags.sig_proxy)
    except BaseException:
        if auto_remove:
            ctx.containers.remove(cid, force=True)
        raise
    if code is None:  # detached with ctrl-p ctrl-q: the container keeps running
        return
    if auto_remove:
        from isobox.errors import NotFound

        try:
            ctx.containers.remove(cid, force=True)
        except NotFound:
            pass  # another command's listing removed it first
    sys.exit(code)


@click.command("exec", cls=Command, context_settings={"allow_interspersed_args": False,
                                         "help_option_names": ["--help"]})
@click.option("-d", "--detach", is_flag=True)
@click.option("-i", "--interactive", is_flag=True)
@click.option("-t", "--tty", is_flag=True)
@click.option("-e", "--env", multiple=True)
@click.option("--env-file", multiple=True)
@click.option("-u", "--user", default=None)
@click.option("-w", "--workdir", default=None)
@click.option("--privileged", is_flag=True)
@click.option("--detach-keys", default=None)
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
@errors()
def exec_(ctx: Context, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
          env_file: tuple[str, ...], user: str | None, workdir: str | None, privileged: bool,
          detach_keys: str | None, container: str, command: tuple[str, ...]) -> None:
    """Execute a command in a running container."""
    from isobox.engine.execs import exec_process

    environment = []
    for path in env_file:
        with open(path) as f:
            environment += [line.strip() for line in f
                            if line.strip() and not line.startswith("#")]
    for item in env:
        if "=" not in item:
            value = os.environ.get(item)
            if value is None:
                continue
            item = f"{item}={value}"
        environment.append(item)
    code = exec_process(ctx.containers, container, list(command), tty=tty,
                        interactive=interactive, detach=detach, env=environment, user=user,
                        workdir=workdir, privileged=privileged)
    sys.exit(code)


@click.command("attach", cls=Command)
@click.option("--no-stdin", is_flag=True)
@click.option("--sig-proxy/--no-sig-proxy", default=True)
@click.option("--detach-keys", default=None)
@click.argument("container")
@pass_ctx
@errors()
def attach(ctx: Context, no_stdin: bool, sig_proxy: bool, detach_keys: str | None,
           container: str) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    from isobox.cli.attach import attach_and_start, parse_detach_keys

    record = ctx.containers.get(container)
    if record.state["Status"] != "running":
        from isobox.errors import Conflict

        raise Conflict("You cannot attach to a stopped container, start it first")
    code = attach_and_start(ctx, record.id, stdin=not no_stdin and bool(
        record.request.get("OpenStdin")), start=False,
        detach_keys=parse_detach_keys(detach_keys), sig_proxy=sig_proxy)
    if code is not None:
        sys.exit(code)


def register(cli: click.Group) -> None:
    for command in (run, create, exec_, attach):
        cli.add_command(command)
    container = cli.commands.get("container")
    if isinstance(container, click.Group):
        for command in (run, create, exec_, attach):
            container.add_command(command)
