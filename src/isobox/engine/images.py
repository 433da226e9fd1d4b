"""Images as Docker users see them: pull, push, list, inspect, tag, remove,
prune, save, load, import, bootstrap. The engine's one place that combines
the content store, image records, snapshots and registries."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from isobox.engine.config import EngineConfig
from isobox.errors import Conflict, InvalidArgument, NotFound
from isobox.humanize import rfc3339_nano
from isobox.images.chain import chain_ids
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecord, ImageRecords
from isobox.images.snapshots import OverlaySnapshotter
from isobox.oci import digest as digests
from isobox.oci import image_spec as spec
from isobox.oci import reference as refs

#: Which containers use an image (the container store answers; images alone
#: know of none).
InUse = Callable[[str], list[str]]

def _no_containers(image_id: str) -> list[str]:
    return []


class ImageService:
    def __init__(self, config: EngineConfig, *, in_use: InUse = _no_containers) -> None:
        self.config = config
        os.makedirs(config.root, mode=0o711, exist_ok=True)
        self.store = ContentStore(config.content_dir)
        self.records = ImageRecords(config.images_db)
        self.snapshots = OverlaySnapshotter(config.snapshots_dir)
        self.in_use = in_use
        self._registry: Any = None

    def close(self) -> None:
        self.records.close()
        if self._registry is not None:
            self._registry.close()

    # -- locking --------------------------------------------------------------

    def _gc_lock(self, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        """Pulls and loads hold it shared, garbage collection exclusive: GC
        never sees the blobs of an image that is half-way in."""
        return self._lock("gc.lock", exclusive)

    @contextlib.contextmanager
    def _lock(self, name: str, exclusive: bool) -> Iterator[None]:
        fd = os.open(os.path.join(self.config.root, name),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- registry ---------------------------------------------------------------

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from isobox.registry import (
                CredentialStore,
                RegistryClient,
                RegistryOptions,
                certs_dirs_for,
            )

            self._registry = RegistryClient(
                RegistryOptions(insecure=tuple(self.config.insecure_registries),
                                certs_dirs=certs_dirs_for(self.config.config_dir)),
                credentials=CredentialStore.with_docker_fallback(
                    self.config.credentials_file, dict(os.environ)))
        return self._registry

    def pull(self, name: str, *, platform: str | None = None,
             progress: Callable[[Any], None] | None = None) -> str:
        ref = refs.parse(name)
        plat = spec.parse_platform(platform) if platform else ("linux", "amd64", None)
        from isobox.images.unpack import StreamingUnpack

        with self._gc_lock(exclusive=False):
            # Each layer is unpacked while it downloads, committed once stored.
            streaming = StreamingUnpack(self.store, self.snapshots)
            try:
                result = self.registry.pull(ref, self.store, platform=plat, progress=progress,
                                            on_layers=streaming.start)
            except BaseException:
                streaming.abort()
                raise
            size = streaming.finish()
            self.records.add(result.config_digest, result.manifest_digest,
                             result.config.created, size)
            image_id = str(result.config_digest)
            tagged_digest = result.index_digest or result.manifest_digest
            if ref.tag:
                self.records.tag(ref, image_id, tagged_digest)
            self.records.tag(ref.with_digest(tagged_digest), image_id, tagged_digest)
        return image_id

    def push(self, name: str, *, progress: Callable[[Any], None] | None = None) -> str:
        ref = refs.parse(name)
        record = self.records.lookup(name)
        pushed = self.registry.push(ref, self.store, record.manifest, progress=progress)
        self.records.tag(ref.with_digest(pushed), record.id, pushed)
        return str(pushed)

    def login(self, registry: str, username: str, password: str) -> None:
        self.registry.login(registry, username, password)

    def logout(self, registry: str) -> bool:
        return bool(self.registry.logout(registry))

    # -- unpacking ----------------------------------------------------------------

    def config_of(self, record: ImageRecord) -> spec.ImageConfig:
        return spec.decode_config(self.store.read(record.id))

    def manifest_of(self, record: ImageRecord) -> spec.Manifest:
        return spec.decode_manifest(self.store.read(record.manifest))

    def unpack(self, manifest: spec.Manifest, config: spec.ImageConfig) -> int:
        """Unpack every layer not yet unpacked (several at a time); returns
        the image's size."""
        from isobox.images.unpack import unpack_image

        return unpack_image(self.store, self.snapshots, manifest, config)

    def ensure_unpacked(self, record: ImageRecord) -> None:
        """Layers may be missing after a load or a GC: unpack them again."""
        config = self.config_of(record)
        chains = chain_ids(config.rootfs.diff_ids)
        if chains and self.snapshots.has_layer(chains[-1]):
            return
        self.unpack(self.manifest_of(record), config)

    def top_layer(self, record: ImageRecord) -> str | None:
        chains = chain_ids(self.config_of(record).rootfs.diff_ids)
        return chains[-1] if chains else None

    # -- names ----------------------------------------------------------------------

    def get(self, name: str) -> ImageRecord:
        return self.records.lookup(name)

    def tag(self, source: str, target: str) -> None:
        record = self.records.lookup(source)
        ref = refs.parse(target)
        if ref.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {target}")
        self.records.tag(ref, record.id, None)

    def repo_tags(self, record: ImageRecord) -> list[str]:
        return [refs.parse(r).familiar() for r, _ in self.records.names_of(record.id)
                if "@" not in r]

    def repo_digests(self, record: ImageRecord) -> list[str]:
        out = []
        for ref_text, manifest in self.records.names_of(record.id):
            if manifest and "@" in ref_text:
                out.append(refs.parse(ref_text).familiar())
        return sorted(set(out))

    # -- listing and inspecting -------------------------------------------------------

    def rows(self, *, all_images: bool = False,
             filters: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Rows for ``images``: one per tag, one ``<none>`` row per untagged image."""
        parsed = _parse_filters(filters)
        rows = []
        records = self.records.all()
        configs = {record.id: self.config_of(record) for record in records}
        parents = set() if all_images else _parents(configs.values())
        for record in records:
            tags = self.repo_tags(record)
            config = configs[record.id]
            if not tags and _chain_key(config, len(config.history or [])) in parents:
                continue  # an untagged parent of another image (a build step): ``-a`` only
            digests_ = self.repo_digests(record)
            labels = (config.config or spec.ContainerConfig()).labels or {}
            if not _keep(record, tags, labels, parsed):
                continue
            if "reference" in parsed:  # Docker lists only the matching names
                tags = [t for t in tags if _matches_reference(t, parsed["reference"])]
                if not tags:
                    continue
            created = _epoch(record.created)
            created = record.added if created is None else created
            base = {"ID": record.id, "Created": created, "Size": record.size,
                    "Labels": labels, "Containers": len(self.in_use(record.id))}
            for tag in tags or [""]:
                repo, tagname = _split_tag(tag) if tag else ("<none>", "<none>")
                digest = next((d.partition("@")[2] for d in digests_
                               if d.partition("@")[0] == repo), "<none>")
                rows.append({**base, "Repository": repo, "Tag": tagname, "Digest": digest})
        return rows

    def inspect(self, name: str) -> dict[str, Any]:
        record = self.records.lookup(name)
        config = self.config_of(record)
        c = config.config or spec.ContainerConfig()
        return {
            "Id": record.id,
            "RepoTags": self.repo_tags(record),
            "RepoDigests": self.repo_digests(record),
            "Parent": "",
            "Comment": (config.history or [spec.History()])[-1].comment or "",
            "Created": config.created or "",
            "DockerVersion": "",
            "Author": config.author or "",
            "Config": {
                "Hostname": "", "Domainname": "", "User": c.user or "",
                "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
                "ExposedPorts": c.exposed_ports, "Tty": False, "OpenStdin": False,
                "StdinOnce": False, "Env": c.env, "Cmd": c.cmd,
                "Healthcheck": _health(c.healthcheck), "ArgsEscaped": c.args_escaped,
                "Image": "", "Volumes": c.volumes, "WorkingDir": c.working_dir or "",
                "Entrypoint": c.entrypoint, "OnBuild": c.on_build, "Labels": c.labels,
                "StopSignal": c.stop_signal, "Shell": c.shell,
            },
            "Architecture": config.architecture,
            "Variant": config.variant,
            "Os": config.os,
            "Size": record.size,
            "VirtualSize": record.size,
            "GraphDriver": {"Name": "overlay2", "Data": None},
            "RootFS": {"Type": "layers", "Layers": list(config.rootfs.diff_ids)},
            "Metadata": {"LastTagTime": rfc3339_nano(record.added)},
        }

    def history(self, name: str) -> list[dict[str, Any]]:
        record = self.records.lookup(name)
        config = self.config_of(record)
        manifest = self.manifest_of(record)
        sizes = [layer.size for layer in manifest.layers]
        rows: list[dict[str, Any]] = []
        layer_index = 0
        for entry in config.history or []:
            size = 0
            if not entry.empty_layer and layer_index < len(sizes):
                size = sizes[layer_index]
                layer_index += 1
            rows.append({"ID": "<missing>", "Created": _epoch(entry.created),
                         "CreatedBy": entry.created_by or "", "Size": size,
                         "Comment": entry.comment or "", "Tags": None})
        rows.reverse()
        if rows:
            rows[0]["ID"] = record.id
            rows[0]["Tags"] = self.repo_tags(record)
        return rows

    # -- removing -----------------------------------------------------------------------

    def remove(self, name: str, *, force: bool = False) -> list[str]:
        """``rmi``: untag, and delete the image when no name is left.
        Returns Docker's lines (``Untagged: ...``, ``Deleted: ...``)."""
        record = self.records.lookup(name)
        users = self.in_use(record.id)
        names = self.records.names_of(record.id)
        # A name that resolves as a tag is a name, even if it looks like hex.
        by_name = any(_same_name(name, r) for r, _ in names)
        out = []
        if by_name:
            untagged = self._untag_only(refs.parse(name), names)
            if untagged is not None:
                return untagged
        if users and not force:
            raise Conflict(f"conflict: unable to remove repository reference \"{name}\" "
                           f"(must force) - container {users[0][:12]} is using its "
                           f"referenced image {digests.short_id(record.id)}")
        if users:
            # Docker keeps an image that a container uses, even with -f: untag only.
            for ref_text, _ in names:
                self.records.untag(refs.parse(ref_text))
                out.append(f"Untagged: {refs.parse(ref_text).familiar()}")
            return out
        if not by_name and len([r for r, _ in names if "@" not in r]) > 1 and not force:
            raise Conflict(f"conflict: unable to delete {digests.short_id(record.id)} (must be "
                           "forced) - image is referenced in multiple repositories")
        for ref_text, _ in names:
            out.append(f"Untagged: {refs.parse(ref_text).familiar()}")
        self.records.remove(record.id)
        out.append(f"Deleted: {record.id}")
        return out

    def _untag_only(self, ref: refs.Reference,
                    names: list[tuple[str, str | None]]) -> list[str] | None:
        """Docker's ``rmi NAME``, with or without -f: drop that name (and the
        repository's digests when it was the repository's last tag). None when
        no name would be left: then the image itself goes."""
        gone = [str(ref)]
        if ref.digest is None and not any(
                "@" not in r and r != str(ref) and refs.parse(r).name == ref.name
                for r, _ in names):
            gone += [r for r, _ in names if "@" in r and refs.parse(r).name == ref.name]
        if all(r in gone for r, _ in names):
            return None
        for ref_text in gone:
            self.records.untag(refs.parse(ref_text))
        return [f"Untagged: {refs.parse(r).familiar()}" for r in gone]

    def prune(self, *, all_images: bool = False,
              match: Callable[[ImageRecord], bool] | None = None) -> tuple[list[str], int]:
        """Remove dangling images (all unused ones with all_images; only those
        ``match`` accepts when given), then collect blobs and layers nothing
        refers to. Returns (lines, bytes)."""
        lines = []
        for record in self.records.all():
            if self.in_use(record.id) or (match is not None and not match(record)):
                continue
            names = self.records.names_of(record.id)
            tagged = any("@" not in r for r, _ in names)
            if tagged and not all_images:
                continue
            for ref_text, _ in names:
                lines.append(f"untagged: {refs.parse(ref_text).familiar()}")
            self.records.remove(record.id)
            lines.append(f"deleted: {record.id}")
        return lines, self.collect_garbage()

    def collect_garbage(self) -> int:
        """Delete blobs and layer snapshots that no image refers to."""
        with self._gc_lock(exclusive=True):
            keep_blobs: set[str] = set()
            keep_layers: set[str] = set()
            for record in self.records.all():
                keep_blobs |= {record.id, record.manifest}
                for _, manifest in self.records.names_of(record.id):
                    if manifest:
                        keep_blobs.add(manifest)
                try:
                    manifest_ = self.manifest_of(record)
                    config = self.config_of(record)
                except NotFound:
                    continue
                keep_blobs |= {layer.digest for layer in manifest_.layers}
                keep_layers |= set(chain_ids(config.rootfs.diff_ids))
                keep_blobs |= self._index_children(keep_blobs)
            freed = 0
            for digest in list(self.store.digests()):
                if digest not in keep_blobs:
                    freed += self.store.size(digest)
                    self.store.delete(digest)
            for info in sorted(self.snapshots.list(), key=lambda i: -_depth(i, self.snapshots)):
                if info.kind == "layer" and info.id not in keep_layers:
                    try:
                        self.snapshots.remove(info.id)
                        freed += info.size
                    except Conflict:
                        continue  # a container's snapshot still stands on it
            for stale in self.store.stale_ingests():
                import shutil

                shutil.rmtree(stale, ignore_errors=True)
            return freed

    def _index_children(self, blobs: set[str]) -> set[str]:
        extra = set()
        for digest in blobs:
            try:
                raw = self.store.read(digest)
            except (NotFound, InvalidArgument):
                continue
            if len(raw) > 4 << 20:
                continue
            try:
                if spec.media_type_of(raw) in spec.INDEX_TYPES:
                    extra |= {m.digest for m in spec.decode_index(raw).manifests}
            except InvalidArgument:
                continue
        return extra

    # -- archives, import, bootstrap ---------------------------------------------------

    def save(self, names: Sequence[str], out: BinaryIO, *, format: str = "docker") -> None:
        from isobox.images import archive

        archive.save(self.store, self.records, names, out, format=format)  # type: ignore[arg-type]

    def load(self, src: BinaryIO) -> list[str]:
        from isobox.images import archive_load

        with self._gc_lock(exclusive=False):
            loaded = archive_load.load(self.store, self.records, src)
            lines = []
            for image in loaded:
                self.ensure_unpacked(self.records.get(image.id))
                lines += [f"Loaded image: {t}" for t in image.tags] or \
                    [f"Loaded image ID: {image.id}"]
        return lines

    def import_(self, src: BinaryIO, *, ref: str | None, changes: Sequence[str] = (),
                message: str | None = None, source: str = "-") -> str:
        from isobox.images import importer

        with self._gc_lock(exclusive=False):
            image_id = importer.import_rootfs(self.store, self.records, src, ref=ref,
                                              changes=changes, message=message, source=source)
            self.ensure_unpacked(self.records.get(image_id))
        return image_id

    def bootstrap(self, kind: str, *, ref: str | None = None, suite: str = "bookworm") -> str:
        from isobox.images import bootstrap

        with self._gc_lock(exclusive=False):
            if kind == "busybox":
                image_id = bootstrap.bootstrap_busybox(self.store, self.records,
                                                       ref=ref or "busybox:latest")
            elif kind == "debian":
                image_id = bootstrap.bootstrap_debian(self.store, self.records, suite=suite,
                                                      ref=ref)
            else:
                raise InvalidArgument(f"unknown base image {kind!r}: want busybox or debian")
            self.ensure_unpacked(self.records.get(image_id))
        return image_id


# -- helpers ----------------------------------------------------------------------------

def _depth(info: Any, snapshots: OverlaySnapshotter) -> int:
    depth, parent = 0, info.parent
    seen = {s.id: s for s in snapshots.list()}
    while parent is not None and parent in seen and depth < 10000:
        depth += 1
        parent = seen[parent].parent
    return depth


def _split_tag(familiar: str) -> tuple[str, str]:
    ref = refs.parse(familiar)
    return ref.familiar_name, ref.tag or "<none>"


def _same_name(name: str, ref_text: str) -> bool:
    try:
        return str(refs.parse(name)) == ref_text
    except InvalidArgument:
        return False


def _epoch(rfc3339: str | None) -> float | None:
    if not rfc3339:
        return None
    import datetime

    text = rfc3339.replace("Z", "+00:00")
    if "." in text:  # Python wants at most 6 fraction digits
        head, _, tail = text.partition(".")
        frac = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(frac):]
        text = f"{head}.{frac[:6]}{zone}"
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _health(h: spec.HealthConfig | None) -> dict[str, Any] | None:
    if h is None:
        return None
    return {"Test": h.test, "Interval": h.interval, "Timeout": h.timeout,
            "StartPeriod": h.start_period, "Retries": h.retries}


def _chain_key(config: spec.ImageConfig, n: int) -> tuple[str, ...] | None:
    """What an image is made of up to its ``n``-th history entry: those
    entries and the layers they made. An image whose whole key is a strict
    prefix of another's is that one's parent (as Docker's builder records
    parents: each step's image is the next one's). None without history."""
    history = config.history or []
    if not history or n > len(history):
        return None
    layers = sum(1 for h in history[:n] if not h.empty_layer)
    diff_ids = config.rootfs.diff_ids
    if layers > len(diff_ids):
        return None
    return (*diff_ids[:layers], "|",
            *(f"{h.created}\0{h.created_by}\0{h.comment}\0{bool(h.empty_layer)}"
              for h in history[:n]))


def _parents(configs: Iterable[spec.ImageConfig]) -> set[tuple[str, ...] | None]:
    """The keys of every image that has a child (see ``_chain_key``)."""
    found: set[tuple[str, ...] | None] = set()
    for config in configs:
        for n in range(1, len(config.history or [])):
            key = _chain_key(config, n)
            if key is not None:
                found.add(key)
    found.discard(None)
    return found


def _parse_filters(filters: Sequence[str]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key not in ("dangling", "label", "reference", "before", "since"):
            raise InvalidArgument(f"invalid filter {item!r}")
        parsed.setdefault(key, []).append(value)
    return parsed


def _keep(record: ImageRecord, tags: list[str], labels: dict[str, str],
          filters: dict[str, list[str]]) -> bool:
    for value in filters.get("dangling", []):
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'")
        if (value.lower() in ("true", "1")) == bool(tags):
            return False
    for value in filters.get("label", []):
        key, sep, want = value.partition("=")
        if key not in labels or (sep and labels[key] != want):
            return False
    return True


def _matches_reference(tag: str, patterns: Sequence[str]) -> bool:
    import fnmatch

    name = refs.parse(tag).familiar_name
    return any(fnmatch.fnmatch(tag, pat) or fnmatch.fnmatch(name, pat) for pat in patterns)


def parse_reference(name: str) -> refs.Reference:
    """A reference normalised as Docker does (``busybox`` ->
    ``docker.io/library/busybox:latest``), for the CLI's messages."""
    return refs.parse(name)


def short_id(image_id: str) -> str:
    return digests.short_id(image_id)


def terminal_progress(stream: Any) -> Any:
    """Progress bars on a terminal, plain lines otherwise (for CLI pulls and pushes)."""
    from isobox.registry import terminal_progress as make

    return make(stream)
