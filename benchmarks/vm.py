"""VM isolation start time and memory, against its floor and against process
isolation, in one run.

1. The floor: a bare QEMU boot of the same guest kernel, same machine and
   accelerator, with a busybox-only initramfs that powers off as soon as
   init runs (isobox's probe image): wall time from starting QEMU to its exit.
2. ``isobox run --rm --isolation=vm busybox true``: wall time of the command,
   the VM restored from its template (made in the warm-up round).
3. The same with templates off (``"vm": {"templates": false}`` in the
   settings file): the VM boots its kernel.
4. ``isobox run --rm --network none busybox true`` (process isolation).
Each round runs the four once, in a rotating order; median, p90 and min of
``--rounds`` (default 10) after one warm-up round.
5. The resident memory of idle VM containers (``run -d ... sleep``), restored
   and booted: QEMU, the keeper and the monitor, RSS and PSS (smaps_rollup),
   for the first of two running at once (restored VMs share the template's
   pages).

Usage (as root):  .venv/bin/python benchmarks/vm.py [--rounds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ISOBOX = str(Path(sys.executable).parent / "isobox")


def isobox(root: str, *args: str, timeout: float = 600, cold: bool = False) -> str:
    """``cold``: with VM templates turned off in the settings file."""
    settings = os.path.join(root, "cold.json" if cold else "daemon.json")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "HOME": root, "ISOBOX_CONFIG": os.path.join(root, "config"),
           "ISOBOX_DAEMON_CONFIG": settings}
    p = subprocess.run([ISOBOX, "--root", root, *args], env=env, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"isobox {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def floor_boot(root: str, accel: str) -> float:
    """Seconds from starting QEMU to its exit, for the probe image."""
    from isobox.vm import initramfs, kernel, qemu

    guest = kernel.find(root)
    initrd = initramfs.ensure_probe(root, guest)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        spec = qemu.VmSpec(guest.kernel, initrd, 128, 1, accel, agent_fd=theirs.fileno())
        start = time.monotonic()
        proc = subprocess.Popen(qemu.command(spec), pass_fds=[theirs.fileno()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return time.monotonic() - start


def timed(fn: Any) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def idle_memory(root: str, cold: bool) -> dict[str, int]:
    cid, other = (isobox(root, "run", "-d", "--isolation=vm", "busybox", "sleep", "3600",
                         cold=cold).strip() for _ in range(2))
    try:
        state = json.loads((Path(root) / "containers" / cid / "state.json").read_text())
        shim, keeper = int(state["shim_pid"]), int(state["pid"])
        qemu = _children(keeper)
        time.sleep(2)  # let the guest settle
        pids = [shim, keeper, *qemu]
        out = {"rss_kib": sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids),
               "pss_kib": sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)}
        out["qemu_rss_kib"] = sum(_kb(f"/proc/{p}/status", "VmRSS") for p in qemu)
        return out
    finally:
        isobox(root, "rm", "-f", cid, other)


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            "min": ordered[0]}


def measure(root: str, rounds: int) -> tuple[str, dict[str, list[float]], dict[str, Any]]:
    """(accelerator, seconds per run kind, idle memory) in the root ``root``."""
    isobox(root, "image", "bootstrap", "busybox")
    isobox(root, "vm", "setup", timeout=1800)
    Path(root, "cold.json").write_text(json.dumps({"vm": {"templates": False}}))
    facts = json.loads(isobox(root, "info", "--format", "json"))
    accel = facts["VM"]["Accelerator"]
    runs = {
        "floor: bare QEMU boot + poweroff": lambda: floor_boot(root, accel),
        "isobox run --rm --isolation=vm": lambda: timed(lambda: isobox(
            root, "run", "--rm", "--isolation=vm", "busybox", "true")),
        "the same, booted (no template)": lambda: timed(lambda: isobox(
            root, "run", "--rm", "--isolation=vm", "busybox", "true", cold=True)),
        "isobox run --rm (process)": lambda: timed(lambda: isobox(
            root, "run", "--rm", "--network", "none", "busybox", "true")),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_no in range(rounds + 1):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            seconds = runs[name]()
            if round_no:  # the first round warms caches (initramfs, layer images)
                samples[name].append(seconds)
    memory = {"restored": idle_memory(root, cold=False), "booted": idle_memory(root, cold=True)}
    return accel, samples, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parent.parent / "src")], check=False)
    with tempfile.TemporaryDirectory(prefix="isobox-bench-vm-") as root:
        try:
            accel, samples, memory = measure(root, args.rounds)
        finally:
            from run import release_roots

            release_roots(Path(root))  # the bridge the VM containers used, the launcher
    results = {name: stats(s) for name, s in samples.items()}
    floor = results["floor: bare QEMU boot + poweroff"]["median"]
    if args.json:
        print(json.dumps({"accel": accel, "results": results, "idle_memory": memory},
                         indent=2))
        return
    print(f"accelerator: {accel}; {args.rounds} rounds; host {os.cpu_count()} CPUs")
    print(f"{'what':<36} {'median s':>9} {'p90 s':>7} {'min s':>7} {'x floor':>8}")
    for name, r in results.items():
        print(f"{name:<36} {r['median']:>9.3f} {r['p90']:>7.3f} {r['min']:>7.3f} "
              f"{r['median'] / floor:>8.2f}")
    for how, m in memory.items():
        print(f"idle VM container, {how}: RSS {m['rss_kib'] / 1024:.1f} MiB "
              f"(QEMU {m['qemu_rss_kib'] / 1024:.1f} MiB), PSS {m['pss_kib'] / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
