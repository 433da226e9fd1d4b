"""Hostile and broken archives: each is refused with InvalidArgument and
leaves no image, no blob, no ingest and no staging directory behind."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from imagetest_util import (
    TarBuilder,
    assert_untouched,
    config,
    layer,
    legacy_docker_archive,
    new_store,
    oci_layout,
    sha,
)

from isobox.errors import InvalidArgument
from isobox.images import archive
from isobox.images.archive_stage import Limits

PLAIN = layer({"a": b"a"})
CFG = config([sha(PLAIN)])


def _docker(*, layer_path: str = "l/layer.tar", config_path: str = "c.json",
            files: dict[str, bytes] | None = None, manifest: object = None) -> bytes:
    builder = TarBuilder()
    for name, data in (files if files is not None else
                       {"l/layer.tar": PLAIN, "c.json": CFG}).items():
        builder.file(name, data)
    builder.json("manifest.json", manifest if manifest is not None else [
        {"Config": config_path, "RepoTags": ["evil:1"], "Layers": [layer_path]}])
    return builder.bytes()


def _oci_with(**kw: object) -> bytes:
    return oci_layout([PLAIN], [{"io.containerd.image.name": "evil:1"}], **kw)[0]  # type: ignore[arg-type]


def _symlinked_manifest(target: str) -> bytes:
    return (TarBuilder().file("l/layer.tar", PLAIN).file("c.json", CFG)
            .link("manifest.json", target).bytes())


def _wrong_blob() -> bytes:
    data, _, _ = oci_layout([PLAIN], [None])
    # Same names, one layer's bytes swapped for others of the same size.
    builder = TarBuilder()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            if m.isdir():
                builder.dir(m.name)
                continue
            blob = tf.extractfile(m).read()  # type: ignore[union-attr]
            if m.name.startswith("blobs/") and blob[:2] == b"\x1f\x8b":
                blob = blob[:-8] + b"\0" * 8
            builder.file(m.name, blob)
    return builder.bytes()


CASES: dict[str, Callable[[], bytes]] = {
    "dotdot path": lambda: TarBuilder().file("../escape", b"x").bytes(),
    "dotdot inside path": lambda: TarBuilder().file("blobs/../../x", b"x").bytes(),
    "absolute path": lambda: TarBuilder().file("/etc/evil", b"x").bytes(),
    "symlink out by dotdot": lambda: _symlinked_manifest("../../../etc/passwd"),
    "absolute symlink": lambda: _symlinked_manifest("/etc/passwd"),
    "symlink loop": lambda: (TarBuilder().link("a", "b").link("b", "a")
                             .json("manifest.json", [{"Config": "a", "Layers": []}]).bytes()),
    "entry beneath a symlink": lambda: (TarBuilder().link("d", "x").file("d/f", b"1").bytes()),
    "hard link to nothing": lambda: TarBuilder().link("h", "missing", hard=True).bytes(),
    "device node": lambda: TarBuilder().device("dev/null").bytes(),
    "duplicate entry": lambda: TarBuilder().file("c.json", CFG).file("c.json", b"{}").bytes(),
    "not a tar": lambda: b"this is not an archive at all" * 40,
    "truncated tar": lambda: _docker()[:1536],
    "neither manifest.json nor index.json": lambda: TarBuilder().file("x", b"1").bytes(),
    "manifest.json not JSON": lambda: TarBuilder().file("manifest.json", b"{nope").bytes(),
    "manifest.json empty list": lambda: _docker(manifest=[]),
    "missing layer": lambda: _docker(files={"c.json": CFG}),
    "missing config": lambda: _docker(files={"l/layer.tar": PLAIN}),
    "diff_id mismatch": lambda: _docker(files={"l/layer.tar": layer({"b": b"b"}),
                                               "c.json": CFG}),
    "layer count mismatch": lambda: _docker(files={"l/layer.tar": PLAIN,
                                                   "c.json": config([sha(PLAIN)] * 2)}),
    "blob name not its digest": lambda: _docker(
        layer_path=f"blobs/sha256/{'ab' * 32}",
        files={f"blobs/sha256/{'ab' * 32}": PLAIN, "c.json": CFG}),
    "bzip2 layer": lambda: _docker(files={"l/layer.tar": b"BZh91AY&SY" + b"\0" * 64,
                                          "c.json": CFG}),
    "bad tag": lambda: _docker(manifest=[{"Config": "c.json", "RepoTags": ["UPPER:case"],
                                          "Layers": ["l/layer.tar"]}]),
    "oci missing blob": lambda: _drop_layer_blob(),
    "oci digest mismatch": _wrong_blob,
    "oci bad layout version": lambda: _replace_member("oci-layout",
                                                      b'{"imageLayoutVersion":"9"}'),
    "oci layer media type": lambda: _oci_with(media_type="text/plain"),
    "oci empty index": lambda: (TarBuilder().json("oci-layout", {"imageLayoutVersion": "1.0.0"})
                                .json("index.json", {"schemaVersion": 2, "manifests": []})
                                .bytes()),
}


def _members_of(data: bytes) -> list[tuple[str, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, tf.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                for m in tf]


def _rebuild(members: list[tuple[str, bytes | None]]) -> bytes:
    builder = TarBuilder()
    for name, blob in members:
        if blob is None:
            builder.dir(name)
        else:
            builder.file(name, blob)
    return builder.bytes()


def _drop_layer_blob() -> bytes:
    data = oci_layout([PLAIN], [None])[0]
    return _rebuild([(n, b) for n, b in _members_of(data)
                     if not (b is not None and b[:2] == b"\x1f\x8b")])


def _replace_member(name: str, blob: bytes) -> bytes:
    data = oci_layout([PLAIN], [None])[0]
    return _rebuild([(n, blob if n == name else b) for n, b in _members_of(data)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused_and_nothing_stored(case: str, tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(InvalidArgument):
        archive.load(store, records, io.BytesIO(CASES[case]()), tmpdir=str(staging))
    assert_untouched(store, records)
    assert list(staging.iterdir()) == []


def test_huge_manifest_json_is_refused(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    huge = b"[" + b" " * (9 << 20) + b"]"
    with pytest.raises(InvalidArgument, match="too large"):
        archive.load(store, records, io.BytesIO(TarBuilder().file("manifest.json", huge).bytes()))
    assert_untouched(store, records)


def test_entry_count_limit(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    builder = TarBuilder()
    for i in range(20):
        builder.file(f"f{i}", b"")
    with pytest.raises(InvalidArgument, match="more than 10 entries"):
        archive.load(store, records, io.BytesIO(builder.bytes()), limits=Limits(max_entries=10))
    assert_untouched(store, records)


def test_one_bad_image_stores_none_of_the_others(tmp_path: Path) -> None:
    good, _ = legacy_docker_archive([PLAIN], ["good:1"])
    builder = TarBuilder()
    with tarfile.open(fileobj=io.BytesIO(good)) as tf:
        entries = [(m, tf.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                   for m in tf]
    for m, blob in entries:
        if m.name == "manifest.json":
            doc = json.loads(blob or b"")
            doc.append({"Config": doc[0]["Config"], "RepoTags": ["bad:1"],
                        "Layers": ["does/not/exist.tar"]})
            builder.json("manifest.json", doc)
        elif m.issym():
            builder.link(m.name, m.linkname)
        elif blob is None:
            builder.dir(m.name)
        else:
            builder.file(m.name, blob)
    store, records = new_store(tmp_path)
    with pytest.raises(InvalidArgument, match="no file"):
        archive.load(store, records, io.BytesIO(builder.bytes()))
    assert_untouched(store, records)
