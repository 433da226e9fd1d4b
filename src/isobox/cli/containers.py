"""Container commands other than run/create/exec: ps, start, stop, restart,
kill, pause, unpause, rm, logs, wait, rename, inspect, prune."""

from __future__ import annotations

import sys
from typing import Any

import click

from isobox.cli.context import Context, errors, pass_ctx
from isobox.cli.output import each, human_size, print_inspect, render
from isobox.errors import NotFound


class FlagUsageError(click.UsageError):
    exit_code = 125


class MissingArgumentError(click.UsageError):
    exit_code = 1


def one_line(exc: click.UsageError) -> click.UsageError:
    """A flag or argument error as Docker's CLI reports it: one line on
    stderr (no usage text); 125 for a bad flag, 1 for missing arguments."""
    missing = (isinstance(exc, click.MissingParameter) and exc.param is not None
               and exc.param.param_type_name == "argument")
    return (MissingArgumentError if missing else FlagUsageError)(exc.format_message())


class Command(click.Command):
    """A click command whose usage errors are :func:`one_line`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a flag value checked by the command itself
            raise one_line(exc) from None


PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES",
              "CreatedAt": "CREATED AT", "State": "STATE", "Size": "SIZE", "Labels": "LABELS",
              "Mounts": "MOUNTS", "Networks": "NETWORKS"}


def _ps_filter(row: dict[str, Any], filters: list[tuple[str, str]], images: Any) -> bool:
    import fnmatch
    import re

    for key, value in filters:
        if key == "name" and not re.search(value, row["Names"]):
            return False
        if key == "id" and not row["ID"].startswith(value):
            return False
        if key == "status" and row["State"] != value:
            return False
        if key == "exited" and not (row["State"] == "exited" and str(row["ExitCode"]) == value):
            return False
        if key == "label":
            k, sep, v = value.partition("=")
            if k not in row["LabelsMap"] or (sep and row["LabelsMap"][k] != v):
                return False
        if key == "ancestor":
            try:
                wanted = images.get(value).id
            except NotFound:
                wanted = None
            if row["ImageID"] != wanted and not fnmatch.fnmatch(row["Image"], value):
                return False
    return True


@click.command("ps", cls=Command)
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs")
@click.option("-n", "--last", default=-1, type=int, help="Show n last created containers")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output")
@click.option("--format", "fmt", default=None, help="Go template")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@pass_ctx
@errors(exit_code=1)
def ps(ctx: Context, all_: bool, quiet: bool, last: int, latest: bool, size: bool,
       filters: tuple[str, ...], fmt: str | None, no_trunc: bool) -> None:
    """List containers."""
    from isobox.engine.views import ps_row

    parsed = []
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key not in ("name", "id", "status", "exited", "label", "ancestor"):
            from isobox.errors import InvalidArgument

            raise InvalidArgument(f"invalid filter '{item}'")
        parsed.append((key, value))
    if latest:
        last = 1
    show_all = all_ or last > 0 or any(k in ("status", "exited") for k, _ in parsed)
    records = ctx.containers.records(all_containers=show_all)
    if last > 0:
        records = records[:last]
    rows = [ps_row(r, ctx.containers.dir(r.id)) for r in records]
    for row in rows:
        if row["State"] in ("running", "paused"):
            row["Ports"] = ctx.containers.networking.ps_ports(ctx.containers.dir(row["ID"]))
    rows = [r for r in rows if _ps_filter(r, parsed, ctx.images)]
    if quiet:
        click.echo("".join(f"{r['ID'] if no_trunc else r['ID'][:12]}\n" for r in rows), nl=False)
        return
    from isobox.cli.output import ago

    view = []
    for r in rows:
        command = r["Command"]
        if not no_trunc and len(command) > 20:
            command = command[:19] + "…"
        view.append({**r, "ID": r["ID"] if no_trunc else r["ID"][:12],
                     "Command": f'"{command}"', "RunningFor": ago(r["Created"]),
                     "Size": human_size(ctx.containers.size(r["ID"])) if size else ""})
    keys = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]
    if size:
        keys.append("Size")
    click.echo(render(fmt, view, [PS_HEADERS[k] for k in keys], keys, PS_HEADERS), nl=False)


@click.command("start", cls=Command)
@click.argument("names", nargs=-1, required=True)
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals")
@click.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN")
@pass_ctx
@errors(exit_code=1)
def start(ctx: Context, names: tuple[str, ...], attach: bool, interactive: bool) -> None:
    """Start one or more stopped containers."""
    if attach or interactive:
        from isobox.cli.attach import start_attached

        sys.exit(start_attached(ctx, names[0], stdin=interactive))
    each(names, lambda n: ctx.containers.start(n) and None)


@click.command("stop", cls=Command)
@click.argument("names", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=int, default=None)
@click.option("-s", "--signal", default=None)
@pass_ctx
@errors(exit_code=1)
def stop(ctx: Context, names: tuple[str, ...], timeout: int | None, signal: str | None) -> None:
    """Stop one or more running containers."""
    each(names, lambda n: ctx.containers.stop(n, timeout, signal))


@click.command("restart", cls=Command)
@click.argument("names", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=int, default=None)
@pass_ctx
@errors(exit_code=1)
def restart(ctx: Context, names: tuple[str, ...], timeout: int | None) -> None:
    """Restart one or more containers."""
    each(names, lambda n: ctx.containers.restart(n, timeout))


@click.command("kill", cls=Command)
@click.argument("names", nargs=-1, required=True)
@click.option("-s", "--signal", default="KILL")
@pass_ctx
@errors(exit_code=1)
def kill(ctx: Context, names: tuple[str, ...], signal: str) -> None:
    """Kill one or more running containers."""
    each(names, lambda n: ctx.containers.kill(n, signal))


@click.command("pause", cls=Command)
@click.argument("names", nargs=-1, required=True)
@pass_ctx
@errors(exit_code=1)
def pause(ctx: Context, names: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""
    each(names, ctx.containers.pause)


@click.command("unpause", cls=Command)
@click.argument("names", nargs=-1, required=True)
@pass_ctx
@errors(exit_code=1)
def unpause(ctx: Context, names: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    each(names, ctx.containers.unpause)


@click.command("rm", cls=Command)
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True)
@click.option("-v", "--volumes", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def rm(ctx: Context, names: tuple[str, ...], force: bool, volumes: bool) -> None:
    """Remove one or more containers."""
    each(names, lambda n: ctx.containers.remove(n, force=force, volumes=volumes) and None)


@click.command("wait", cls=Command)
@click.argument("names", nargs=-1, required=True)
@pass_ctx
@errors(exit_code=1)
def wait(ctx: Context, names: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    each(names, ctx.containers.wait)


@click.command("rename", cls=Command)
@click.argument("name")
@click.argument("new_name")
@pass_ctx
@errors(exit_code=1)
def rename(ctx: Context, name: str, new_name: str) -> None:
    """Rename a container."""
    ctx.containers.rename(name, new_name)


@click.command("logs", cls=Command)
@click.argument("name")
@click.option("-f", "--follow", is_flag=True)
@click.option("-n", "--tail", default="all")
@click.option("--since", default=None)
@click.option("--until", default=None)
@click.option("-t", "--timestamps", is_flag=True)
@click.option("--details", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def logs(ctx: Context, name: str, follow: bool, tail: str, since: str | None,
         until: str | None, timestamps: bool, details: bool) -> None:
    """Fetch the logs of a container."""
    from isobox.engine.logs import parse_since

    try:
        tail_n = None if tail == "all" else int(tail)
    except ValueError:
        from isobox.errors import InvalidArgument

        raise InvalidArgument(f"invalid value for --tail: {tail}") from None
    entries = ctx.containers.log_entries(
        name, follow=follow, tail=tail_n, since=parse_since(since) if since else None,
        until=parse_since(until) if until else None)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        for stream, text, when in entries:
            line = (f"{when} {text}" if timestamps else text).encode()
            target = err if stream == "stderr" else out
            target.write(line)
            target.flush()
    except BrokenPipeError:  # ``logs | head``: the reader is done; so are we, quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


@click.command("inspect", cls=Command)
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None)
@click.option("--type", "type_", type=click.Choice(["container", "image"]), default=None)
@click.option("-s", "--size", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def inspect(ctx: Context, names: tuple[str, ...], fmt: str | None, type_: str | None,
            size: bool) -> None:
    """Return low-level information on containers or images."""
    found: list[dict[str, Any]] = []
    failed = False
    for name in names:
        item = None
        if type_ in (None, "container"):
            try:
                item = ctx.containers.inspect(name)
            except NotFound:
                item = None
        if item is None and type_ in (None, "image"):
            try:
                item = ctx.images.inspect(name)
            except NotFound:
                item = None
        if item is None:
            click.echo(f"Error: No such object: {name}", err=True)
            failed = True
        else:
            found.append(item)
    print_inspect(found, fmt)
    if failed:
        sys.exit(1)


@click.command("prune", cls=Command)
@click.option("-f", "--force", is_flag=True)
@click.option("--filter", "filters", multiple=True)
@pass_ctx
@errors(exit_code=1)
def container_prune(ctx: Context, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers."""
    if not force and not click.confirm("WARNING! This will remove all stopped containers.\n"
                                       "Are you sure you want to continue?", default=False):
        return
    removed, freed = ctx.containers.prune()
    if removed:
        click.echo("Deleted Containers:")
        for cid in removed:
            click.echo(cid)
        click.echo()
    click.echo(f"Total reclaimed space: {human_size(freed)}")


def register(cli: click.Group) -> None:
    for command in (ps, start, stop, restart, kill, pause, unpause, rm, logs, wait, rename,
                    inspect):
        cli.add_command(command)

    @cli.group("container")
    def container() -> None:
        """Manage containers."""

    for command in (start, stop, restart, kill, pause, unpause, rm, logs, wait, rename,
                    container_prune):
        container.add_command(command)
    container.add_command(ps, "ls")
    container.add_command(ps, "list")
    container.add_command(inspect, "inspect")
