"""Image commands: pull, push, images, inspect, history, tag, rmi, prune,
save, load, import, login, logout, bootstrap."""

from __future__ import annotations

import getpass
import os
import sys
from typing import BinaryIO

import click

from isobox.cli.context import Context, errors, pass_ctx
from isobox.cli.output import ago, human_size, print_inspect, render


def _short(image_id: str, no_trunc: bool) -> str:
    from isobox.engine.images import short_id

    return image_id if no_trunc else short_id(image_id)


@click.command("pull")
@click.argument("name")
@click.option("--platform", default=None, help="os/arch[/variant]")
@click.option("-q", "--quiet", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def pull(ctx: Context, name: str, platform: str | None, quiet: bool) -> None:
    """Pull an image from a registry."""
    from isobox.engine.images import parse_reference, terminal_progress

    ref = parse_reference(name)
    if not quiet and ref.tag == "latest" and ":" not in name.rpartition("/")[2]:
        click.echo("Using default tag: latest")
    if quiet:
        ctx.images.pull(name, platform=platform)
    else:
        with terminal_progress(sys.stdout) as progress:
            ctx.images.pull(name, platform=platform, progress=progress)
    if not quiet:  # the progress lines ended with "Digest: ..."
        click.echo(f"Status: Downloaded newer image for {ref.familiar()}")
    click.echo(str(ref))


@click.command("push")
@click.argument("name")
@click.option("-q", "--quiet", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def push(ctx: Context, name: str, quiet: bool) -> None:
    """Push an image to a registry."""
    from isobox.engine.images import parse_reference, terminal_progress

    ref = parse_reference(name)
    if quiet:
        ctx.images.push(name)
        click.echo(str(ref))
    else:  # the progress lines say "The push refers to ..." and "TAG: digest: ..."
        with terminal_progress(sys.stdout) as progress:
            ctx.images.push(name, progress=progress)


IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                 "CreatedSince": "CREATED", "Size": "SIZE", "Digest": "DIGEST",
                 "CreatedAt": "CREATED AT"}


@click.command("images")
@click.argument("repository", required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.option("--digests", "show_digests", is_flag=True, help="Show digests")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output")
@click.option("--format", "fmt", default=None, help="Go template")
@pass_ctx
@errors(exit_code=1)
def images(ctx: Context, repository: str | None, all_: bool, quiet: bool, show_digests: bool,
           no_trunc: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List images."""
    if repository:
        filters = (*filters, f"reference={repository}")
    rows = ctx.images.rows(all_images=all_, filters=filters)
    if quiet:
        seen: list[str] = []
        for r in rows:
            short = _short(r["ID"], no_trunc)
            if short not in seen:
                seen.append(short)
        click.echo("".join(f"{s}\n" for s in seen), nl=False)
        return
    view = [{
        "Repository": r["Repository"], "Tag": r["Tag"], "Digest": r["Digest"],
        "ID": _short(r["ID"], no_trunc), "CreatedSince": ago(r["Created"]),
        "CreatedAt": _local_time(r["Created"]), "Size": human_size(r["Size"]),
        "Containers": str(r["Containers"]) if r["Containers"] else "N/A",
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(r["Labels"].items())),
        "VirtualSize": human_size(r["Size"]), "SharedSize": "N/A", "UniqueSize": "N/A",
    } for r in rows]
    keys = ["Repository", "Tag"] + (["Digest"] if show_digests else []) + \
        ["ID", "CreatedSince", "Size"]
    click.echo(render(fmt, view, [IMAGE_HEADERS[k] for k in keys], keys, IMAGE_HEADERS),
               nl=False)


def _local_time(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(ts))


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None)
@pass_ctx
@errors(exit_code=1)
def image_inspect(ctx: Context, names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more images."""
    found = [ctx.images.inspect(n) for n in names]
    print_inspect(found, fmt)


@click.command("history")
@click.argument("name")
@click.option("-H", "--human", default=True, type=bool)
@click.option("--no-trunc", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("--format", "fmt", default=None)
@pass_ctx
@errors(exit_code=1)
def history(ctx: Context, name: str, human: bool, no_trunc: bool, quiet: bool,
            fmt: str | None) -> None:
    """Show the history of an image."""
    rows = ctx.images.history(name)
    if quiet:
        click.echo("".join(f"{_short(r['ID'], no_trunc) if r['ID'] != '<missing>' else r['ID']}\n"
                           for r in rows), nl=False)
        return
    view = []
    for r in rows:
        created_by = r["CreatedBy"]
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        view.append({"ID": r["ID"] if r["ID"] == "<missing>" else _short(r["ID"], no_trunc),
                     "CreatedSince": ago(r["Created"]) if human else str(r["Created"]),
                     "CreatedBy": created_by, "Size": human_size(r["Size"]) if human
                     else str(r["Size"]), "Comment": r["Comment"]})
    headers = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedBy": "CREATED BY",
               "Size": "SIZE", "Comment": "COMMENT"}
    keys = ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
    click.echo(render(fmt, view, [headers[k] for k in keys], keys, headers), nl=False)


@click.command("tag")
@click.argument("source")
@click.argument("target")
@pass_ctx
@errors(exit_code=1)
def tag(ctx: Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    ctx.images.tag(source, target)


@click.command("rmi")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True)
@click.option("--no-prune", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def rmi(ctx: Context, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    from isobox.errors import IsoboxError

    failed = False
    for name in names:
        try:
            for line in ctx.images.remove(name, force=force):
                click.echo(line)
        except IsoboxError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed = True
    if not no_prune:
        ctx.images.collect_garbage()
    if failed:
        sys.exit(1)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True)
@click.option("-f", "--force", is_flag=True)
@click.option("--filter", "filters", multiple=True)
@pass_ctx
@errors(exit_code=1)
def image_prune(ctx: Context, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused images."""
    if not force:
        what = "all images without at least one container associated to them" if all_ \
            else "all dangling images"
        if not click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to "
                             "continue?", default=False):
            return
    lines, freed = ctx.images.prune(all_images=all_)
    if lines:
        click.echo("Deleted Images:")
        for line in lines:
            click.echo(line)
        click.echo()
    click.echo(f"Total reclaimed space: {human_size(freed)}")


@click.command("save")
@click.argument("names", nargs=-1, required=True)
@click.option("-o", "--output", default=None, help="Write to a file, instead of STDOUT")
@click.option("--format", "fmt", type=click.Choice(["docker", "oci"]), default="docker")
@pass_ctx
@errors(exit_code=1)
def save(ctx: Context, names: tuple[str, ...], output: str | None, fmt: str) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    if output is None:
        if sys.stdout.isatty():
            from isobox.errors import InvalidArgument

            raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag "
                                  "or redirect")
        ctx.images.save(list(names), sys.stdout.buffer, format=fmt)
        return
    tmp = f"{output}.isobox-tmp"
    try:
        with open(tmp, "wb") as f:
            ctx.images.save(list(names), f, format=fmt)
        os.rename(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@click.command("load")
@click.option("-i", "--input", "input_", default=None, help="Read from tar archive file")
@click.option("-q", "--quiet", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def load(ctx: Context, input_: str | None, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN."""
    src: BinaryIO
    if input_ is None:
        src = sys.stdin.buffer
        lines = ctx.images.load(src)
    else:
        with open(input_, "rb") as src:
            lines = ctx.images.load(src)
    for line in lines:
        click.echo(line)


@click.command("import")
@click.argument("source")
@click.argument("reference", required=False)
@click.option("-c", "--change", "changes", multiple=True)
@click.option("-m", "--message", default=None)
@click.option("--platform", default=None)
@pass_ctx
@errors(exit_code=1)
def import_(ctx: Context, source: str, reference: str | None, changes: tuple[str, ...],
            message: str | None, platform: str | None) -> None:
    """Import the contents from a tarball (file, URL or - for STDIN) to create an image."""
    if source == "-":
        image_id = ctx.images.import_(sys.stdin.buffer, ref=reference, changes=changes,
                                      message=message, source="-")
    elif source.startswith(("http://", "https://")):
        import tempfile

        import httpx

        with tempfile.TemporaryFile() as tmp:
            with httpx.stream("GET", source, follow_redirects=True, timeout=60) as resp:
                resp.raise_for_status()
                for chunk in resp.iter_bytes(1 << 20):
                    tmp.write(chunk)
            tmp.seek(0)
            image_id = ctx.images.import_(tmp, ref=reference, changes=changes,
                                          message=message, source=source)
    else:
        with open(source, "rb") as f:
            image_id = ctx.images.import_(f, ref=reference, changes=changes, message=message,
                                          source=source)
    click.echo(image_id)


@click.command("login")
@click.argument("server", required=False)
@click.option("-u", "--username", default=None)
@click.option("-p", "--password", default=None)
@click.option("--password-stdin", is_flag=True)
@pass_ctx
@errors(exit_code=1)
def login(ctx: Context, server: str | None, username: str | None, password: str | None,
          password_stdin: bool) -> None:
    """Log in to a registry."""
    if password_stdin:
        password = sys.stdin.read().rstrip("\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = getpass.getpass("Password: ")
    ctx.images.login(server or "docker.io", username, password)
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("server", required=False)
@pass_ctx
@errors(exit_code=1)
def logout(ctx: Context, server: str | None) -> None:
    """Log out from a registry."""
    name = server or "docker.io"
    if ctx.images.logout(name):
        click.echo(f"Removing login credentials for {name}")
    else:
        click.echo(f"Not logged in to {name}")


@click.command("bootstrap")
@click.argument("kind", type=click.Choice(["busybox", "debian"]))
@click.option("-t", "--tag", default=None, help="Name the image (default busybox:latest, "
              "debian:<suite>)")
@click.option("--suite", default="bookworm", help="Debian suite for debootstrap")
@pass_ctx
@errors(exit_code=1)
def bootstrap(ctx: Context, kind: str, tag: str | None, suite: str) -> None:
    """Make a base image without a registry: busybox from the host's static
    busybox, or debian through debootstrap."""
    image_id = ctx.images.bootstrap(kind, ref=tag, suite=suite)
    click.echo(image_id)


def register(cli: click.Group) -> None:
    for command in (pull, push, images, history, tag, rmi, save, load, import_, login, logout):
        cli.add_command(command)

    @cli.group("image")
    def image() -> None:
        """Manage images."""

    for command in (pull, push, history, tag, save, load, import_, image_inspect, image_prune,
                    bootstrap):
        image.add_command(command)
    image.add_command(images, "ls")
    image.add_command(images, "list")
    image.add_command(rmi, "rm")
    image.add_command(rmi, "rmi")
