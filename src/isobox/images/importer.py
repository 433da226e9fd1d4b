"""``docker import``: a root filesystem tarball becomes a one-layer image.

The source may be plain, gzip, bzip2, xz or zstd; it is checked to be a whole
tar archive and stored as one gzip layer (diff_id over the uncompressed tar).
``--change`` instructions edit the config (see ``changes``); the history
entry says where the image came from, as Docker's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from isobox.errors import InvalidArgument
from isobox.images.builder import ImageAssembler, now_rfc3339, register
from isobox.images.changes import apply_changes
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords
from isobox.oci import image_spec as spec
from isobox.oci import reference as refs

__all__ = ["import_rootfs"]


def import_rootfs(store: ContentStore, records: ImageRecords, src: BinaryIO, *,
                  ref: str | None, changes: Sequence[str] = (), message: str | None = None,
                  platform: tuple[str, str] = ("linux", "amd64"), source: str = "-",
                  created: str | None = None, tmpdir: str | None = None) -> str:
    """Import the rootfs tarball read from ``src``; returns the image id.

    ``source`` names where it came from (``-`` for stdin, a file or a URL) for
    the default history comment ``Imported from <source>``; ``message``
    replaces that comment. ``created`` (RFC 3339) defaults to now."""
    if ref is not None:
        parsed = refs.parse(ref)  # refuse a bad name before reading gigabytes
        if parsed.digest is not None:
            raise InvalidArgument(f"cannot import as a digest reference: {ref}")
        ref = str(parsed)
    config = apply_changes(None, changes)  # likewise a bad --change
    os_name, arch = platform
    created = created or now_rfc3339()
    comment = message or f"Imported from {source}"
    asm = ImageAssembler(store, tmpdir=tmpdir)
    asm.add_layer_from_tar(src, what="imported archive")
    image = asm.finish(
        spec.ImageConfig(architecture=arch, os=os_name, created=created,
                         config=config, rootfs=spec.RootFS()),
        [spec.History(created=created, comment=comment)])
    return register(records, image, [ref] if ref else [])
