"""The overlay snapshotter: unpack layers, mount what it returns, check the
merged view; long chains; concurrent unpacks of one chain."""

from __future__ import annotations

import fcntl
import hashlib
import io
import multiprocessing
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from isobox.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from isobox.images.chain import chain_ids
from isobox.images.snapshots import Mount, OverlaySnapshotter, mount_all, unmount

Entry = tuple[tarfile.TarInfo, bytes]


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: Any) -> Entry:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mtime = kind, 1_600_000_000
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in kw.items():
        setattr(ti, key, value)
    return ti, data


def f(name: str, data: bytes = b"", **kw: Any) -> Entry:
    return _entry(name, tarfile.REGTYPE, data, **kw)


def d(name: str, **kw: Any) -> Entry:
    return _entry(name, tarfile.DIRTYPE, **kw)


def tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unpack_all(snap: OverlaySnapshotter, layers: list[bytes]) -> list[str]:
    chains = chain_ids([sha(b) for b in layers])
    parent = None
    for blob, chain in zip(layers, chains, strict=True):
        snap.unpack_layer(chain, parent, io.BytesIO(blob), sha(blob))
        parent = chain
    return chains


@contextmanager
def mounted(mounts: list[Mount], target: Path) -> Iterator[Path]:
    target.mkdir(exist_ok=True)
    mount_all(mounts, str(target))
    try:
        yield target
    finally:
        unmount(str(target))


IMAGE = [
    tar(d("etc"), f("etc/passwd", b"root:x:0:0"), f("etc/shadow", b"secret"),
        d("var/cache"), f("var/cache/old1", b"1"), f("var/cache/old2", b"2"),
        d("var/cache/olddir"), f("var/cache/olddir/x", b"x"), f("bin/sh", b"sh", mode=0o755)),
    tar(d("etc"), f("etc/.wh.shadow"), d("var/cache"), f("var/cache/.wh..wh..opq"),
        f("var/cache/new", b"new"), f("etc/hostname", b"box")),
    tar(f("etc/passwd", b"root:x:0:0\nuser:x:1000:1000"), f("usr/bin/app", b"app")),
]


def test_three_layers_with_whiteout_and_opaque_dir(tmp_path: Path) -> None:
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    chains = unpack_all(snap, IMAGE)
    assert all(snap.has_layer(c) for c in chains)
    assert [s.kind for s in snap.list()] == ["layer"] * 3
    mounts = snap.prepare("ctr1", chains[-1])
    assert len(mounts) == 1 and mounts[0].type == "overlay" and mounts[0].target is None
    assert snap.mounts("ctr1") == mounts
    with pytest.raises(AlreadyExists):
        snap.prepare("ctr1", chains[-1])
    with mounted(mounts, tmp_path / "rootfs") as root:
        assert not (root / "etc/shadow").exists()
        assert (root / "etc/passwd").read_bytes() == b"root:x:0:0\nuser:x:1000:1000"
        assert (root / "etc/hostname").read_bytes() == b"box"
        assert sorted(os.listdir(root / "var/cache")) == ["new"]
        assert stat.S_IMODE(os.stat(root / "bin/sh").st_mode) == 0o755
        (root / "written").write_bytes(b"by the container")
        os.unlink(root / "etc/hostname")
    upper = Path(snap._dir("ctr1")) / "fs"
    assert (upper / "written").read_bytes() == b"by the container"
    assert stat.S_ISCHR(os.lstat(upper / "etc/hostname").st_mode)  # the kernel's whiteout
    assert snap.usage("ctr1") > 0
    # a layer under a snapshot cannot go; the snapshot can, then the layers top down
    with pytest.raises(Conflict):
        snap.remove(chains[-1])
    with pytest.raises(Conflict):
        snap.remove(chains[0])
    snap.remove("ctr1")
    with pytest.raises(NotFound):
        snap.mounts("ctr1")
    for chain in reversed(chains):
        snap.remove(chain)
    assert snap.list() == []
    assert os.listdir(tmp_path / "snap" / "l") == []
    assert os.listdir(tmp_path / "snap" / "tmp") == []


def test_views_are_read_only_and_bind_mounts_serve_short_chains(tmp_path: Path) -> None:
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    chains = unpack_all(snap, IMAGE)
    view = snap.view("v", chains[-1])
    assert "ro" in view[0].options
    with mounted(view, tmp_path / "view") as root:
        assert (root / "usr/bin/app").read_bytes() == b"app"
        with pytest.raises(OSError, match="Read-only"):
            (root / "x").write_bytes(b"x")
    single = snap.view("one", chains[0])
    assert single[0].type == "bind"
    with mounted(single, tmp_path / "single") as root:
        assert (root / "etc/shadow").read_bytes() == b"secret"
        with pytest.raises(OSError, match="Read-only"):
            (root / "x").write_bytes(b"x")
    scratch = snap.prepare("scratch", None)
    assert scratch[0].type == "bind"
    with mounted(scratch, tmp_path / "scratch") as root:
        (root / "x").write_bytes(b"x")
    kinds = {s.id: (s.kind, s.parent) for s in snap.list()}
    assert kinds["v"] == ("view", chains[-1]) and kinds["scratch"] == ("active", None)
    assert kinds[chains[1]] == ("layer", chains[0])
    for key in ("v", "one", "scratch"):
        snap.remove(key)


def test_unpack_checks_the_diff_id_and_the_chain(tmp_path: Path) -> None:
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    blob = IMAGE[0]
    wrong = sha(b"something else")
    with pytest.raises(InvalidArgument, match="does not match its diff id"):
        snap.unpack_layer(wrong, None, io.BytesIO(blob), wrong)
    with pytest.raises(InvalidArgument, match="chain id"):
        snap.unpack_layer(wrong, None, io.BytesIO(blob), sha(blob))
    with pytest.raises(NotFound, match="parent"):
        chain = chain_ids([wrong, sha(blob)])[1]
        snap.unpack_layer(chain, wrong, io.BytesIO(blob), sha(blob))
    assert snap.list() == [] and os.listdir(tmp_path / "snap" / "tmp") == []
    # unpacked once; the second call does not read the blob
    assert snap.unpack_layer(sha(blob), None, io.BytesIO(blob), sha(blob)) == 1 + 1 + 1 + 6 + 10 + 2
    assert snap.unpack_layer(sha(blob), None, io.BytesIO(b""), sha(blob)) == 21


def test_stage_layers_before_their_parents_commit_in_order(tmp_path: Path) -> None:
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    chains = chain_ids([sha(b) for b in IMAGE])
    parents = [None, *chains[:-1]]
    staged = [snap.stage_layer(c, p, io.BytesIO(b), sha(b))
              for b, c, p in reversed(list(zip(IMAGE, chains, parents, strict=True)))]
    staged.reverse()
    assert snap.list() == []
    with pytest.raises(NotFound, match="parent"):
        staged[1].commit()  # its parent is still only staged
    assert snap.list() == [] and len(os.listdir(tmp_path / "snap" / "tmp")) == len(IMAGE) - 1
    staged[0].commit()
    for layer in staged[2:]:
        layer.discard()
    assert [s.id for s in snap.list()] == [chains[0]]
    assert os.listdir(tmp_path / "snap" / "tmp") == []
    with snap.stage_layer(chains[1], chains[0], io.BytesIO(IMAGE[1]), sha(IMAGE[1])) as layer:
        assert layer.commit() > 0
    assert snap.has_layer(chains[1]) and os.listdir(tmp_path / "snap" / "tmp") == []


def test_two_hundred_layers_mount(tmp_path: Path) -> None:
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    layers = [tar(f(f"layer/{i:03}", str(i).encode()), f("top", str(i).encode()))
              for i in range(200)]
    layers[2] = tar(f("layer/002", b"2"), d("dirgone"), f("dirgone/x"), d("opq"), f("opq/a"),
                    f("opq/b"), f("top", b"2"))
    layers[10] = tar(f("layer/.wh.003"), f("doomed-low", b"x"), f("top", b"10"))
    layers[20] = tar(f("layer/020", b"20"), f(".wh.dirgone"), d("opq"),
                     f("opq/.wh..wh..opq"), f("opq/c"), f("top", b"20"))
    layers[150] = tar(f("layer/.wh.100"), f(".wh.doomed-low"), f("top", b"150"))
    layers[199] = tar(f("layer/.wh.160"), f("top", b"199"), d("layer/199"))
    chains = unpack_all(snap, layers)
    mounts = snap.prepare("big", chains[-1])
    data = ",".join(o for o in mounts[0].options if "=" in o)
    assert len(data) < 4096
    lowers = next(o for o in mounts[0].options if o.startswith("lowerdir=")).split(":")
    assert 2 <= len(lowers) < 200  # the oldest layers were merged into one directory
    with mounted(mounts, tmp_path / "rootfs") as root:
        present = sorted(os.listdir(root / "layer"))
        gone = {"003", "100", "160", "010", "150"}  # whited out, or never made
        assert present == [f"{i:03}" for i in range(200) if f"{i:03}" not in gone]
        assert (root / "layer/199").is_dir()
        assert (root / "top").read_bytes() == b"199"
        assert not (root / "doomed-low").exists()
        assert not (root / "dirgone").exists()
        assert sorted(os.listdir(root / "opq")) == ["c"]
    # the merged directory is cached, and goes with the layer it is named after
    assert snap.mounts("big") == mounts
    flats = os.listdir(tmp_path / "snap" / "flat")
    assert len(flats) == 1
    view = snap.view("bigview", chains[-1])
    with mounted(view, tmp_path / "view") as root:
        assert (root / "layer/000").read_bytes() == b"0"
    snap.remove("big")
    snap.remove("bigview")
    for chain in reversed(chains):
        snap.remove(chain)
    assert os.listdir(tmp_path / "snap" / "flat") == []
    assert os.listdir(tmp_path / "snap" / "l") == []


def _unpack_in_child(root: str, blob: bytes, start: Any, results: Any) -> None:
    snap = OverlaySnapshotter(root)
    start.wait()
    results.put(snap.unpack_layer(sha(blob), None, io.BytesIO(blob), sha(blob)))


def test_two_processes_unpacking_one_chain(tmp_path: Path) -> None:
    blob = tar(*[f(f"f{i}", os.urandom(2000)) for i in range(300)])
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    root = str(tmp_path / "snap")
    OverlaySnapshotter(root)
    procs = [ctx.Process(target=_unpack_in_child, args=(root, blob, start, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [results.get(timeout=5), results.get(timeout=5)] == [600_000, 600_000]
    snap = OverlaySnapshotter(root)
    assert [s.id for s in snap.list()] == [sha(blob)]
    assert os.listdir(tmp_path / "snap" / "tmp") == []
    assert len(os.listdir(Path(snap._dir(sha(blob))) / "fs")) == 300


def test_rename_race_without_the_lock_keeps_one_copy(tmp_path: Path) -> None:
    """Even a process that skipped the lock cannot replace a committed layer."""
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    blob = IMAGE[0]
    snap.unpack_layer(sha(blob), None, io.BytesIO(blob), sha(blob))
    inode = os.stat(snap._dir(sha(blob))).st_ino
    os.unlink(tmp_path / "snap" / "locks" / f"{sha(blob)[7:]}.lock")
    assert snap.unpack_layer(sha(blob), None, io.BytesIO(blob), sha(blob)) == 21
    assert os.stat(snap._dir(sha(blob))).st_ino == inode


def test_prune_removes_what_a_crash_left(tmp_path: Path) -> None:
    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    unpack_all(snap, IMAGE[:1])
    tmp = tmp_path / "snap" / "tmp"
    live, dead = "a" * 64, "b" * 64
    for name in (f"unpack-{live}-x", f"unpack-{dead}-y", "new-z", "remove-w", f"flat-{dead}-v"):
        (tmp / name / "fs").mkdir(parents=True)
    os.symlink("../snapshots/nothing/fs", tmp_path / "snap" / "l" / "dangling")
    fd = os.open(tmp_path / "snap" / "locks" / f"{live}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an unpack in progress elsewhere
        assert snap.prune() == 5
    finally:
        os.close(fd)
    assert os.listdir(tmp) == [f"unpack-{live}-x"]
    assert len(os.listdir(tmp_path / "snap" / "l")) == 1  # the live layer's link stays
    assert snap.list()[0].kind == "layer"


def _fs_flags(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, 0x80086601, buf)  # FS_IOC_GETFLAGS
        return int.from_bytes(buf, "little")
    except OSError:
        return None
    finally:
        os.close(fd)


def test_staging_dir_is_marked_as_a_top_dir_where_the_filesystem_can(tmp_path: Path) -> None:
    from isobox.images.snapshots import mark_top_dir

    snap = OverlaySnapshotter(str(tmp_path / "snap"))
    flags = _fs_flags(tmp_path / "snap" / "tmp")
    if mark_top_dir(str(tmp_path / "snap" / "tmp")):  # ext2/3/4
        assert flags is not None and flags & 0x00020000  # FS_TOPDIR_FL, chattr +T
    # Best effort: a path that cannot carry it is no error.
    assert mark_top_dir(str(tmp_path / "missing")) is False
    (tmp_path / "file").write_bytes(b"")
    assert mark_top_dir(str(tmp_path / "file")) is False
    unpack_all(snap, IMAGE[:1])  # layers still stage and commit through it
