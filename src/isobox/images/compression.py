"""Compressed streams for archives and layers: detect gzip, bzip2, xz or zstd
from the magic bytes and read the uncompressed bytes, or write gzip
deterministically (no file name, mtime 0).

Used by ``archive`` (``docker load`` accepts a compressed archive; ``save``
decompresses stored layers), ``importer`` (``docker import`` accepts any of
the four) and ``builder`` (layers are stored gzip-compressed).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import tarfile
import zlib
from typing import BinaryIO, Literal, Protocol, cast

import zstandard

from isobox.errors import InvalidArgument
from isobox.oci import image_spec as spec

CHUNK = 1 << 20
_END_OF_ARCHIVE = ("EOFHeaderError", "EmptyHeaderError")
Kind = Literal["none", "gzip", "bzip2", "xz", "zstd"]
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAGIC: tuple[tuple[bytes, Kind], ...] = (
    (GZIP_MAGIC, "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (ZSTD_MAGIC, "zstd"),
)
_MEDIA_TYPES: dict[Kind, str] = {"none": spec.OCI_LAYER, "gzip": spec.OCI_LAYER_GZIP,
                                 "zstd": spec.OCI_LAYER_ZSTD}


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Peeked:
    """``src`` with its first bytes read ahead and served again."""

    def __init__(self, src: Reader, want: int = 6) -> None:
        self._src = src
        head = b""
        while len(head) < want and (more := src.read(want - len(head))):
            head += more
        self.head = head
        self._pending = head

    def read(self, n: int = -1, /) -> bytes:
        if self._pending:
            cut = len(self._pending) if n is None or n < 0 else n
            data, self._pending = self._pending[:cut], self._pending[cut:]
            return data
        return self._src.read(n)


class _Checked:
    """Translates the decompressors' errors into InvalidArgument."""

    def __init__(self, inner: Reader, kind: Kind, what: str) -> None:
        self._inner = inner
        self.kind = kind
        self._what = what

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._inner.read(CHUNK if n is None or n < 0 else n)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise InvalidArgument(f"{self._what} is corrupt ({self.kind}: {exc})") from None


def detect(head: bytes) -> Kind:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "none"


def decompressed(src: Reader, what: str = "stream") -> _Checked:
    """The uncompressed bytes of ``src``; ``.kind`` says what it was."""
    peeked = _Peeked(src)
    kind = detect(peeked.head)
    inner: Reader
    if kind == "gzip":
        inner = gzip.GzipFile(fileobj=cast(BinaryIO, peeked), mode="rb")
    elif kind == "bzip2":
        inner = bz2.BZ2File(cast(BinaryIO, peeked), mode="rb")
    elif kind == "xz":
        inner = lzma.LZMAFile(cast(BinaryIO, peeked), mode="rb")  # noqa: SIM115
    elif kind == "zstd":
        inner = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, peeked), read_size=CHUNK, read_across_frames=True, closefd=False)
    else:
        inner = peeked
    return _Checked(inner, kind, what)


def sniff(path: str) -> Kind:
    with open(path, "rb") as f:
        return detect(f.read(6))


def layer_media_type(kind: Kind) -> str:
    """The OCI media type of a layer blob compressed with ``kind``."""
    try:
        return _MEDIA_TYPES[kind]
    except KeyError:
        raise InvalidArgument(f"{kind}-compressed layers are not supported "
                              "(gzip, zstd or plain tar)") from None


def digest_stream(src: Reader) -> tuple[str, int]:
    """(sha256 digest, size) of everything ``src`` yields."""
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


class HashingWriter:
    """A write-only sink that hashes and counts what passes through to ``dest``
    (``dest`` may be None: hash only)."""

    def __init__(self, dest: Sink | None = None) -> None:
        self._dest = dest
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._hash.update(data)
        self.size += len(data)
        if self._dest is not None:
            self._dest.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def gzip_writer(dest: Sink, level: int = 6) -> gzip.GzipFile:
    """A reproducible gzip stream: no file name, mtime 0."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=cast(BinaryIO, dest),
                         compresslevel=level, mtime=0)


class StrictTarInfo(tarfile.TarInfo):
    """tarfile ends an archive silently at a corrupt or truncated header;
    refuse instead (a zero block or a clean end of file still ends it)."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            if type(exc).__name__ in _END_OF_ARCHIVE:
                raise
            if tarfile_.offset == 0:
                raise InvalidArgument(f"not a tar archive ({exc})") from None
            raise InvalidArgument(f"corrupt tar header at byte {tarfile_.offset} "
                                  f"({exc})") from None
