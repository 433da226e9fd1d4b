"""apply_layer on in-memory tars: every entry type, attributes, whiteouts in
both modes, compression and diff ids."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from isobox.errors import InvalidArgument
from isobox.images.chain import chain_id, chain_ids
from isobox.images.layers import LayerResult, Limits, apply_layer

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod, trusted xattrs)")
MTIME = 1_600_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, mode: int = 0o644,
          uid: int = 0, gid: int = 0, mtime: float = MTIME, link: str = "",
          dev: tuple[int, int] = (0, 0), pax: dict[str, str] | None = None
          ) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = kind, mode, uid, gid, mtime, link
    ti.devmajor, ti.devminor = dev
    ti.size = len(data) if kind in tarfile.REGULAR_TYPES else 0
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def d(name: str, **kw: Any) -> tuple[tarfile.TarInfo, bytes]:
    kw.setdefault("mode", 0o755)
    return entry(name, tarfile.DIRTYPE, **kw)


def f(name: str, data: bytes = b"", **kw: Any) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.REGTYPE, data, **kw)


def sym(name: str, target: str, **kw: Any) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.SYMTYPE, link=target, mode=0o777, **kw)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.LNKTYPE, link=target)


def make_tar(*entries: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def apply(blob: bytes, target: Path, **kw: Any) -> LayerResult:
    target.mkdir(exist_ok=True)
    return apply_layer(io.BytesIO(blob), str(target), **kw)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- entry types and attributes ----------------------------------------------


@needs_root
def test_every_entry_type(tmp_path: Path) -> None:
    blob = make_tar(
        d("etc"), f("etc/hosts", b"127.0.0.1 localhost\n"),
        sym("etc/abs", "/usr/bin/env"), sym("etc/rel", "../bin/sh"),
        hard("etc/hosts2", "etc/hosts"),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("dev/sda", tarfile.BLKTYPE, mode=0o660, dev=(8, 0)),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o620),
        f("empty"), entry("contiguous", tarfile.CONTTYPE, b"x"),
    )
    out = tmp_path / "out"
    result = apply(blob, out)
    assert result.entries == 10 and result.skipped == 0
    assert result.size == len(b"127.0.0.1 localhost\n") + 1
    assert (out / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert os.readlink(out / "etc/abs") == "/usr/bin/env"
    assert os.readlink(out / "etc/rel") == "../bin/sh"
    assert os.stat(out / "etc/hosts").st_ino == os.stat(out / "etc/hosts2").st_ino
    st = os.lstat(out / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666  # not cut by the umask
    st = os.lstat(out / "dev/sda")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 8
    st = os.lstat(out / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620
    assert (out / "empty").read_bytes() == b""
    assert (out / "contiguous").read_bytes() == b"x"  # type 7 reads as a regular file


@needs_root
def test_owners_modes_and_special_bits(tmp_path: Path) -> None:
    blob = make_tar(
        d("tmp", mode=0o1777), d("home/u", mode=0o700, uid=1000, gid=1000),
        f("bin/su", b"\x7fELF", mode=0o4755, uid=0, gid=0),
        f("bin/wall", b"x", mode=0o2755, uid=0, gid=5),
        f("home/u/file", b"x", mode=0o4711, uid=1000, gid=2000),
        sym("home/u/link", "file", uid=1000, gid=2000),
        entry("home/u/fifo", tarfile.FIFOTYPE, mode=0o2640, uid=7, gid=8),
    )
    out = tmp_path / "out"
    apply(blob, out)

    def owner_mode(p: str) -> tuple[int, int, int]:
        st = os.lstat(out / p)
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode("tmp") == (0, 0, 0o1777)
    assert owner_mode("home/u") == (1000, 1000, 0o700)
    assert owner_mode("bin/su") == (0, 0, 0o4755)
    assert owner_mode("bin/wall") == (0, 5, 0o2755)
    # chown before chmod: the setuid bit survives the change of owner
    assert owner_mode("home/u/file") == (1000, 2000, 0o4711)
    assert owner_mode("home/u/link")[:2] == (1000, 2000)
    assert owner_mode("home/u/fifo") == (7, 8, 0o2640)


@needs_root
def test_base256_owner_and_gnu_long_names(tmp_path: Path) -> None:
    long = "d/" + "n" * 150 + "/" + "f" * 120
    blob = make_tar(f(long, b"long", uid=3_000_000, gid=3_000_001),
                    sym("l", "t" * 200), fmt=tarfile.GNU_FORMAT)
    out = tmp_path / "out"
    apply(blob, out)
    st = os.stat(out / long)
    assert (st.st_uid, st.st_gid) == (3_000_000, 3_000_001)
    assert os.readlink(out / "l") == "t" * 200


def test_ustar_prefix_and_pax_names(tmp_path: Path) -> None:
    ustar = "p" * 90 + "/" + "q" * 90
    blob = make_tar(f(ustar, b"u"), fmt=tarfile.USTAR_FORMAT)
    apply(blob, tmp_path / "a")
    assert (tmp_path / "a" / ustar).read_bytes() == b"u"
    pax = "é/" + "x" * 200 + "/ü"
    apply(make_tar(f(pax, b"p"), sym("s", "→" * 80)), tmp_path / "b")
    assert (tmp_path / "b" / pax).read_bytes() == b"p"
    assert os.readlink(tmp_path / "b" / "s") == "→" * 80


def test_mtimes_including_directories_and_fractions(tmp_path: Path) -> None:
    blob = make_tar(d("a", mtime=1_000_000), d("a/b", mtime=2_000_000),
                    f("a/b/c", b"x", mtime=3_000_000.25), sym("a/s", "b", mtime=4_000_000),
                    f("a/late", b"y", mtime=5_000_000))
    out = tmp_path / "out"
    apply(blob, out)
    # directories keep their archive mtime although entries were written in them later
    assert os.stat(out / "a").st_mtime_ns == 1_000_000 * 10**9
    assert os.stat(out / "a/b").st_mtime_ns == 2_000_000 * 10**9
    assert os.stat(out / "a/b/c").st_mtime_ns == 3_000_000_250_000_000
    assert os.lstat(out / "a/s").st_mtime_ns == 4_000_000 * 10**9
    assert os.stat(out / "a/late").st_mtime_ns == 5_000_000 * 10**9


@needs_root
def test_xattrs_including_file_capabilities(tmp_path: Path) -> None:
    # VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_BIND_SERVICE
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    blob = make_tar(
        d("dir", pax={"SCHILY.xattr.user.dirattr": "D"}),
        f("dir/ping", b"\x7fELF", mode=0o755, uid=0, gid=0, pax={
            "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
            "SCHILY.xattr.user.plain": "value"}),
        f("dir/owned", b"x", uid=1234, gid=1234, pax={
            "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")}),
        f("dir/evil", b"x", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                 "SCHILY.xattr.trusted.overlay.opaque": "y"}),
    )
    out = tmp_path / "out"
    result = apply(blob, out)
    assert os.getxattr(out / "dir", "user.dirattr") == b"D"
    assert os.getxattr(out / "dir/ping", "security.capability") == cap
    assert os.getxattr(out / "dir/ping", "user.plain") == b"value"
    # set after chown, which would have cleared it
    assert os.getxattr(out / "dir/owned", "security.capability") == cap
    # an image may not steer the overlay mount: overlay xattrs are dropped, with a warning
    assert not [a for a in os.listxattr(out / "dir/evil") if a.startswith("trusted.overlay")]
    assert result.skipped == 2
    assert any("trusted.overlay.redirect" in w for w in result.warnings)


def test_later_entries_replace_earlier_ones_of_another_type(tmp_path: Path) -> None:
    blob = make_tar(
        f("a", b"file"), d("a"), f("a/inner", b"i"),    # file -> dir
        d("b"), f("b/x", b"x"), f("b", b"now a file"),  # dir (with content) -> file
        f("c", b"c"), sym("c", "target"),               # file -> symlink
        sym("e", "/"), d("e"),                          # symlink -> dir
        f("g", b"old"), f("g", b"new"),                 # file -> file
        d("h", mode=0o700), d("h", mode=0o751), f("h/k", b"k"),  # dir merges with dir
    )
    out = tmp_path / "out"
    apply(blob, out)
    assert (out / "a/inner").read_bytes() == b"i"
    assert (out / "b").read_bytes() == b"now a file"
    assert os.readlink(out / "c") == "target"
    assert (out / "e").is_dir() and not (out / "e").is_symlink()
    assert (out / "g").read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(out / "h").st_mode) == 0o751 and (out / "h/k").exists()


def test_replacing_a_file_does_not_write_through_its_hardlinks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    apply(make_tar(f("orig", b"original"), hard("alias", "orig")), out)
    apply(make_tar(f("alias", b"replaced")), out, mode="flat")
    assert (out / "orig").read_bytes() == b"original"
    assert (out / "alias").read_bytes() == b"replaced"


def test_implicit_parents_and_root_entry(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o711)
    apply(make_tar(d("./", mode=0o777), f("./x/y/z", b"z"), f("x//w/", b"w")), out)
    assert (out / "x/y/z").read_bytes() == b"z"
    assert (out / "x/w").read_bytes() == b"w"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o711  # "./" does not change the target


def test_hardlink_must_exist_in_the_layer(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"'b'.*not in the layer"):
        apply(make_tar(hard("b", "missing")), tmp_path / "out")
    with pytest.raises(InvalidArgument, match="directory"):
        apply(make_tar(d("dir"), hard("b", "dir")), tmp_path / "out2")


# -- whiteouts ---------------------------------------------------------------


@needs_root
def test_overlay_mode_whiteouts_are_char_devices_and_opaque_xattrs(tmp_path: Path) -> None:
    blob = make_tar(d("etc"), f("etc/.wh.passwd"), d("var/cache"),
                    f("var/cache/.wh..wh..opq"), f("var/cache/new", b"n"),
                    f(".wh.topgone"), f("usr/.wh..wh.plnk"))
    out = tmp_path / "out"
    result = apply(blob, out)
    st = os.lstat(out / "etc/passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert stat.S_ISCHR(os.lstat(out / "topgone").st_mode)
    assert os.getxattr(out / "var/cache", "trusted.overlay.opaque") == b"y"
    assert (out / "var/cache/new").read_bytes() == b"n"
    assert not (out / "etc/.wh.passwd").exists()
    assert not (out / "usr").exists()  # AUFS metadata is not content
    assert result.entries == 7


def test_flat_mode_whiteouts_remove_and_opaque_keeps_only_this_layer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    apply(make_tar(f("etc/passwd", b"p"), f("etc/group", b"g"), d("etc/ssl"),
                   f("etc/ssl/cert", b"c"), f("var/cache/a", b"a"), d("var/cache/sub"),
                   f("var/cache/sub/b", b"b"), f("opq2/old", b"o")), out, mode="flat")
    apply(make_tar(f("etc/.wh.passwd"), f("etc/.wh.ssl"), f("etc/.wh.nothing"),
                   d("var/cache"), f("var/cache/.wh..wh..opq"), f("var/cache/new", b"n"),
                   # opaque marker after this layer's own entries: they stay
                   f("opq2/mine", b"m"), d("opq2/sub"), f("opq2/sub/deep", b"d"),
                   f("opq2/.wh..wh..opq")), out, mode="flat")
    assert sorted(os.listdir(out / "etc")) == ["group"]
    assert sorted(os.listdir(out / "var/cache")) == ["new"]
    assert sorted(os.listdir(out / "opq2")) == ["mine", "sub"]
    assert (out / "opq2/sub/deep").read_bytes() == b"d"


def test_bad_whiteouts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="whiteout"):
        apply(make_tar(f("a/.wh.")), tmp_path / "out")


# -- compression and diff ids ------------------------------------------------


def _layer_bytes() -> bytes:
    return make_tar(d("a"), f("a/b", os.urandom(3000)), f("a/c", b"z" * 100_000),
                    sym("a/d", "b"))


@pytest.mark.parametrize("compress", ["plain", "gzip", "gzip-multi", "zstd", "zstd-multi"])
def test_diff_id_is_sha256_of_the_uncompressed_stream(tmp_path: Path, compress: str) -> None:
    raw = _layer_bytes() + bytes(4096)  # extra zero padding after the archive is hashed too
    half = len(raw) // 2
    blob = {
        "plain": lambda: raw,
        "gzip": lambda: gzip.compress(raw),
        "gzip-multi": lambda: gzip.compress(raw[:half]) + gzip.compress(raw[half:]),
        "zstd": lambda: zstandard.ZstdCompressor().compress(raw),
        "zstd-multi": lambda: (zstandard.ZstdCompressor().compress(raw[:half])
                               + zstandard.ZstdCompressor().compress(raw[half:])),
    }[compress]()
    result = apply(blob, tmp_path / "out")
    assert result.diff_id == sha(raw)
    assert result.size == 103_000
    assert (tmp_path / "out/a/c").read_bytes() == b"z" * 100_000


def test_streams_in_small_reads_without_seeking(tmp_path: Path) -> None:
    raw = _layer_bytes()

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), 7, len(self.data) - self.pos)
            b[:n] = self.data[self.pos:self.pos + n]
            self.pos += n
            return n

    result = apply_layer(Trickle(gzip.compress(raw)), str(tmp_path))  # type: ignore[arg-type]
    assert result.diff_id == sha(raw)


def test_empty_blob_and_empty_tar_are_empty_layers(tmp_path: Path) -> None:
    assert apply(b"", tmp_path / "a") == LayerResult(sha(b""), 0, 0)
    assert apply(bytes(1024), tmp_path / "b").diff_id == sha(bytes(1024))
    assert apply(gzip.compress(bytes(10240)), tmp_path / "c").entries == 0
    assert os.listdir(tmp_path / "a") == os.listdir(tmp_path / "b") == []


def test_global_pax_headers_are_skipped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "git archive", "path": "ignored"}) as tf:
        ti, data = f("kept", b"k")
        tf.addfile(ti, io.BytesIO(data))
    apply(buf.getvalue(), tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ["kept"]


@pytest.mark.parametrize("blob, message", [
    (b"hello, not a tar", "truncated|not a tar"),
    (os.urandom(2048), "not a tar|checksum"),
    (b"\xfd7zXZ\x00" + bytes(100), "xz-compressed layers are not supported"),
    (b"BZh91AY&SY" + bytes(100), "bzip2"),
    (gzip.compress(b"garbage" * 100), "not a tar|checksum"),
    (b"\x1f\x8b\x08\x00" + os.urandom(64), "corrupt|truncated"),
    (zstandard.ZstdCompressor().compress(b"x" * 600)[:-3], "not a tar|corrupt|truncated|checksum"),
])
def test_not_a_layer(tmp_path: Path, blob: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        apply(blob, tmp_path / "out")


def test_truncated_and_corrupt_archives(tmp_path: Path) -> None:
    raw = make_tar(f("a", b"x" * 5000), f("b", b"y"))
    with pytest.raises(InvalidArgument, match="truncated"):
        apply(raw[:3000], tmp_path / "one")
    with pytest.raises(InvalidArgument, match="truncated"):
        apply(gzip.compress(raw)[:-20], tmp_path / "two")
    broken = bytearray(raw)
    broken[512 + 5120 + 10] ^= 0x55  # inside the second header: bad checksum, not an end
    with pytest.raises(InvalidArgument, match="checksum"):
        apply(bytes(broken), tmp_path / "three")
    with pytest.raises(InvalidArgument, match="garbage after its gzip"):
        apply(gzip.compress(raw) + b"junk", tmp_path / "four")
    assert apply(gzip.compress(raw) + bytes(100), tmp_path / "five").entries == 2


@pytest.mark.parametrize("compress", [
    gzip.compress,
    zstandard.ZstdCompressor().compress,
    zstandard.ZstdCompressor(write_checksum=True, write_content_size=False).compress,
])
def test_every_truncation_of_a_compressed_layer_is_refused(
        tmp_path: Path, compress: Any) -> None:
    raw = make_tar(f("a", os.urandom(700)))
    blob = compress(raw)
    for cut in range(1, len(blob)):
        with pytest.raises(InvalidArgument, match=r"truncated|corrupt|not a tar"):
            apply(blob[:cut], tmp_path / str(cut))
    assert apply(blob, tmp_path / "whole").diff_id == sha(raw)


def test_zstd_skippable_frames_are_passed_over(tmp_path: Path) -> None:
    raw = make_tar(f("a", b"x" * 1000))
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    cctx = zstandard.ZstdCompressor()
    blob = cctx.compress(raw[:1000]) + skippable + cctx.compress(raw[1000:])
    assert apply(blob, tmp_path / "out").diff_id == sha(raw)
    with pytest.raises(InvalidArgument, match=r"garbage after its zstd|corrupt"):
        apply(cctx.compress(raw) + b"junkjunk", tmp_path / "junk")


def test_limits_are_checked(tmp_path: Path) -> None:
    raw = make_tar(f("a", b"x" * 20000), f("b"), f("c"))
    with pytest.raises(InvalidArgument, match="more than 2 entries"):
        apply(raw, tmp_path / "one", limits=Limits(max_entries=2))
    with pytest.raises(InvalidArgument, match="larger than 10000 bytes"):
        apply(raw, tmp_path / "two", limits=Limits(max_bytes=10000))
    with pytest.raises(InvalidArgument, match="decompression bomb"):
        apply(gzip.compress(make_tar(f("z", bytes(2 << 20)))), tmp_path / "three",
              limits=Limits(max_ratio=100, ratio_after=1 << 20))


def test_chain_ids() -> None:
    a, b, c = sha(b"a"), sha(b"b"), sha(b"c")
    ab = sha(f"{a} {b}".encode())
    assert chain_ids([]) == []
    assert chain_ids([a]) == [a]
    assert chain_ids([a, b, c]) == [a, ab, sha(f"{ab} {c}".encode())]
    assert chain_id(ab, c) == chain_ids([a, b, c])[2]
    with pytest.raises(InvalidArgument):
        chain_ids(["sha256:nothex"])
