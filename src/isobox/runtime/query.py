"""``state``, ``list``, ``ps`` and ``events``: reading containers, changing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from isobox.errors import Conflict
from isobox.oci.runtime_spec import encode
from isobox.runtime.cgroup import manager_for
from isobox.runtime.state import Container, Status

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any


def state_json(root: str, container_id: str) -> str:
    container = Container.load(root, container_id)
    state = json.loads(encode(container.oci_state()))
    state["rootfs"] = container.record.rootfs
    state["created"] = container.record.created
    state["owner"] = container.record.owner
    state.setdefault("annotations", {})
    return json.dumps(state, indent=2)


def list_rows(root: str) -> list[dict[str, Any]]:
    rows = []
    for c in Container.all(root):
        status = c.status()
        rows.append({
            "ociVersion": c.record.config.oci_version, "id": c.id,
            "pid": c.record.pid if status is not Status.STOPPED else 0,
            "status": str(status), "bundle": c.record.bundle, "rootfs": c.record.rootfs,
            "created": c.record.created, "owner": c.record.owner,
            "annotations": c.record.config.annotations or {},
        })
    return rows


def format_list(rows: list[dict[str, Any]], fmt: str, quiet: bool) -> str:
    if quiet:
        return "".join(f"{r['id']}\n" for r in rows)
    if fmt == "json":
        return json.dumps(rows) + "\n"
    header = ("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")
    table = [header] + [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"],
                         r["owner"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip() + "\n" for row in table)


def pids(root: str, container_id: str) -> list[int]:
    container = Container.load(root, container_id)
    if container.status() is Status.STOPPED:
        return []
    manager = manager_for(container.record)
    return manager.pids() if manager.exists() else [container.record.pid]


def ps_table(root: str, container_id: str, ps_args: list[str]) -> str:
    wanted = set(pids(root, container_id))
    out = subprocess.run(["ps", *(ps_args or ["-ef"])], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True, timeout=30).stdout
    lines = out.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise Conflict("ps output has no PID column")
    column = header.index("PID")
    kept = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            kept.append(line)
    return "\n".join(kept) + "\n"


def stats_event(container: Container) -> dict[str, Any]:
    manager = manager_for(container.record)
    return {"type": "stats", "id": container.id, "data": manager.stats()}


def events(root: str, container_id: str, *, stats_only: bool, interval: float) -> None:
    container = Container.load(root, container_id)
    if container.status() is Status.STOPPED:
        raise Conflict(f"container {container_id} is stopped")
    if stats_only:
        sys.stdout.write(json.dumps(stats_event(container)) + "\n")
        return
    while container.status() is not Status.STOPPED:
        sys.stdout.write(json.dumps(stats_event(container)) + "\n")
        sys.stdout.flush()
        time.sleep(interval)


def exists(root: str, container_id: str) -> bool:
    return os.path.exists(os.path.join(root, container_id, "state.json"))
