"""``build``: the engine's entry point for Dockerfile builds (CLI and API).

The context (a directory, or a tar stream: ``docker build -``) is copied,
filtered by its ``.dockerignore``, into a private directory under the root,
as Docker's CLI tars it for the daemon; the Dockerfile comes from the
context, a path (``-f``), or text (``-f -``). The builder runs with the
engine's step runner and the build cache under ``<root>/build-cache``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from isobox.build import context as build_context
from isobox.build import remote
from isobox.build.cache import BuildCache
from isobox.build.executor import BuildError, BuildOptions, BuildResult
from isobox.build.executor import build as run_build
from isobox.engine.build_steps import EngineSteps
from isobox.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

__all__ = ["BuildError", "BuildRequest", "BuildResult", "build"]


@dataclass(frozen=True)
class BuildRequest:
    context: str | BinaryIO                    #: a directory, or a tar stream
    dockerfile: str | None = None              #: a path (None: <context>/Dockerfile)
    dockerfile_text: str | None = None         #: or the text itself (``-f -``)
    tags: Sequence[str] = ()
    build_args: Mapping[str, str | None] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "default"
    isolation: str = ""
    platform: str | None = None
    iidfile: str | None = None
    pull: bool = False                          #: --pull: base images pulled again


def build(service: ContainerService, request: BuildRequest,
          log: Callable[[str], None],
          on_built: Callable[[BuildResult], None] | None = None) -> BuildResult:
    from isobox.oci import reference

    for tag in request.tags:
        reference.parse(tag)  # a bad tag fails before any step runs
    tmp_root = os.path.join(service.config.root, "tmp")
    os.makedirs(tmp_root, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix="build-", dir=tmp_root)
    try:
        ctx_dir = os.path.join(work, "context")
        os.mkdir(ctx_dir)
        text = request.dockerfile_text
        context_arg: str | BinaryIO = request.context
        if isinstance(context_arg, str) and remote.is_url(context_arg):
            # A tarball's URL (plain or compressed), as docker build takes one.
            fetched = remote.fetch(context_arg, os.path.join(work, "downloads"))
            context_arg = open(fetched.path, "rb")  # noqa: SIM115 (closed below)
        if isinstance(context_arg, str):
            source = context_arg
            if not os.path.isdir(source):
                raise NotFound(f"unable to prepare context: path {source!r} not found")
        else:
            source = os.path.join(work, "raw")
            os.mkdir(source)
            data = context_arg.read()
            if context_arg is not request.context:
                context_arg.close()
            if _is_tar(data):
                import io

                build_context.extract_tar(io.BytesIO(_padded(data)), source)
            elif text is None:  # ``build - < Dockerfile``: no context at all
                text = data.decode("utf-8", "surrogateescape")
        if text is None:
            text = _read_dockerfile(source, request.dockerfile,
                                    in_context=not isinstance(context_arg, str))
        build_context.copy_filtered(source, ctx_dir, build_context.matcher_for(source))
        options = BuildOptions(dockerfile=text, context_dir=ctx_dir, tags=tuple(request.tags),
                               build_args=dict(request.build_args), target=request.target,
                               no_cache=request.no_cache, labels=dict(request.labels),
                               network=request.network, isolation=request.isolation,
                               platform=request.platform)
        cache = BuildCache(os.path.join(service.config.root, "build-cache"))
        result = run_build(options, EngineSteps(service, pull=request.pull), cache, log, on_built)
        if request.iidfile:
            with open(request.iidfile, "w", encoding="ascii") as f:
                f.write(result.image_id)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read_dockerfile(source: str, name: str | None, *, in_context: bool) -> str:
    if name is None:
        candidates = [os.path.join(source, "Dockerfile"), os.path.join(source, "dockerfile")]
    elif in_context or (not os.path.isabs(name) and not os.path.exists(name)):
        candidates = [os.path.join(source, name)]
    else:
        candidates = [name]
    for path in candidates:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                return f.read()
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            raise InvalidArgument(f"the Dockerfile ({path}) is a directory") from None
    raise NotFound(f"Cannot locate specified Dockerfile: {name or 'Dockerfile'}")


def _is_tar(data: bytes) -> bool:
    import gzip

    head = data[:2]
    if head == b"\x1f\x8b":
        try:
            data = gzip.decompress(data[:1 << 20] if len(data) > 1 << 20 else data)
        except (OSError, EOFError):
            return True  # truncated read of a big gzip stream: it is compressed, take it
    return len(data) >= 512 and data[257:262] == b"ustar"


def _padded(data: bytes) -> bytes:
    """The docker CLI, sending a Dockerfile from outside the context, appends
    it to the tar without the last entry's padding or the end-of-archive
    blocks (dockerd accepts that); complete such a tar."""
    import gzip

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) % 512:
        data += bytes(512 - len(data) % 512) + bytes(1024)
    return data
