"""The daemon's read paths: the listing's cached process args follow the
OCI spec's changes (another command may rewrite it at any time)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from isobox.engine.api_views import cached_process_args


def write_spec(d: Path, args: list[str]) -> None:
    (d / "bundle").mkdir(parents=True, exist_ok=True)
    tmp = d / "bundle" / "config.json.tmp"
    tmp.write_text(json.dumps({"process": {"args": args}}))
    os.replace(tmp, d / "bundle" / "config.json")


def test_cached_args_follow_the_spec(tmp_path: Path) -> None:
    d = tmp_path / "c1"
    assert cached_process_args(str(d)) == []
    write_spec(d, ["sh", "-c", "echo hi"])
    assert cached_process_args(str(d)) == ["sh", "-c", "echo hi"]
    got = cached_process_args(str(d))
    got.append("changed by a caller")
    assert cached_process_args(str(d)) == ["sh", "-c", "echo hi"]
    write_spec(d, ["top"])  # replaced: a new inode
    assert cached_process_args(str(d)) == ["top"]
    spec = d / "bundle" / "config.json"
    spec.write_text("{half")  # rewritten in place, not parseable: not kept
    assert cached_process_args(str(d)) == []
    spec.write_text(json.dumps({"process": {"args": ["sleep", "1"]}}))
    assert cached_process_args(str(d)) == ["sleep", "1"]
    spec.unlink()
    assert cached_process_args(str(d)) == []
