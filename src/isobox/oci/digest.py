"""Content digests (``sha256:<hex>``, ``sha512:<hex>``): parsed strictly."""

from __future__ import annotations

import hashlib
import re

from isobox.errors import InvalidArgument

_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def parse(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest; anything else is InvalidArgument."""
    algo, sep, hexpart = digest.partition(":")
    if not sep or algo not in _LENGTHS:
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<hex> or sha512:<hex>")
    if len(hexpart) != _LENGTHS[algo] or not _HEX.fullmatch(hexpart):
        raise InvalidArgument(f"invalid digest {digest!r}: bad {algo} hex")
    return algo, hexpart


def validate(digest: str) -> str:
    parse(digest)
    return digest


def hasher(digest_or_algo: str) -> hashlib._Hash:
    algo = digest_or_algo.partition(":")[0]
    if algo not in _LENGTHS:
        raise InvalidArgument(f"unsupported digest algorithm {algo!r}")
    return hashlib.new(algo)


def of_bytes(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def short_id(digest: str, length: int = 12) -> str:
    """Docker's short image or container id: the first 12 hex digits."""
    return digest.partition(":")[2][:length] if ":" in digest else digest[:length]
