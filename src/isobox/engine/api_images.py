"""Images in the Engine API's shapes, for ``isoboxd``: the list
(``GET /images/json``), history, remove and prune reports, and pull/push
as streams of Docker's JSON progress objects."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isobox.engine.images import ImageService


def list_images(images: ImageService, *, all_images: bool = False,
                filters: Sequence[str] = (), digests: bool = True) -> list[dict[str, Any]]:
    """One summary per image (the engine's rows are one per tag)."""
    by_id: dict[str, dict[str, Any]] = {}
    for row in images.rows(all_images=all_images, filters=filters):
        item = by_id.get(row["ID"])
        if item is None:
            record = images.get(row["ID"])
            item = by_id[row["ID"]] = {
                "Id": row["ID"], "ParentId": "", "RepoTags": [],
                "RepoDigests": images.repo_digests(record) if digests else [],
                "Created": int(row["Created"] or 0), "Size": row["Size"], "SharedSize": -1,
                "VirtualSize": row["Size"], "Labels": row["Labels"] or {},
                "Containers": row["Containers"],
            }
        if row["Repository"] != "<none>":
            item["RepoTags"].append(f"{row['Repository']}:{row['Tag']}")
    out = list(by_id.values())
    out.sort(key=lambda i: -i["Created"])
    return out


def history(images: ImageService, name: str) -> list[dict[str, Any]]:
    return [{"Id": r["ID"], "Created": int(r["Created"] or 0), "CreatedBy": r["CreatedBy"],
             "Tags": r["Tags"], "Size": r["Size"], "Comment": r["Comment"]}
            for r in images.history(name)]


def report_lines(lines: Sequence[str]) -> list[dict[str, str]]:
    """``Untagged: x`` / ``Deleted: y`` lines as ``[{"Untagged": x}, {"Deleted": y}]``."""
    out = []
    for line in lines:
        key, _, value = line.partition(": ")
        out.append({key.capitalize(): value})
    return out


def pull_stream(images: ImageService, name: str, *, platform: str | None = None
                ) -> Iterator[dict[str, Any]]:
    """Docker's JSON progress of a pull, ending with its status line."""
    from isobox.registry import json_stream

    had = True
    try:
        images.get(name)
    except Exception:
        had = False
    failed = False
    for line in json_stream(lambda progress: images.pull(name, platform=platform,
                                                         progress=progress)):
        failed = failed or "error" in line
        yield line
    if not failed:
        what = "Image is up to date for" if had else "Downloaded newer image for"
        yield {"status": f"Status: {what} {name}"}


def push_stream(images: ImageService, name: str) -> Iterator[dict[str, Any]]:
    from isobox.registry import json_stream

    yield from json_stream(lambda progress: images.push(name, progress=progress))


def image_ref(name: str, tag: str) -> str:
    """``fromImage`` and ``tag`` of the API as one reference (tag may be a digest)."""
    if not tag:
        return name
    if tag.startswith("sha256:"):
        return f"{name}@{tag}"
    return f"{name}:{tag}"
