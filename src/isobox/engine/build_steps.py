"""The engine's step runner for ``isobox.build``: RUN in a real container
(the build's network and isolation, output streamed from its log), COPY/ADD
written into a created (never started) container's writable layer through
``fsaccess`` and ``fstree`` (every path resolved inside the root), and
each step's layer made from the writable layer as ``commit`` makes it."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from isobox.build.steps import BaseImage, CopyItem, RunOptions
from isobox.engine import fsaccess, layerdiff, userdb
from isobox.errors import InvalidArgument, IsoboxError, NotFound
from isobox.images import fstree
from isobox.images.builder import ImageAssembler, Layer, register
from isobox.images.tarstream import DIR, LNK, REG
from isobox.oci import image_spec as spec

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

__all__ = ["EngineSteps"]

_PATH = os.O_PATH | os.O_CLOEXEC


class EngineSteps:
    """``isobox.build.steps.StepRunner`` over a ContainerService."""

    def __init__(self, service: ContainerService, *, pull: bool = False) -> None:
        self.service = service
        self.images = service.images
        self.pull = pull  #: --pull: fetch every base image again, even when present

    # -- images -----------------------------------------------------------------------

    def _image(self, record: Any) -> BaseImage:
        config = self.images.config_of(record)
        manifest = self.images.manifest_of(record)
        layers = []
        for i, (descriptor, diff_id) in enumerate(zip(manifest.layers, config.rootfs.diff_ids,
                                                      strict=True)):
            # per-layer sizes are not recorded: the image's total rides on the first
            layers.append(Layer(descriptor, diff_id, int(record.size) if i == 0 else 0))
        return BaseImage(record.id, config, tuple(layers))

    def base(self, name: str, platform: str | None) -> BaseImage:
        if self.pull:
            self.images.pull(name, platform=platform)  # a failure fails the build, as Docker's
        try:
            record = self.images.get(name)
        except NotFound:
            try:
                self.images.pull(name, platform=platform)
            except IsoboxError as exc:
                raise NotFound(f"{name}: not found locally and not pulled ({exc})") from None
            record = self.images.get(name)
        self.images.ensure_unpacked(record)
        return self._image(record)

    def exists(self, image_id: str) -> BaseImage | None:
        try:
            record = self.images.records.get(image_id)
        except (NotFound, IsoboxError):
            return None
        return self._image(record)

    def commit(self, layers: Sequence[Layer], config: spec.ImageConfig,
               history: Sequence[spec.History]) -> BaseImage:
        assembler = ImageAssembler(self.images.store)
        for layer in layers:
            assembler.add_layer_blob(layer)
        entries = list(history)
        real = sum(1 for h in entries if not h.empty_layer)
        if real < len(layers):  # a base image that lists fewer layers than it has
            entries = [spec.History(created_by="")] * (len(layers) - real) + entries
        assembled = assembler.finish(config, entries)
        image_id = register(self.images.records, assembled, [])
        record = self.images.records.get(image_id)
        self.images.ensure_unpacked(record)
        return self._image(record)

    def tag(self, image_id: str, tags: Sequence[str]) -> None:
        for tag in tags:
            self.images.tag(image_id, tag)

    # -- containers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _container(self, request: dict[str, Any]) -> Iterator[str]:
        cid = self.service.create(request, pull="never")
        try:
            yield cid
        finally:
            with contextlib.suppress(IsoboxError, OSError):
                self.service.remove(cid, force=True, volumes=True)

    def _layer(self, cid: str) -> Layer | None:
        record = self.service.get(cid)
        assembler = ImageAssembler(self.images.store)
        entries = 0

        def write(tf: Any) -> None:
            nonlocal entries
            sink = fstree.TarSink(tf=tf)
            with layerdiff.opened(self.service, record) as (upper, lowers):
                for node in layerdiff.layer_nodes(upper, lowers):
                    sink.add(node)
            entries = sink.entries

        layer = assembler.add_layer(write)
        return layer if entries else None

    def run(self, parent: BaseImage, argv: Sequence[str], options: RunOptions,
            output: Callable[[bytes], None]) -> tuple[int, Layer | None]:
        host: dict[str, Any] = {"NetworkMode": options.network or "default"}
        if options.isolation:
            host["Isolation"] = options.isolation
        request = {"Image": parent.id, "Cmd": list(argv), "Entrypoint": [],
                   "Env": list(options.env), "WorkingDir": options.workdir,
                   "User": options.user, "HostConfig": host}
        with self._container(request) as cid:
            self.service.start(cid)
            for _stream, text, _time in self.service.log_entries(cid, follow=True):
                output(text.encode("utf-8", "surrogateescape"))
            code = self.service.wait(cid)
            return code, (self._layer(cid) if code == 0 else None)

    def copy(self, parent: BaseImage, items: Sequence[CopyItem], *, chown: str | None,
             workdir: str, mkdir: Sequence[str] = ()) -> Layer | None:
        request = {"Image": parent.id, "Cmd": ["true"], "Entrypoint": [],
                   "HostConfig": {"NetworkMode": "none", "Isolation": "process"}}
        with self._container(request) as cid, contextlib.ExitStack() as stack:
            sources: dict[str, int] = {}
            for item in items:
                if item.image and item.image not in sources:
                    src_cid = stack.enter_context(self._container(
                        {"Image": item.image, "Cmd": ["true"], "Entrypoint": [],
                         "HostConfig": {"NetworkMode": "none", "Isolation": "process"}}))
                    root = stack.enter_context(fsaccess.container_root(
                        self.service, src_cid, with_volumes=False))
                    sources[item.image] = root.fd
            with fsaccess.container_root(self.service, cid, with_volumes=False,
                                         writable=True) as root:
                owner = _owner(root.fd, chown) if chown else (0, 0)
                extractor = fstree.Extractor(root.fd, owner="keep")
                try:
                    for path in mkdir:
                        _mkdirs(extractor, path)
                    for item in items:
                        for node in _nodes(root.fd, item, sources, owner):
                            extractor.add(node)
                finally:
                    extractor.finish()
            return self._layer(cid)


def _mkdirs(extractor: fstree.Extractor, path: str) -> None:
    parts = [p for p in path.split("/") if p]
    if parts:
        fd = extractor.tree.open_dir(tuple(parts), create=True)
        os.close(fd)


def _is_dir_in(root_fd: int, path: str) -> bool:
    from isobox.linux import libc

    try:
        fd = libc.openat2(root_fd, path.lstrip("/") or ".", _PATH,
                          resolve=libc.RESOLVE_IN_ROOT)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _owner(root_fd: int, chown: str) -> tuple[int, int]:
    """--chown user[:group]: names from the image's files; a user alone
    gives the same number as the group (Docker's rule)."""
    user, _, group = chown.partition(":")
    rootfs = f"/proc/self/fd/{root_fd}"

    def lookup(name: str, path: str, kind: str) -> int:
        if name.isdigit():
            return int(name)
        text = userdb.read_rootfs_file(rootfs, path)
        entries = (userdb.parse_passwd(text) if kind == "user" else userdb.parse_group(text)) \
            if text else []
        for entry in entries:
            if entry.name == name:
                return int(entry.uid if kind == "user" else entry.gid)  # type: ignore[union-attr]
        raise InvalidArgument(f"unable to convert {kind} {name!r} to an id: no such {kind} "
                              f"in {path}")

    uid = lookup(user, "/etc/passwd", "user")
    gid = lookup(group, "/etc/group", "group") if group else uid
    return uid, gid


def _nodes(root_fd: int, item: CopyItem, sources: dict[str, int],
           owner: tuple[int, int]) -> Iterator[fstree.Node]:
    dest = item.dest
    as_dir = dest.endswith("/") or _is_dir_in(root_fd, dest)
    dest_rel = posixpath.normpath(dest).strip("/")

    def restyle(node: fstree.Node) -> fstree.Node:
        node.uid, node.gid = owner
        if item.mode is not None and node.kind in (REG, DIR):
            node.mode = item.mode
        return node

    if item.data is not None:
        target = posixpath.join(dest_rel, item.name) if as_dir else dest_rel
        now = time.time_ns()
        yield restyle(fstree.Node(target, REG, 0o644, mtime_ns=now, size=len(item.data),
                                  data=(item.data,)))
        return
    if item.extract and item.host_path:
        from isobox.images import compression

        with open(item.host_path, "rb") as f:
            reader = compression.decompressed(f, item.host_path)  # type: ignore[arg-type]
            for node in fstree.tar_nodes(reader):  # type: ignore[arg-type]
                name = posixpath.normpath(node.name.lstrip("/"))
                if name.startswith(".."):
                    raise InvalidArgument(f"archive entry {node.name!r} leaves the destination")
                node.name = dest_rel if name == "." else posixpath.join(dest_rel, name)
                if node.kind == LNK:  # a hard link names an entry: it moves too
                    node.linkname = posixpath.join(dest_rel, node.linkname.lstrip("/"))
                if not node.name:
                    continue
                yield node
        return
    if item.image:
        from isobox.linux import libc

        try:
            fd = libc.openat2(sources[item.image], item.image_path.lstrip("/") or ".", _PATH,
                              resolve=libc.RESOLVE_IN_ROOT)
        except OSError as exc:
            raise NotFound(f"COPY --from: {item.image_path}: "
                           f"{os.strerror(exc.errno or errno.ENOENT)}") from None
        try:
            # The source's own name, links followed, relative to its root: both
            # names read the same way, whether or not that mount is reachable
            # from this thread's mount namespace (a path, or one from the mount).
            base = os.readlink(f"/proc/self/fd/{sources[item.image]}").rstrip("/")
            real = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if base and real != base and not real.startswith(base + "/"):
            raise NotFound(f"COPY --from: {item.image_path}: cannot resolve its source")
        parent_path, leaf = os.path.split(real[len(base):] or "/")
        leaf = leaf or "."  # the whole root
        pfd = libc.openat2(sources[item.image], parent_path.lstrip("/") or ".",
                           _PATH | os.O_DIRECTORY, resolve=libc.RESOLVE_IN_ROOT)
    else:
        assert item.host_path is not None
        parent_path, leaf = os.path.split(item.host_path)
        pfd = os.open(parent_path or "/", _PATH | os.O_DIRECTORY)
    try:
        st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            target = dest_rel
            skip_top = _is_dir_in(root_fd, dest)
            if not skip_top:
                yield restyle(fstree.Node(target, DIR, 0o755, mtime_ns=time.time_ns()))
            first = True
            for node in fstree.walk(pfd, leaf, target or ".", st=st):
                if first:
                    first = False
                    continue
                yield restyle(node)
        else:
            target = posixpath.join(dest_rel, item.name) if as_dir else dest_rel
            if not target:
                raise InvalidArgument(f"cannot copy {item.name} onto /")
            for node in fstree.walk(pfd, leaf, target, st=st):
                yield restyle(node)
    finally:
        os.close(pfd)
