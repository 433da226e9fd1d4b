"""Hostile layers: each is refused with one InvalidArgument that names the
problem, nothing outside the target changes (a canary directory is compared
before and after), and a refused unpack through the snapshotter leaves no
snapshot and no staging directory."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from isobox.errors import InvalidArgument
from isobox.images.layers import Limits, apply_layer
from isobox.images.snapshots import OverlaySnapshotter

Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, link: str = "",
          dev: tuple[int, int] = (0, 0), pax: dict[str, str] | None = None,
          mode: int = 0o644) -> Entry:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode, ti.mtime = kind, link, mode, 1_600_000_000
    ti.devmajor, ti.devminor = dev
    ti.size = len(data) if kind in tarfile.REGULAR_TYPES else 0
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def f(name: str, data: bytes = b"pwned", **kw: Any) -> Entry:
    return entry(name, tarfile.REGTYPE, data, **kw)


def d(name: str) -> Entry:
    return entry(name, tarfile.DIRTYPE, mode=0o755)


def sym(name: str, target: str) -> Entry:
    return entry(name, tarfile.SYMTYPE, link=target)


def hard(name: str, target: str) -> Entry:
    return entry(name, tarfile.LNKTYPE, link=target)


def tar(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def raw_header(name: str, typeflag: bytes, size: int = 0) -> bytes:
    """A ustar header with any type flag (tarfile writes only the ones it knows)."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    block = bytearray(ti.tobuf(tarfile.USTAR_FORMAT))
    block[156:157] = typeflag
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    return bytes(block) + bytes(-size % 512 + size)


# -- the canary -------------------------------------------------------------------


def _listing(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                content: Any = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            else:
                content = None
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                            st.st_mtime_ns, st.st_nlink, content,
                                            sorted(os.listxattr(p, follow_symlinks=False)))
    return out


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    root = tmp_path / "canary"
    (root / "sub").mkdir(parents=True)
    (root / "file").write_bytes(b"precious")
    (root / "sub" / "deep").write_bytes(b"also precious")
    os.symlink("file", root / "link")
    return root


class Case:
    def __init__(self, name: str, build: Callable[[str], bytes], match: str,
                 mode: str = "overlay", limits: Limits | None = None,
                 lower: Callable[[str], bytes] | None = None) -> None:
        self.name, self.build, self.match = name, build, match
        self.mode, self.limits, self.lower = mode, limits, lower

    def __repr__(self) -> str:
        return self.name


def up(canary: str) -> str:
    """A relative path from deep inside the target to the canary."""
    return "../" * 30 + canary.lstrip("/")


SYMLINK = r"symlink"
CASES = [
    # '..' and absolute names
    Case("dotdot", lambda c: tar(f("../escape")), r"'\.\./escape'.*'\.\.'"),
    Case("dotdot-deep", lambda c: tar(f("a/b/../../../escape")), r"'\.\.' in path"),
    Case("dotdot-dot", lambda c: tar(f("./../escape")), r"'\.\.' in path"),
    Case("dotdot-etc-passwd", lambda c: tar(f("../../etc/passwd")), r"etc/passwd.*'\.\.'"),
    Case("dotdot-to-canary", lambda c: tar(f(up(c) + "/pwned")), r"'\.\.' in path"),
    Case("dotdot-pax-long", lambda c: tar(f("../" + "x" * 150)), r"'\.\.' in path"),
    Case("dotdot-gnu-long", lambda c: tar(f("../../" + "y" * 150), fmt=tarfile.GNU_FORMAT),
         r"'\.\.' in path"),
    Case("dotdot-pax-override", lambda c: tar(f("innocent", pax={"path": "../pwned"})),
         r"'\.\./pwned'.*'\.\.'"),
    Case("dotdot-dir", lambda c: tar(d("a/.."), f("b")), r"'\.\.' in path"),
    Case("absolute", lambda c: tar(f(c + "/pwned")), "absolute path"),
    Case("absolute-double-slash", lambda c: tar(f("/" + c + "/pwned")), "absolute path"),
    Case("absolute-dir", lambda c: tar(d(c + "/newdir")), "absolute path"),
    # symlinked parents: one hop, several, absolute, relative, planted earlier
    Case("symlink-root-then-file", lambda c: tar(sym("evil", "/"), f("evil" + c + "/pwned")),
         SYMLINK),
    Case("symlink-abs-one-hop", lambda c: tar(sym("evil", c), f("evil/pwned")), SYMLINK),
    Case("symlink-relative", lambda c: tar(sym("evil", up(c)), f("evil/pwned")), SYMLINK),
    Case("symlink-chain", lambda c: tar(sym("a", "b"), sym("b", "../../../../../../../.."),
                                        f("a" + c + "/pwned")), SYMLINK),
    Case("symlink-three-hops", lambda c: tar(sym("x", "y"), sym("y", "z"), sym("z", c),
                                             f("x/pwned")), SYMLINK),
    Case("symlink-nested", lambda c: tar(d("a"), sym("a/b", c), f("a/b/c/pwned")), SYMLINK),
    Case("symlink-then-dir", lambda c: tar(sym("evil", c), d("evil/newdir")), SYMLINK),
    Case("symlink-then-symlink", lambda c: tar(sym("evil", c), sym("evil/l", "/etc/passwd")),
         SYMLINK),
    Case("symlink-then-hardlink", lambda c: tar(f("inner"), sym("evil", c),
                                                hard("evil/pwned", "inner")), SYMLINK),
    Case("symlink-then-device", lambda c: tar(sym("evil", c),
                                              entry("evil/null", tarfile.CHRTYPE, dev=(1, 3))),
         SYMLINK),
    Case("symlink-then-fifo", lambda c: tar(sym("evil", c), entry("evil/p", tarfile.FIFOTYPE)),
         SYMLINK),
    Case("symlink-then-whiteout-overlay", lambda c: tar(sym("evil", c), f("evil/.wh.file")),
         SYMLINK),
    Case("symlink-then-whiteout-flat", lambda c: tar(sym("evil", c), f("evil/.wh.file")),
         SYMLINK, mode="flat"),
    Case("symlink-then-opaque-overlay", lambda c: tar(sym("evil", c), f("evil/.wh..wh..opq")),
         SYMLINK),
    Case("symlink-then-opaque-flat", lambda c: tar(sym("evil", c), f("evil/.wh..wh..opq")),
         SYMLINK, mode="flat"),
    Case("symlink-from-lower-layer-flat", lambda c: tar(f("lib/pwned")), SYMLINK, mode="flat",
         lower=lambda c: tar(sym("lib", c))),
    Case("symlink-from-lower-whiteout-flat", lambda c: tar(f("lib/.wh.file")), SYMLINK,
         mode="flat", lower=lambda c: tar(sym("lib", c))),
    # hard links out of the tree
    Case("hardlink-etc-shadow", lambda c: tar(hard("h", "/etc/shadow")), "absolute path"),
    Case("hardlink-dotdot-shadow", lambda c: tar(hard("h", "../../etc/shadow")), r"'\.\.'"),
    Case("hardlink-canary-abs", lambda c: tar(hard("h", c + "/file")), "absolute path"),
    Case("hardlink-canary-rel", lambda c: tar(hard("h", up(c) + "/file")), r"'\.\.'"),
    Case("hardlink-through-symlink", lambda c: tar(sym("etc", "/etc"), hard("h", "etc/shadow")),
         SYMLINK),
    Case("hardlink-through-symlink-canary", lambda c: tar(sym("evil", c),
                                                          hard("h", "evil/file")), SYMLINK),
    Case("hardlink-missing", lambda c: tar(hard("h", "nowhere")), "not in the layer"),
    # names
    Case("name-too-long", lambda c: tar(f("a/" * 2100 + "x")), "longer than 4096 bytes"),
    Case("too-deep", lambda c: tar(f("a/" * 300 + "x")), "deeper than 256"),
    Case("component-too-long", lambda c: tar(f("d/" + "x" * 300)), "longer than 255 bytes"),
    Case("symlink-target-too-long", lambda c: tar(sym("s", "t/" * 2100)), "too long"),
    Case("nul-in-name", lambda c: tar(f("innocent", pax={"path": "a\0b"})), "NUL byte"),
    Case("nul-in-symlink", lambda c: tar(entry("s", tarfile.SYMTYPE,
                                               pax={"linkpath": "/x\0y"})), "NUL byte"),
    Case("nul-in-hardlink", lambda c: tar(f("t"), entry("h", tarfile.LNKTYPE,
                                                        pax={"linkpath": "t\0x"})), "NUL byte"),
    # unsupported entry types
    Case("type-volume-label", lambda c: raw_header("label", b"V") + bytes(1024),
         "unsupported entry type 'V'"),
    Case("type-multivolume", lambda c: raw_header("mv", b"M", 10) + bytes(1024),
         "unsupported entry type 'M'"),
    Case("type-gnu-sparse", lambda c: raw_header("sparse", b"S") + bytes(1024),
         "unsupported entry type 'S'"),
    Case("type-pax-sparse", lambda c: tar(f("s", b"x", pax={"GNU.sparse.major": "1",
                                                             "GNU.sparse.minor": "0"})),
         "unsupported entry type 'S'"),
    Case("type-unknown", lambda c: raw_header("z", b"Z", 3) + bytes(1024),
         "unsupported entry type 'Z'"),
    # sizes
    Case("too-many-bytes", lambda c: tar(f("big", bytes(2 << 20))), "larger than 1048576",
         limits=Limits(max_bytes=1 << 20)),
    Case("gzip-bomb", lambda c: gzip.compress(tar(f("zeros", bytes(48 << 20))), 9),
         "decompression bomb", limits=Limits(ratio_after=8 << 20)),
    Case("zstd-bomb", lambda c: zstandard.ZstdCompressor(level=19).compress(
        tar(f("zeros", bytes(48 << 20)))), "decompression bomb",
        limits=Limits(ratio_after=8 << 20)),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_hostile_layer_is_refused(tmp_path: Path, canary: Path, case: Case) -> None:
    before = _listing(canary)
    target = tmp_path / "target"
    target.mkdir()
    blob = case.build(str(canary))
    kw: dict[str, Any] = {"mode": case.mode}
    if case.limits is not None:
        kw["limits"] = case.limits
    if case.lower is not None:
        apply_layer(io.BytesIO(case.lower(str(canary))), str(target), mode="flat")
    with pytest.raises(InvalidArgument, match=case.match) as info:
        apply_layer(io.BytesIO(blob), str(target), **kw)
    assert "\n" not in str(info.value)
    assert _listing(canary) == before
    assert sorted(os.listdir(tmp_path)) == ["canary", "target"]


@pytest.mark.parametrize("case", [c for c in CASES if c.lower is None and c.mode == "overlay"],
                         ids=repr)
def test_refused_unpack_leaves_no_snapshot(tmp_path: Path, canary: Path, case: Case) -> None:
    before = _listing(canary)
    blob = case.build(str(canary))
    raw = blob
    if blob[:2] == b"\x1f\x8b":
        raw = b""  # never decompressed in full: the diff id does not matter here
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    snap = OverlaySnapshotter(str(tmp_path / "snap"), limits=case.limits or Limits())
    with pytest.raises(InvalidArgument, match=case.match):
        snap.unpack_layer(diff_id, None, io.BytesIO(blob), diff_id)
    assert snap.list() == []
    assert not snap.has_layer(diff_id)
    assert os.listdir(tmp_path / "snap" / "tmp") == []
    assert os.listdir(tmp_path / "snap" / "snapshots") == []
    assert _listing(canary) == before


def test_too_many_entries_stops_reading_early(tmp_path: Path) -> None:
    """Two million tiny entries, refused after the limit without reading them all."""
    header = raw_header("tiny", b"0")

    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            if self.served >= 2_000_000 * 512:
                return 0
            n = len(b) - len(b) % 512
            b[:n] = header * (n // 512)
            self.served += n
            return n

    src = Endless()
    with pytest.raises(InvalidArgument, match="more than 1000 entries"):
        apply_layer(io.BufferedReader(src), str(tmp_path), limits=Limits(max_entries=1000))
    assert src.served < 20 << 20
    assert os.listdir(tmp_path) == ["tiny"]


# -- not refused, and still harmless -------------------------------------------------


@pytest.mark.parametrize("mode", ["overlay", "flat"])
def test_file_over_a_symlink_replaces_the_link(tmp_path: Path, canary: Path, mode: str) -> None:
    before = _listing(canary)
    target = tmp_path / "target"
    target.mkdir()
    apply_layer(io.BytesIO(tar(sym("s", str(canary / "file")), f("s", b"new"),
                               sym("t", str(canary / "file")), hard("h", "t"), f("h", b"h"),
                               sym("dirlink", str(canary)), d("dirlink"))),
                str(target), mode=mode)  # type: ignore[arg-type]
    assert (target / "s").read_bytes() == b"new" and not (target / "s").is_symlink()
    assert (target / "h").read_bytes() == b"h"
    assert (target / "dirlink").is_dir() and not (target / "dirlink").is_symlink()
    assert _listing(canary) == before


def test_device_nodes_are_made_inside_the_tree(tmp_path: Path, canary: Path) -> None:
    """Images may carry device nodes (even of the host's disk): making them is
    allowed; the devices cgroup decides at run time."""
    disk = os.stat("/").st_dev
    target = tmp_path / "target"
    target.mkdir()
    result = apply_layer(io.BytesIO(tar(entry("dev/disk", tarfile.BLKTYPE, mode=0o660,
                                              dev=(os.major(disk), os.minor(disk))),
                                        entry("dev/mem", tarfile.CHRTYPE, dev=(1, 1)))),
                         str(target))
    st = os.lstat(target / "dev/disk")
    if result.skipped:  # no CAP_MKNOD here: skipped with a warning, never an error
        assert "device node" in result.warnings[0]
    else:
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == disk


def test_overlay_xattrs_from_the_image_are_dropped(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    result = apply_layer(io.BytesIO(tar(
        entry("d", tarfile.DIRTYPE, pax={"SCHILY.xattr.trusted.overlay.opaque": "y",
                                         "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                         "SCHILY.xattr.user.overlay.origin": "x"}))),
        str(target))
    assert not [a for a in os.listxattr(target / "d") if ".overlay." in a]
    assert result.skipped == 3
