"""Boot reliability and boot time of the utility VM: boot the probe initramfs
(busybox, the virtio-serial drivers, an init that writes a marker to the
agent port and reboots) N times in a row, while CPU burners load the host,
and count the boots that never reach init.

"Seconds to init" is the wall time from starting QEMU to reading the
marker on the agent socket: QEMU's start, firmware, kernel, initramfs
unpacking, loading the virtio drivers. It is the floor under every VM
container start.

Each ``--machine`` is measured in turn (``pc`` and ``microvm``, QEMU's
machine types; ``microvm`` gets a PCIe bus). ``--tsc-khz auto`` passes the
host's TSC frequency as ``tsc_early_khz=``, which skips the guest's TSC
calibration (microvm has no HPET or PM timer to calibrate against).

Usage (as root, with a guest kernel set up by ``isobox vm setup`` or
``--deb``):

    .venv/bin/python benchmarks/vm_boot_loop.py [--boots 50] [--load 2]
        [--machine pc] [--machine microvm] [--state-dir DIR] [--deb FILE]
        [--kernel PATH] [--cmdline-extra ARGS] [--tsc-khz auto|N] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from isobox.errors import IsoboxError
from isobox.vm import accel, kernel

BURNER = "while True: pass"


def start_load(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.DEVNULL)
            for _ in range(count)]


def stop_load(burners: list[subprocess.Popen[bytes]]) -> None:
    for proc in burners:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # by pid: only the burners we started
        proc.wait()


def host_tsc_khz() -> int:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return round(float(line.split(":")[1]) * 1000)
    raise SystemExit("no 'cpu MHz' in /proc/cpuinfo: pass --tsc-khz N")


def last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return "(none)"
    return lines[-1] if lines else "(empty: quiet boot)"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def loop(state_dir: str, guest: kernel.GuestKernel, machine: str, boots: int, timeout: float,
         cmdline: str) -> dict[str, object]:
    times: list[float] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="isobox-vmbench-console-") as tmp:
        console = os.path.join(tmp, "console.log")
        for i in range(boots):
            try:
                times.append(accel.boot_probe(state_dir, guest, "tcg", machine=machine,
                                              timeout=timeout, cmdline_extra=cmdline,
                                              console_log=console))
            except IsoboxError as exc:
                # the kernel's last words tell a hang (where) from a slow boot
                failures.append(f"boot {i + 1}: {exc}; console: {last_line(console)}")
    row: dict[str, object] = {"machine": machine, "cmdline_extra": cmdline, "boots": boots,
                              "failures": len(failures), "failure_detail": failures}
    if times:
        row.update(median=statistics.median(times), p90=percentile(times, 0.9),
                   min=min(times), max=max(times))
    return row


def print_table(rows: list[dict[str, object]], load: int, kernel_path: str) -> None:
    print(f"kernel {kernel_path}; TCG; {load} CPU burner(s); host {os.cpu_count()} CPUs")
    print(f"{'machine':10} {'extra kernel args':28} {'boots':>5} {'failures':>8} "
          f"{'median s':>9} {'p90 s':>7} {'max s':>7}")
    for r in rows:
        stats = [f"{r[k]:.2f}" if k in r else "-" for k in ("median", "p90", "max")]
        print(f"{r['machine']!s:10} {r['cmdline_extra'] or '-'!s:28} {r['boots']:>5} "
              f"{r['failures']:>8} {stats[0]:>9} {stats[1]:>7} {stats[2]:>7}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boots", type=int, default=50)
    ap.add_argument("--load", type=int, default=2, help="CPU-burning processes during the loop")
    ap.add_argument("--machine", action="append", help="pc (default) or microvm; repeatable")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a boot fails")
    ap.add_argument("--state-dir", help="isobox state dir (default: a temporary one with --deb, "
                    "else $ISOBOX_ROOT or /var/lib/isobox)")
    ap.add_argument("--deb", help="set the kernel up from this linux-image .deb")
    ap.add_argument("--kernel", help="boot this kernel image instead (modules from the setup)")
    ap.add_argument("--cmdline-extra", default="")
    ap.add_argument("--tsc-khz", help="'auto' (from /proc/cpuinfo) or kHz: tsc_early_khz=")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (QEMU needs nothing special, but the state dir does)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="isobox-vmbench-") as tmp:
        state_dir = args.state_dir or (tmp if args.deb else
                                       os.environ.get("ISOBOX_ROOT", "/var/lib/isobox"))
        guest = kernel.setup(state_dir, deb=args.deb) if args.deb else kernel.find(state_dir)
        if args.kernel:
            guest = replace(guest, kernel=os.path.abspath(args.kernel))
        cmdline = args.cmdline_extra
        if args.tsc_khz:
            khz = host_tsc_khz() if args.tsc_khz == "auto" else int(args.tsc_khz)
            cmdline = f"{cmdline} tsc_early_khz={khz}".strip()
        accel.boot_probe(state_dir, guest, "tcg", timeout=60)  # builds the image, warms caches
        burners = start_load(args.load)
        rows = []
        try:
            time.sleep(0.5)
            for machine in args.machine or ["pc"]:
                rows.append(loop(state_dir, guest, machine, args.boots, args.timeout, cmdline))
        finally:
            stop_load(burners)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, args.load, guest.kernel)
        for r in rows:
            detail: list[str] = r["failure_detail"]  # type: ignore[assignment]
            for line in detail[:3]:
                print(f"  {r['machine']}: {line}")
            if len(detail) > 3:
                print(f"  {r['machine']}: ... and {len(detail) - 3} more")
    return 0 if all(r["failures"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
