"""The streaming tar reader against tarfile and GNU tar: the same archives
read the same way, in every header format."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from isobox.errors import InvalidArgument
from isobox.images.tarstream import DIR, REG, TarReader

REGULAR = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}


def _ours(blob: bytes) -> list[tuple[object, ...]]:
    reader = TarReader(io.BytesIO(blob), chunk=777)  # odd chunks: headers straddle reads
    out = []
    while (e := reader.next()) is not None:
        data = b"".join(bytes(v) for v in reader.data(e)) if e.type == REG else b""
        out.append((e.name.rstrip("/"), e.type, e.mode, e.uid, e.gid, e.size,
                    e.mtime_ns // 10**9, e.linkname, e.devmajor, e.devminor,
                    e.xattrs or {}, data))
    return out


def _tarfile(blob: bytes) -> list[tuple[object, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(blob), encoding="utf-8",
                      errors="surrogateescape") as tf:
        for m in tf:
            kind = REG if m.type in REGULAR else m.type
            data = tf.extractfile(m).read() if kind == REG else b""  # type: ignore[union-attr]
            xattrs = {k[13:]: v.encode("utf-8", "surrogateescape")
                      for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            dev = m.ischr() or m.isblk()
            out.append((m.name, kind, m.mode, m.uid, m.gid, m.size if kind == REG else 0,
                        int(m.mtime), m.linkname, m.devmajor if dev else 0,
                        m.devminor if dev else 0, xattrs, data))
    return out


def _archive(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> None:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.size = len(data) if kind in REGULAR else 0
            ti.mtime = 1_234_567_890
            for key, value in kw.items():
                setattr(ti, key, value)
            tf.addfile(ti, io.BytesIO(data) if kind in REGULAR else None)
        add("dir", tarfile.DIRTYPE, mode=0o755)
        add("dir/file", data=b"hello" * 300, mode=0o4755, uid=1000, gid=100)
        if fmt != tarfile.USTAR_FORMAT:
            add("dir/" + "long" * 30, data=b"x")           # > 100 bytes: L or path
        add("p" * 120 + "/" + "q" * 90, data=b"y")          # needs a prefix split or more
        add("link", tarfile.SYMTYPE, linkname="t" * 150 if fmt != tarfile.USTAR_FORMAT else "t")
        add("hard", tarfile.LNKTYPE, linkname="dir/file")
        add("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)
        add("fifo", tarfile.FIFOTYPE)
        add("empty")
        if fmt != tarfile.USTAR_FORMAT:
            add("big-ids", data=b"z", uid=3_000_000, gid=2_097_152)
            add("héllo-wörld", data=b"u")
        if fmt == tarfile.PAX_FORMAT:
            ti_pax = {"SCHILY.xattr.user.a": "1",
                      "SCHILY.xattr.user.bin": b"\x01\x00\xff\xfe".decode(
                          "utf-8", "surrogateescape")}
            ti = tarfile.TarInfo("xattrs")
            ti.pax_headers = ti_pax
            tf.addfile(ti)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_reads_what_tarfile_reads(fmt: int) -> None:
    blob = _archive(fmt)
    assert _ours(blob) == _tarfile(blob)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar missing")
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "v7"])
def test_reads_what_gnu_tar_writes(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    (src / "d" / ("n" * 60)).mkdir(parents=True)
    (src / "d" / ("n" * 60) / ("f" * 60)).write_bytes(os.urandom(5000))
    (src / "d" / "small").write_bytes(b"s")
    os.symlink("small", src / "d" / "sym")
    os.link(src / "d" / "small", src / "d" / "hard")
    os.mkfifo(src / "fifo")
    if fmt == "posix":
        os.setxattr(src / "d" / "small", "user.note", b"\x00\xffbin")
    names = ["d", "fifo"] if fmt != "v7" else ["d/small", "d/sym", "d/hard"]
    blob = subprocess.run(["tar", f"--format={fmt}", "--xattrs", "-cf", "-", "-C", str(src),
                           *names], check=True, capture_output=True).stdout
    ours, theirs = _ours(blob), _tarfile(blob)
    assert ours == theirs
    if fmt == "posix":
        assert any(x == {"user.note": b"\x00\xffbin"} for *_, x, _data in ours)


def test_header_only_types_carry_no_data() -> None:
    # a symlink header claiming a size: Go, tarfile and we read no data for it
    ti = tarfile.TarInfo("s")
    ti.type, ti.linkname = tarfile.SYMTYPE, "x"
    header = ti.tobuf(tarfile.USTAR_FORMAT)
    forged = bytearray(header)
    forged[124:136] = b"00000001000\0"
    forged[148:156] = b"        "
    forged[148:155] = f"{sum(forged):06o}\0".encode()
    nxt = tarfile.TarInfo("after")
    blob = bytes(forged) + nxt.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    reader = TarReader(io.BytesIO(blob))
    first, second = reader.next(), reader.next()
    assert first is not None and first.size == 0
    assert second is not None and second.name == "after"


def test_old_style_directory_and_pax_time_and_bad_numbers() -> None:
    ti = tarfile.TarInfo("olddir/")
    ti.type = tarfile.AREGTYPE
    blob = ti.tobuf(tarfile.USTAR_FORMAT)
    pax = tarfile.TarInfo("t")
    pax.pax_headers = {"mtime": "-12.5", "atime": "1.000000001"}
    blob += pax.tobuf(tarfile.PAX_FORMAT) + bytes(1024)
    reader = TarReader(io.BytesIO(blob))
    first = reader.next()
    assert first is not None and first.type == DIR
    second = reader.next()
    assert second is not None
    assert (second.mtime_ns, second.atime_ns) == (-12_500_000_000, 1_000_000_001)
    bad = bytearray(tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT))
    bad[124:136] = b"0000000009\0\0"  # not octal
    bad[148:156] = b"        "
    bad[148:155] = f"{sum(bad):06o}\0".encode()
    with pytest.raises(InvalidArgument, match="bad number"):
        TarReader(io.BytesIO(bytes(bad))).next()


def test_runaway_extended_headers_are_refused() -> None:
    one = tarfile.TarInfo("x")
    one.pax_headers = {"comment": "c"}
    header = one.tobuf(tarfile.PAX_FORMAT)[:1024]  # the x header and its data only
    with pytest.raises(InvalidArgument, match="extended headers in a row"):
        TarReader(io.BytesIO(header * 40)).next()
