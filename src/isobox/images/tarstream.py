"""A streaming tar reader: headers in, entries out, file data as zero-copy views.

Why not ``tarfile`` (stream mode ``r|``): measured on a 126 MB layer of
30,000 files, tarfile spent ~47 µs per entry parsing headers and copying data
through its ``_Stream`` buffers, more than the file system calls of applying
the entry. This reader parses ustar, GNU and PAX headers with one
``struct.unpack`` per block and hands file data out as slices of its read
buffer, which makes parsing ~5x cheaper.

Formats, as Go's ``archive/tar`` (what Docker and containerd use) reads them:
ustar (with its ``prefix`` field), GNU long names and link names (``L``,
``K``), PAX extended headers (``x``: path, linkpath, size, uid, gid, mtime,
atime, ``SCHILY.xattr.*``). Global PAX headers (``g``) are skipped, as Docker
does. Base-256 numbers are read. The size field of header-only types (links,
devices, directories, fifos) is ignored, as Go and tarfile do. GNU sparse
files, multi-volume and unknown types are reported with their type for the
caller to refuse. The archive ends at the first zero block or at a clean EOF
between entries; a corrupt or truncated header is an error, not an end.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Protocol

from isobox.errors import InvalidArgument

BLOCK = 512
REG, LNK, SYM, CHR, BLK, DIR, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_REGULAR = (b"0", b"\0", b"7")          # 7: contiguous file, a regular file anywhere
_HEADER_ONLY = (LNK, SYM, CHR, BLK, DIR, FIFO)
_META_MAX = 1 << 20                     # PAX or long-name data per header (Go: 1 MiB)
_META_CHAIN = 16                        # extended headers in a row before an entry
_ZERO = bytes(BLOCK)
_NUMBER_BYTES = b"01234567 \0"
# name mode uid gid size mtime chksum type linkname magic (version uname gname) dev prefix
_HDR = struct.Struct("100s8s8s8s12s12s8sc100s6s66x8s8s155s")


class Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Entry:
    """One archive entry. ``type`` is normalised: every regular file is
    ``REG``; a pre-POSIX regular file whose name ends in ``/`` is ``DIR``."""

    __slots__ = ("atime_ns", "devmajor", "devminor", "gid", "linkname", "mode", "mtime_ns",
                 "name", "size", "type", "uid", "xattrs")

    def __init__(self, name: str, type_: bytes, mode: int, uid: int, gid: int, size: int,
                 mtime_ns: int, linkname: str, devmajor: int, devminor: int) -> None:
        self.name = name
        self.type = type_
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.atime_ns = mtime_ns
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs: dict[str, bytes] | None = None


class TarReader:
    """Entries of a tar stream, in order. Read an entry's ``data`` before
    asking for the next one, or it is skipped."""

    def __init__(self, src: Source, chunk: int = 1 << 20) -> None:
        self._src = src
        self._chunk = chunk
        self._buf = b""
        self._pos = 0
        self._skip = 0      # data and padding of the current entry not yet read
        self.offset = 0     # bytes of the stream consumed

    # -- buffer ---------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        """Exactly n bytes, or fewer at the end of the stream."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos:end]
            self._pos = end
            self.offset += n
            return out
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        self._buf, self._pos = b"", 0
        while have < n:
            more = self._src.read(max(self._chunk, n - have))
            if not more:
                break
            need = n - have
            if len(more) > need:
                parts.append(more[:need])
                self._buf, self._pos = more, need
                have = n
            else:
                parts.append(more)
                have += len(more)
        self.offset += have
        return b"".join(parts)

    def _discard(self, n: int) -> None:
        self.offset += n
        avail = len(self._buf) - self._pos
        if n <= avail:
            self._pos += n
            return
        n -= avail
        self._buf, self._pos = b"", 0
        while n:
            more = self._src.read(self._chunk)
            if not more:
                raise InvalidArgument("layer is truncated (archive ends inside an entry)")
            if len(more) > n:
                self._buf, self._pos = more, n
                return
            n -= len(more)

    def data(self, entry: Entry) -> Iterator[memoryview]:
        """The file's content as views, valid until the next iteration."""
        remaining = entry.size
        pad = -remaining % BLOCK
        while remaining:
            if self._pos >= len(self._buf):
                self._buf, self._pos = self._src.read(self._chunk), 0
                if not self._buf:
                    raise InvalidArgument(f"layer is truncated (archive ends inside "
                                          f"{entry.name!r})")
            n = min(remaining, len(self._buf) - self._pos)
            view = memoryview(self._buf)[self._pos:self._pos + n]
            self._pos += n
            self._skip -= n
            self.offset += n
            remaining -= n
            yield view
        self._discard(pad)
        self._skip -= pad

    # -- headers ----------------------------------------------------------------

    def next(self) -> Entry | None:
        if self._skip:
            self._discard(self._skip)
            self._skip = 0
        pax: dict[bytes, bytes] = {}
        long_name = long_link = None
        for _ in range(_META_CHAIN + 1):
            start = self.offset
            block = self._take(BLOCK)
            if not block or block == _ZERO:
                return None
            if len(block) < BLOCK:
                raise InvalidArgument(f"layer is truncated (partial tar header at byte {start})")
            fields = _HDR.unpack_from(block)
            _check_sum(block, fields[6], start)
            typ = fields[7]
            size = _number(fields[4])
            if size < 0:
                raise InvalidArgument(f"negative size in the tar header at byte {start}")
            if typ in (b"x", b"g", b"L", b"K"):
                if size > _META_MAX:
                    raise InvalidArgument(f"tar extended header at byte {start} is too large")
                data = self._take(size)
                if len(data) < size:
                    raise InvalidArgument("layer is truncated (inside an extended header)")
                self._discard(-size % BLOCK)
                if typ == b"x":
                    pax.update(_pax_records(data, start))
                elif typ == b"L":
                    long_name = _nts(data)
                elif typ == b"K":
                    long_link = _nts(data)
                continue  # "g": global headers carry nothing Docker applies
            return self._entry(fields, typ, size, pax, long_name, long_link, start)
        raise InvalidArgument(f"more than {_META_CHAIN} extended headers in a row "
                              f"before byte {self.offset}")

    def _entry(self, f: tuple[bytes, ...], typ: bytes, size: int, pax: dict[bytes, bytes],
               long_name: bytes | None, long_link: bytes | None, start: int) -> Entry:
        name = long_name if long_name is not None else _nts(f[0])
        if long_name is None and f[9] == b"ustar\0" and f[12][:1] != b"\0":
            name = _nts(f[12]) + b"/" + name
        link = long_link if long_link is not None else _nts(f[8])
        mtime_ns = _number(f[5]) * 1_000_000_000
        uid, gid = _number(f[2]), _number(f[3])
        xattrs: dict[str, bytes] | None = None
        atime_ns = None
        for key, value in pax.items():
            if key.startswith(b"SCHILY.xattr."):
                if xattrs is None:
                    xattrs = {}
                xattrs[key[13:].decode("utf-8", "surrogateescape")] = value
            elif not value:
                continue  # an empty record unsets: the header field stands
            elif key == b"path":
                name = value
            elif key == b"linkpath":
                link = value
            elif key == b"size":
                size = _decimal(value, start)
            elif key == b"uid":
                uid = _decimal(value, start)
            elif key == b"gid":
                gid = _decimal(value, start)
            elif key == b"mtime":
                mtime_ns = _pax_time(value, start)
            elif key == b"atime":
                atime_ns = _pax_time(value, start)
            elif key.startswith(b"GNU.sparse."):
                typ = b"S"
        if typ in _REGULAR:
            typ = DIR if typ == b"\0" and name.endswith(b"/") else REG
        if typ in _HEADER_ONLY:
            size = 0
        self._skip = size + (-size % BLOCK)
        dev = typ in (CHR, BLK)
        entry = Entry(name.decode("utf-8", "surrogateescape"), typ, _number(f[1]) & 0o7777,
                      uid, gid, size, mtime_ns, link.decode("utf-8", "surrogateescape"),
                      _number(f[10]) if dev else 0, _number(f[11]) if dev else 0)
        if atime_ns is not None:
            entry.atime_ns = atime_ns
        entry.xattrs = xattrs
        return entry

    def drain(self) -> None:
        """Read the rest of the stream (padding after the end of the archive)."""
        self._buf, self._pos = b"", 0
        while self._src.read(self._chunk):
            pass


def _nts(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _number(field: bytes) -> int:
    """A numeric header field: octal text (ended by NUL or space), or GNU base-256."""
    if field[0] & 0x80:
        if field[0] not in (0x80, 0xFF):
            raise InvalidArgument(f"bad number {field!r} in a tar header")
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * (len(field) - 1))) if field[0] == 0xFF else n
    if not field.translate(None, _NUMBER_BYTES):  # the common case: digits, NULs, spaces
        try:
            return int(field.strip(b" \0") or b"0", 8)
        except ValueError:
            pass  # a NUL or space inside: only what precedes it counts
    text = field.split(b"\0", 1)[0].strip(b" ")
    if text.isdigit():
        try:
            return int(text, 8)
        except ValueError:
            pass
    elif not text:
        return 0
    raise InvalidArgument(f"bad number {field!r} in a tar header")


def _check_sum(block: bytes, field: bytes, start: int) -> None:
    try:
        want = _number(field)
    except InvalidArgument:
        want = -1
    got = sum(block) - sum(field) + 8 * 32
    if got != want:
        # some old writers summed signed chars
        signed = got - 256 * (sum(b > 127 for b in block) - sum(b > 127 for b in field))
        if signed != want:
            raise InvalidArgument(f"layer is not a tar archive or is corrupt (bad header "
                                  f"checksum at byte {start})")


def _decimal(value: bytes, start: int) -> int:
    if not value.isdigit():
        raise InvalidArgument(f"bad number {value!r} in the PAX header at byte {start}")
    return int(value)


def _pax_time(value: bytes, start: int) -> int:
    """Seconds with an optional fraction, to nanoseconds without float rounding."""
    sign = -1 if value.startswith(b"-") else 1
    whole, _, frac = value.lstrip(b"-").partition(b".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise InvalidArgument(f"bad time {value!r} in the PAX header at byte {start}")
    return sign * (int(whole) * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0")))


def _pax_records(data: bytes, start: int) -> dict[bytes, bytes]:
    """``<length> <key>=<value>\\n`` records."""
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0 and not data[pos:].strip(b"\0"):
            break  # padding NULs some writers leave
        space = data.find(b" ", pos, pos + 21)
        length = data[pos:space]
        if space < 0 or not length.isdigit() or int(length) <= space - pos + 1 \
                or pos + int(length) > len(data) or data[pos + int(length) - 1] != 0x0A:
            raise InvalidArgument(f"bad PAX record in the header at byte {start}")
        key, eq, value = data[space + 1:pos + int(length) - 1].partition(b"=")
        if not eq or not key:
            raise InvalidArgument(f"bad PAX record in the header at byte {start}")
        out[key] = value
        pos += int(length)
    return out
