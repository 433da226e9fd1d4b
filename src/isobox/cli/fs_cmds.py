"""``cp``, ``export``, ``diff`` and ``commit``: a container's file system."""

from __future__ import annotations

import os
import sys
import tempfile

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import DockerCommand, add_to_group, daemon_errors, fail, human_size


def split_cp_arg(arg: str) -> tuple[str, str]:
    """Docker's splitCpArg: ``CONTAINER:PATH``, unless the argument is an
    absolute local path or starts with ``.`` (``./a:b`` is local)."""
    if arg.startswith("/"):
        return "", arg
    container, sep, path = arg.partition(":")
    if not sep or container.startswith("."):
        return "", arg
    return container, path


@click.command("cp", cls=DockerCommand)
@click.argument("src")
@click.argument("dest")
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid "
              "information)")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in SRC_PATH")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output during copy. "
              "Progress output is automatically suppressed if no terminal is attached")
@pass_ctx
@daemon_errors
def cp(ctx: Context, src: str, dest: str, archive: bool, follow_link: bool,
       quiet: bool) -> None:
    """Copy files/folders between a container and the local filesystem.

    \b
    isobox cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
    isobox cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH

    Use '-' as the source to read a tar archive from stdin and extract it
    to a directory destination in a container. Use '-' as the destination
    to stream a tar archive of a container source to stdout. Symbolic links
    inside the container always resolve inside the container.
    """
    from isobox.engine.copy import copy_from_container, copy_to_container

    src_container, src_path = split_cp_arg(src)
    dest_container, dest_path = split_cp_arg(dest)
    if src_container and dest_container:
        fail("copying between containers is not supported")
    if not src_container and not dest_container:
        fail("must specify at least one container source")
    if not src_path:
        fail("source can not be empty")
    if not dest_path:
        fail("destination can not be empty")
    if src_container:
        target = sys.stdout.buffer if dest_path == "-" else dest_path
        size = copy_from_container(ctx.containers, src_container, src_path, target,
                                   follow_link=follow_link, archive=archive)
        sys.stdout.flush()
    else:
        source = sys.stdin.buffer if src_path == "-" else src_path
        size = copy_to_container(ctx.containers, dest_container, source, dest_path,
                                 follow_link=follow_link, archive=archive)
    if not quiet and dest_path != "-" and sys.stderr.isatty():
        click.echo(f"Successfully copied {human_size(size)} to {dest}", err=True)


@click.command("export", cls=DockerCommand)
@click.argument("container")
@click.option("-o", "--output", default=None, help="Write to a file, instead of STDOUT")
@pass_ctx
@daemon_errors
def export(ctx: Context, container: str, output: str | None) -> None:
    """Export a container's filesystem as a tar archive (volumes excluded)."""
    from isobox.engine.copy import export as engine_export

    if output is None:
        if sys.stdout.isatty():
            fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        engine_export(ctx.containers, container, sys.stdout.buffer)
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".export-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            engine_export(ctx.containers, container, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise


@click.command("diff", cls=DockerCommand)
@click.argument("container")
@pass_ctx
@daemon_errors
def diff(ctx: Context, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem
    (A added, C changed, D deleted)."""
    from isobox.engine.layerdiff import changes

    for kind, path in changes(ctx.containers, container):
        click.echo(f"{kind} {path}")


@click.command("commit", cls=DockerCommand)
@click.argument("container")
@click.argument("repository", required=False)
@click.option("-a", "--author", default=None,
              help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@click.option("-c", "--change", "changes", multiple=True,
              help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", default=None, help="Commit message")
@click.option("-p/--no-pause", "--pause", "pause", default=True,
              help="Pause container during commit (default true; --pause=false)")
@pass_ctx
@daemon_errors
def commit(ctx: Context, container: str, repository: str | None, author: str | None,
           changes: tuple[str, ...], message: str | None, pause: bool) -> None:
    """Create a new image from a container's changes."""
    from isobox.engine.commit import commit as engine_commit

    image_id = engine_commit(ctx.containers, container, repo=repository, changes=changes,
                             message=message, author=author, pause=pause)
    click.echo(image_id)


def register(cli: click.Group) -> None:
    for command in (cp, export, diff, commit):
        cli.add_command(command)
    add_to_group(cli, "container", [(cp, "cp"), (export, "export"), (diff, "diff"),
                                    (commit, "commit")])
