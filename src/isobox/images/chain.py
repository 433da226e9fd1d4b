"""OCI chain ids: the identity of a stack of layers.

ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
"""

from __future__ import annotations

from collections.abc import Sequence

from isobox.oci import digest as digests


def chain_id(parent: str | None, diff_id: str) -> str:
    """The chain id of ``diff_id`` applied on top of the chain ``parent``."""
    digests.validate(diff_id)
    if parent is None:
        return diff_id
    digests.validate(parent)
    return digests.of_bytes(f"{parent} {diff_id}".encode())


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain id of every prefix of ``diff_ids`` (bottom layer first)."""
    out: list[str] = []
    parent: str | None = None
    for diff_id in diff_ids:
        parent = chain_id(parent, diff_id)
        out.append(parent)
    return out
