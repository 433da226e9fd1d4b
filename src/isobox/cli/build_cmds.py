"""``isobox build``: Docker's classic builder output over the engine's build."""

from __future__ import annotations

import os
import sys

import click

from isobox.cli.context import Context, fail, pass_ctx


def _pairs(values: tuple[str, ...], what: str, *, env_fallback: bool) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for value in values:
        key, eq, rest = value.partition("=")
        if not key:
            fail(f"invalid {what} {value!r}: want KEY=VALUE", 1)
        # ``--build-arg KEY`` takes KEY from the environment (unset: no value)
        out[key] = rest if eq else (os.environ.get(key) if env_fallback else "")
    return out


@click.command("build")
@click.argument("path")
@click.option("-f", "--file", "dockerfile", default=None,
              help="Name of the Dockerfile (default: PATH/Dockerfile; '-' reads stdin)")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag)")
@click.option("--build-arg", "build_args", multiple=True, help="Set build-time variables")
@click.option("--target", default=None, help="Set the target build stage to build")
@click.option("--no-cache", is_flag=True, help="Do not use cache when building the image")
@click.option("--label", "labels", multiple=True, help="Set metadata for an image")
@click.option("--iidfile", default=None, help="Write the image ID to the file")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the build output and print the "
              "image ID on success")
@click.option("--network", default="default", help="Networking mode for the RUN instructions")
@click.option("--isolation", default="", help="Container isolation technology (process, vm)")
@click.option("--platform", default=None, help="Set platform if server is multi-platform capable")
@click.option("--pull", is_flag=True, help="Always attempt to pull a newer version of the image")
@click.option("--rm/--no-rm", "remove", default=True, hidden=True,
              help="Accepted: intermediate containers are always removed")
@click.option("--force-rm", is_flag=True, hidden=True)
@pass_ctx
def build(ctx: Context, path: str, dockerfile: str | None, tags: tuple[str, ...],
          build_args: tuple[str, ...], target: str | None, no_cache: bool,
          labels: tuple[str, ...], iidfile: str | None, quiet: bool, network: str,
          isolation: str, platform: str | None, pull: bool, remove: bool,
          force_rm: bool) -> None:
    """Build an image from a Dockerfile."""
    from isobox.engine.build import BuildError, BuildRequest
    from isobox.engine.build import build as run_build
    from isobox.errors import IsoboxError

    text = None
    if dockerfile == "-":
        if path == "-":
            fail("invalid argument: can't use stdin for both build context and dockerfile", 1)
        text = sys.stdin.read()
        dockerfile = None
    request = BuildRequest(
        context=sys.stdin.buffer if path == "-" else path, dockerfile=dockerfile,
        dockerfile_text=text, tags=tags, build_args=_pairs(build_args, "build-arg",
                                                           env_fallback=True),
        target=target, no_cache=no_cache,
        labels={k: v or "" for k, v in _pairs(labels, "label", env_fallback=False).items()},
        network=network, isolation=isolation, platform=platform, iidfile=iidfile, pull=pull)

    def log(line: str) -> None:
        if not quiet:
            sys.stdout.write(line)
            sys.stdout.flush()

    if not quiet:
        click.echo("Sending build context to Docker daemon")
    try:
        result = run_build(ctx.containers, request, log)
    except BuildError as exc:
        fail(str(exc), exc.exit_code)
        return
    except IsoboxError as exc:
        fail(str(exc), 1)
        return
    except OSError as exc:
        fail(exc.strerror or str(exc), 1)
        return
    if quiet:
        click.echo(result.image_id)


def register(cli: click.Group) -> None:
    cli.add_command(build)

    image = cli.commands.get("image")
    if isinstance(image, click.Group):
        image.add_command(build)
