"""Start-up cost of isobox-runtime against runc (and crun, where it works).

Each round runs ``<runtime> --root <own root> run --bundle <bundle> <id>`` of a
busybox bundle whose process is ``true``, once per runtime, in an order that
rotates every round so that noise on the machine falls on all of them alike.
The same is done for ``create``, ``start`` and ``delete`` timed one by one.
Two warm-up rounds are not counted.

Usage (as root):  .venv/bin/python benchmarks/runtime.py [--runs 30] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isobox.tools.busybox_bundle import make_bundle, make_rootfs

ISOBOX = str(Path(sys.executable).parent / "isobox-runtime")


@dataclass
class Runtime:
    name: str
    binary: str
    root: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def add(self, phase: str, seconds: float) -> None:
        self.samples.setdefault(phase, []).append(seconds * 1000)


def _timed(argv: list[str]) -> float:
    # stderr to a file, not a pipe: after create the container holds it open.
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=err, timeout=60)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{argv} exited {p.returncode}: {err.read().decode().strip()}")
    return elapsed


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # exited; its reaper has not waited yet
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.001)
    raise RuntimeError(f"container init {pid} still running after {timeout}s")


def one_round(rt: Runtime, bundle: str, cgroup_parent: str, workdir: Path,
              record: bool, settle: float) -> None:
    # settle: a pause before each timed command, so that the kernel's deferred
    # work from the previous one (namespace and cgroup teardown in kworkers,
    # RCU callbacks) does not land on the next command, whichever runtime it is.
    cid = f"bench-{uuid.uuid4().hex[:10]}"
    _set_cgroup(bundle, f"{cgroup_parent}/{cid}")
    time.sleep(settle)
    t_run = _timed(rt.cmd("run", "--bundle", bundle, cid))

    cid = f"bench-{uuid.uuid4().hex[:10]}"
    _set_cgroup(bundle, f"{cgroup_parent}/{cid}")
    pid_file = workdir / f"{cid}.pid"
    time.sleep(settle)
    t_create = _timed(rt.cmd("create", "--bundle", bundle, "--pid-file", str(pid_file), cid))
    pid = int(pid_file.read_text())
    time.sleep(settle)
    t_start = _timed(rt.cmd("start", cid))
    _wait_gone(pid)
    time.sleep(settle)
    t_delete = _timed(rt.cmd("delete", cid))
    pid_file.unlink()
    if record:
        rt.add("run", t_run)
        rt.add("create", t_create)
        rt.add("start", t_start)
        rt.add("delete", t_delete)
        rt.add("create+start+delete", t_create + t_start + t_delete)


def _set_cgroup(bundle: str, path: str) -> None:
    config = Path(bundle) / "config.json"
    spec = json.loads(config.read_text())
    spec["linux"]["cgroupsPath"] = path
    config.write_text(json.dumps(spec))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(runtimes: list[Runtime]) -> dict[str, list[dict[str, Any]]]:
    base = next((r for r in runtimes if r.name == "runc"), None)
    table: dict[str, list[dict[str, Any]]] = {}
    for phase in ("run", "create", "start", "delete", "create+start+delete"):
        rows = []
        base_median = statistics.median(base.samples[phase]) if base else None
        for rt in runtimes:
            values = rt.samples[phase]
            median = statistics.median(values)
            rows.append({
                "runtime": rt.name, "n": len(values),
                "median_ms": round(median, 1), "p90_ms": round(percentile(values, 0.9), 1),
                "min_ms": round(min(values), 1),
                "ratio_to_runc": round(median / base_median, 2) if base_median else None,
            })
        table[phase] = rows
    return table


def render(table: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for phase, rows in table.items():
        lines.append(f"\n{phase}:")
        lines.append(f"| {'runtime':<8} | {'median ms':>9} | {'p90 ms':>7} | {'min ms':>7} "
                     f"| {'ratio to runc':>13} |")
        lines.append(f"|{'-' * 10}|{'-' * 10}:|{'-' * 8}:|{'-' * 8}:|{'-' * 14}:|")
        for r in rows:
            ratio = f"{r['ratio_to_runc']:.2f}x" if r["ratio_to_runc"] is not None else "-"
            lines.append(f"| {r['runtime']:<8} | {r['median_ms']:>9.1f} | {r['p90_ms']:>7.1f} "
                         f"| {r['min_ms']:>7.1f} | {ratio:>13} |")
    return "\n".join(lines)


def _works(binary: str, bundle: str, root: str, cgroup_parent: str) -> str | None:
    cid = f"probe-{uuid.uuid4().hex[:8]}"
    _set_cgroup(bundle, f"{cgroup_parent}/{cid}")
    p = subprocess.run([binary, "--root", root, "run", "--bundle", bundle, cid],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    subprocess.run([binary, "--root", root, "delete", "--force", cid], capture_output=True,
                   timeout=60)
    if p.returncode != 0:
        return f"exit {p.returncode}: {p.stderr.decode(errors='replace').strip()[-300:]}"
    return None


def _cleanup(runtimes: list[Runtime], cgroup_parent: str) -> None:
    for rt in runtimes:
        if os.path.isdir(rt.root):
            for entry in os.listdir(rt.root):
                subprocess.run(rt.cmd("delete", "--force", entry), capture_output=True,
                               timeout=60)
    base = Path("/sys/fs/cgroup")
    for hierarchy in base.iterdir() if base.exists() else []:
        top = hierarchy / cgroup_parent.lstrip("/")
        if top.is_dir():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                            key=lambda p: len(str(p)), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="counted rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds not counted (default 2)")
    parser.add_argument("--settle", type=float, default=0.05,
                        help="seconds to pause before each timed command (default 0.05)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--isobox", default=ISOBOX, help="isobox-runtime binary")
    a = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark needs root", file=sys.stderr)
        return 2

    notes: list[str] = []
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="isobox-bench-"))
    cgroup_parent = f"/isobox-bench-{uuid.uuid4().hex[:8]}"
    runtimes: list[Runtime] = []
    try:
        rootfs = make_rootfs(str(work / "rootfs"))
        bundle = str(work / "bundle")
        spec = make_bundle(bundle, ["true"], terminal=False, rootfs=rootfs)
        spec["root"]["readonly"] = True
        (Path(bundle) / "config.json").write_text(json.dumps(spec))
        candidates = [("runc", shutil.which("runc")), ("isobox", a.isobox),
                      ("crun", shutil.which("crun"))]
        for name, binary in candidates:
            if binary is None:
                notes.append(f"{name}: not installed, skipped")
                continue
            rt = Runtime(name, binary, str(work / f"root-{name}"))
            problem = _works(binary, bundle, rt.root, cgroup_parent)
            if problem:
                notes.append(f"{name}: does not run the bundle here, skipped ({problem})")
                if name == "isobox":
                    raise SystemExit(f"isobox-runtime cannot run the bundle: {problem}")
                continue
            runtimes.append(rt)
        failures: dict[str, list[str]] = {}
        for i in range(a.warmup + a.runs):
            shift = i % len(runtimes)
            for rt in runtimes[shift:] + runtimes[:shift]:
                while True:
                    try:
                        one_round(rt, bundle, cgroup_parent, work, record=i >= a.warmup,
                                  settle=a.settle)
                        break
                    except RuntimeError as exc:
                        # A failed command: clean up and repeat the round, but say so.
                        failures.setdefault(rt.name, []).append(str(exc).split(": ", 1)[-1])
                        _cleanup([rt], cgroup_parent)
                        if len(failures[rt.name]) > 10:
                            raise
        for name, errors in failures.items():
            notes.append(f"{name}: {len(errors)} failed command(s), rounds repeated; "
                         f"first: {errors[0]}")
        table = summarise(runtimes)
    finally:
        _cleanup(runtimes, cgroup_parent)
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}",
        "python": platform.python_version(),
        "runs": a.runs, "warmup": a.warmup, "settle_s": a.settle,
        "loadavg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "versions": {rt.name: _version(rt.binary) for rt in runtimes},
        "notes": notes,
    }
    if a.json:
        print(json.dumps({"meta": meta, "results": table}, indent=2))
    else:
        print(f"{meta['date']}  {meta['machine']}  python {meta['python']}  "
              f"runs={a.runs} warmup={a.warmup} settle={a.settle}s  load(1m) {meta['loadavg_1m']['before']} -> "
              f"{meta['loadavg_1m']['after']}")
        for name, version in meta["versions"].items():
            print(f"  {name}: {version}")
        for note in notes:
            print(f"  note: {note}")
        print(render(table))
    return 0


def _version(binary: str) -> str:
    p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return p.stdout.splitlines()[0] if p.stdout else "?"


if __name__ == "__main__":
    sys.exit(main())
