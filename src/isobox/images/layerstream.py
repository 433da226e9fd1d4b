"""A layer blob as a stream of uncompressed tar bytes, hashed as it is read.

The compression is found from the magic bytes (gzip, zstd, else plain tar;
bzip2, xz and lz4 are named and refused). ``LayerStream.read`` feeds the tar
reader; every byte it returns is hashed and counted, and the reader drains
what follows the end-of-archive marker, so ``diff_id`` is the sha256 of the
whole uncompressed blob, as Docker computes it. The uncompressed size and
the decompression ratio are bounded by ``Limits`` (the entry count, the path
lengths and depth by the caller).

A truncated stream is an error, never a shorter layer: gzip members must end
with their trailer; zstd frames are walked header by header (the zstandard
readers report a truncated frame as a plain EOF).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

from isobox.errors import InvalidArgument
from isobox.images.compression import GZIP_MAGIC, ZSTD_MAGIC

CHUNK = 1 << 20
_OTHER = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x04\x22\x4d\x18": "lz4"}


@dataclass(frozen=True)
class Limits:
    """Bounds on one layer. The ratio check starts once ``ratio_after``
    uncompressed bytes were read."""

    max_entries: int = 1_000_000
    max_bytes: int = 64 << 30
    max_ratio: int = 1000
    ratio_after: int = 100 << 20
    max_path: int = 4096
    max_component: int = 255
    max_depth: int = 256          # directories deep (tree walks recurse per level)


DEFAULT_LIMITS = Limits()


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Counted:
    """The raw (compressed) blob, with a byte count; ``head`` re-served first."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.count = 0
        self.head = b""
        while len(self.head) < 6:
            more = src.read(6 - len(self.head))
            if not more:
                break
            self.head += more
        self.count = len(self.head)
        self._pending = self.head

    def read(self, n: int = -1, /) -> bytes:
        if self._pending:
            cut = len(self._pending) if n < 0 else n
            data, self._pending = self._pending[:cut], self._pending[cut:]
            return data
        data = self._src.read(n)
        self.count += len(data)
        return data


class _Gzip:
    """Multi-member gzip; trailing zero bytes are tolerated, other garbage is not."""

    def __init__(self, raw: _Counted) -> None:
        self._raw = raw
        self._d = zlib.decompressobj(31)
        self._in = b""
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        n = CHUNK if n < 0 else n
        while not self._done:
            if self._d.eof:
                self._next_member()
                continue
            data = self._in or self._raw.read(CHUNK)
            if not data:
                raise InvalidArgument("layer is truncated (gzip stream ends early)")
            try:
                out = self._d.decompress(data, n)
            except zlib.error as exc:
                raise InvalidArgument(f"layer is corrupt (gzip: {exc})") from None
            self._in = self._d.unconsumed_tail
            if out:
                return out
        return b""

    def _next_member(self) -> None:
        tail = self._d.unused_data
        while len(tail) < 2 and (more := self._raw.read(CHUNK)):
            tail += more
        if not tail:
            self._done = True
        elif tail.startswith(GZIP_MAGIC):
            self._d = zlib.decompressobj(31)
            self._in = tail
        elif not tail.strip(b"\0"):
            while more := self._raw.read(CHUNK):
                if more.strip(b"\0"):
                    raise InvalidArgument("layer has garbage after its gzip data")
            self._done = True
        else:
            raise InvalidArgument("layer has garbage after its gzip data")


class _ZstdFrames:
    """Walks the frame and block headers of a zstd stream as it is read, so
    a truncated stream is told from a complete one (the zstandard readers
    report both as a plain EOF)."""

    def __init__(self) -> None:
        self._need = 4              # header bytes wanted for the current state
        self._hdr = b""
        self._state = "magic"
        self._skip = 0              # block or skippable-frame bytes to pass over
        self._after = "magic"       # state once the skip is done
        self._checksum = False

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._hdr and not self._skip

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if not self._skip:
                    self._goto(self._after)
                continue
            take = min(self._need - len(self._hdr), end - pos)
            self._hdr += data[pos:pos + take]
            pos += take
            if len(self._hdr) == self._need:
                hdr, self._hdr = self._hdr, b""
                self._header(hdr)

    def _goto(self, state: str) -> None:
        self._state = state
        self._need = {"magic": 4, "block": 3, "checksum": 4}[state]

    def _header(self, hdr: bytes) -> None:
        state = self._state
        if state == "magic":
            if hdr == ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif hdr[1:] == b"\x2a\x4d\x18" and hdr[0] & 0xF0 == 0x50:
                self._state, self._need = "skippable", 4
            else:
                raise InvalidArgument("layer has garbage after its zstd data")
        elif state == "descriptor":
            d = hdr[0]
            single = d >> 5 & 1
            self._checksum = bool(d & 4)
            rest = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + (single, 2, 4, 8)[d >> 6]
            if rest:
                self._state, self._need = "frame_header", rest
            else:
                self._goto("block")
        elif state == "frame_header" or state == "checksum":
            self._goto("block" if state == "frame_header" else "magic")
        elif state == "block":
            v = int.from_bytes(hdr, "little")
            kind, size = v >> 1 & 3, v >> 3
            if kind == 3:
                raise InvalidArgument("layer is corrupt (zstd: reserved block type)")
            self._after = ("checksum" if self._checksum else "magic") if v & 1 else "block"
            self._skip = 1 if kind == 1 else size
            if not self._skip:
                self._goto(self._after)
        else:  # skippable frame: its length, then its bytes
            self._skip, self._after = int.from_bytes(hdr, "little"), "magic"
            if not self._skip:
                self._goto("magic")


class _Zstd:
    def __init__(self, raw: _Counted) -> None:
        self._raw = raw
        self._frames = _ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _Fed(raw, self._frames), read_size=CHUNK, read_across_frames=True,  # type: ignore[arg-type]
            closefd=False)

    def read(self, n: int = -1, /) -> bytes:
        try:
            data = self._reader.read(CHUNK if n < 0 else n)
        except zstandard.ZstdError as exc:
            raise InvalidArgument(f"layer is corrupt (zstd: {exc})") from None
        if not data and not self._frames.complete:
            raise InvalidArgument("layer is truncated (zstd stream ends inside a frame)")
        return data


class _Fed:
    """The compressed bytes, shown to the frame walker on their way in."""

    def __init__(self, raw: _Counted, frames: _ZstdFrames) -> None:
        self._raw = raw
        self._frames = frames

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        self._frames.feed(data)
        return data


class LayerStream:
    """The uncompressed tar bytes of one layer, hashed and bounded."""

    def __init__(self, src: BinaryIO, limits: Limits = DEFAULT_LIMITS) -> None:
        self._raw = _Counted(src)
        self.limits = limits
        head = self._raw.head
        self.compression = "none"
        self._inner: _Reader = self._raw
        if head.startswith(GZIP_MAGIC):
            self.compression, self._inner = "gzip", _Gzip(self._raw)
        elif head.startswith(ZSTD_MAGIC):
            self.compression, self._inner = "zstd", _Zstd(self._raw)
        else:
            for magic, kind in _OTHER.items():
                if head.startswith(magic):
                    raise InvalidArgument(f"{kind}-compressed layers are not supported "
                                          "(gzip, zstd or plain tar)")
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._inner.read(n)
        if data:
            self._hash.update(data)
            self.size += len(data)
            lim = self.limits
            if self.size > lim.max_bytes:
                raise InvalidArgument(f"layer is larger than {lim.max_bytes} bytes "
                                      "uncompressed")
            if self.size > lim.ratio_after and self.size > lim.max_ratio * self._raw.count:
                raise InvalidArgument(
                    f"layer looks like a decompression bomb: {self.size} bytes from "
                    f"{self._raw.count} compressed (more than {lim.max_ratio}:1)")
        return data

    @property
    def diff_id(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"
