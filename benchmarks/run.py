"""``isobox run`` against ``docker run`` and ``podman run``, on the same image.

Three measurements, all in one run of this script:

1. Latency of ``run --rm --network none busybox true``: each round runs every
   tool once, in an order that rotates each round (so noise on the machine
   falls on all alike); 2 warm-up rounds are not counted. Median, p90, min.
2. 50 detached containers (``run -d --network none busybox sleep 3600``)
   started all at once: the wall time until the last ``run -d`` returned.
3. The resident memory each idle running container adds, with those 50
   running: PSS from /proc/PID/smaps_rollup (shared pages split between the
   processes sharing them) of the per-container processes (isobox's monitor,
   Docker's ``containerd-shim-runc-v2``, podman's ``conmon``) plus the
   processes every container shares (isobox's warm shim launcher and CLI
   command server; dockerd and containerd), minus what those shared
   processes held before the 50 started, divided by 50: what a container
   adds, wherever the tool keeps it. A process shared by all containers is
   a fixed cost whatever the count; its growth is counted. RSS is reported
   alongside. The memory target is judged on the added PSS.

The image is isobox's ``image bootstrap busybox``, saved with ``isobox save``
and loaded into a private dockerd (Debian's docker.io: its own data root,
exec root and socket, no bridge, no iptables, in its own mount namespace)
and into podman (``--root``/``--runroot``/``--tmpdir`` of its own,
``--runtime runc``, cgroupfs). A tool that cannot start is skipped with a
note.

Usage (as root):  .venv/bin/python benchmarks/run.py [--rounds 20] [--parallel 50] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isobox.tools.private_dockerd import PrivateDockerd

ISOBOX = str(Path(sys.executable).parent / "isobox")
PATH = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")


def not_root() -> bool:
    """True (and says so) when this benchmark is not run as root."""
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return True
    return False


def log(message: str) -> None:
    """A progress line on stderr, timestamped."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, env: dict[str, str], timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    # Files, not pipes: a detached container must not hold our pipe open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        # Not subprocess.run(timeout=): its wait polls with sleeps of up to
        # 50 ms, which rounded every latency up to the next step of a 50 ms grid.
        pidfd = os.pidfd_open(p.pid)
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                p.kill()
                p.wait()
                raise subprocess.TimeoutExpired(argv, timeout)
        finally:
            os.close(pidfd)
        p.wait()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(argv, p.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return result


@dataclass
class Tool:
    name: str
    argv: list[str]  # the command line up to the verb
    env: dict[str, str]
    run_flags: list[str] = field(default_factory=list)
    #: the pids of the per-container processes this tool keeps (shim, conmon)
    monitors: Callable[[], list[int]] = lambda: []
    monitor_name: str = ""
    #: processes shared by all the containers (isobox's warm shim launcher and
    #: CLI command server, dockerd and containerd): their growth is counted
    shared: Callable[[], list[int]] = lambda: []
    #: PSS and RSS (KiB) of the shared processes before the containers started
    before: tuple[int, int] = (0, 0)
    samples: list[float] = field(default_factory=list)
    parallel_s: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def run_cmd(self, *args: str) -> list[str]:
        return self.cmd("run", *self.run_flags, *args)

    def timed_run(self) -> float:
        start = time.perf_counter()
        run(self.run_cmd("--rm", "busybox", "true"), env=self.env, timeout=120)
        return time.perf_counter() - start

    def remove_all(self) -> None:
        ids = run(self.cmd("ps", "-aq"), env=self.env).stdout.decode().split()
        if ids:
            run(self.cmd("rm", "-f", *ids), env=self.env, timeout=600)


# ---------------------------------------------------------------- processes


def _cmdlines() -> dict[int, list[str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
    return out


def _kb(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _tree(top: int) -> list[int]:
    """``top`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [top]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def pss_rss(pids: list[int] | tuple[int, ...]) -> tuple[int, int]:
    return (sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids),
            sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids))


def memory_of(pids: list[int], containers: int, shared: tuple[int, ...] | list[int] = (),
              before: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """What ``containers`` idle containers added: the PSS and RSS of their
    own processes (``pids``) and of the ``shared`` ones, less what the
    shared ones held before they started (``before``), over the count."""
    pss, rss = pss_rss(pids)
    shared_pss, shared_rss = pss_rss(shared)
    per = max(containers, 1)
    added_pss = pss + shared_pss - before[0]
    added_rss = rss + shared_rss - before[1]
    return {"processes": len(pids), "containers": containers,
            "shared_processes": len(shared),
            "shared_pss_kib_before": before[0], "shared_pss_kib_after": shared_pss,
            "shared_rss_kib_before": before[1], "shared_rss_kib_after": shared_rss,
            "monitor_pss_kib_per_container": round(pss / per),
            "rss_kib_per_container": round(added_rss / per),
            "pss_kib_per_container": round(added_pss / per)}


# ---------------------------------------------------------------- the three tools


def isobox_tool(base: Path) -> Tool:
    root = base / "isobox"
    env = {"PATH": PATH, "HOME": str(base), "ISOBOX_CONFIG": str(base / "isobox-config"),
           "LANG": "C.UTF-8"}
    prefix = str(root / "containers") + "/"
    launcher = str(root / "run" / "shim-zygote.sock")
    server = str(root / "run" / "cli-server.sock")

    def shims() -> list[int]:
        # A monitor is either its own interpreter (python -m isobox.shim DIR) or
        # forked by the root's warm launcher (its command line, named isobox-shim).
        found = []
        for pid, argv in _cmdlines().items():
            if "isobox.shim" in argv and argv[-1] != "isobox.shim":
                if argv[argv.index("isobox.shim") + 1].startswith(prefix):
                    found.append(pid)
            elif launcher in argv and _comm(pid) == "isobox-shim":
                found.append(pid)
        return found

    def shared() -> list[int]:
        # The warm launcher and the CLI's command server (their forks, the
        # monitors and the commands, take other names).
        return [pid for pid, argv in _cmdlines().items()
                if (launcher in argv and _comm(pid) not in ("isobox-shim", ""))
                or (server in argv and _comm(pid) not in ("isobox", ""))]

    tool = Tool("isobox", [ISOBOX, "--root", str(root)], env, ["--network", "none"],
                shims, "isobox monitor", shared=shared)
    run(tool.cmd("image", "bootstrap", "busybox"), env=env)
    return tool


#: The private dockerd (``isobox.tools.private_dockerd``): one helper for the
#: benchmarks and the tests.
Dockerd = PrivateDockerd


def docker_tool(base: Path, archive: Path, notes: list[str]) -> tuple[Tool | None, Dockerd]:
    daemon = Dockerd(base)
    why = daemon.start()
    if why is not None:
        notes.append(f"docker skipped: {why}")
        return None, daemon
    address = str(base / "exec")

    def shims() -> list[int]:
        return [pid for pid, argv in _cmdlines().items()
                if argv and os.path.basename(argv[0]) == "containerd-shim-runc-v2"
                and any(a.startswith(address) for a in argv)]

    def daemons() -> list[int]:
        assert daemon.proc is not None
        return [pid for pid in _tree(daemon.proc.pid)
                if os.path.basename(_cmdlines().get(pid, [""])[0]) in ("dockerd", "containerd")]

    tool = Tool("docker", ["docker"], daemon.env, ["--network", "none"], shims,
                "containerd-shim-runc-v2", shared=daemons)
    run(tool.cmd("load", "-i", str(archive)), env=daemon.env)
    return tool, daemon


def podman_tool(base: Path, archive: Path, notes: list[str]) -> Tool | None:
    if shutil.which("podman") is None:
        notes.append("podman skipped: not installed (apt-get install podman)")
        return None
    env = {"PATH": PATH, "HOME": str(base), "XDG_RUNTIME_DIR": str(base / "xdg")}
    argv = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
            "--tmpdir", str(base / "tmp"), "--runtime", "runc", "--cgroup-manager", "cgroupfs",
            "--events-backend", "none", "--storage-driver", "overlay"]
    # podman's default rlimits (nofile and nproc at their maximum) exceed what
    # this host lets even root set (no CAP_SYS_RESOURCE): give it what fits.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    flags = ["--network", "none", "--ulimit", f"nofile={nofile}:{nofile}",
             "--ulimit", "nproc=4096:4096"]
    userdata = str(base / "run") + "/"

    def conmons() -> list[int]:
        return [pid for pid, args in _cmdlines().items()
                if args and os.path.basename(args[0]) == "conmon"
                and any(a.startswith(userdata) for a in args)]

    tool = Tool("podman", argv, env, flags, conmons, "conmon")
    try:
        run(tool.cmd("load", "-i", str(archive)), env=env)
        tool.timed_run()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        notes.append(f"podman skipped: {exc}")
        return None
    return tool


# ---------------------------------------------------------------- measuring


def latency(tools: list[Tool], rounds: int, warmup: int = 2) -> None:
    for i in range(warmup + rounds):
        shift = i % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            elapsed = tool.timed_run()
            if i >= warmup:
                tool.samples.append(elapsed * 1000)


def parallel_start(tool: Tool, count: int) -> list[str]:
    """``count`` detached containers started at once; their ids."""
    ids: list[str] = []
    failures: list[str] = []
    with contextlib.ExitStack() as files:
        start = time.perf_counter()
        procs = []
        for _ in range(count):
            out = files.enter_context(tempfile.TemporaryFile())
            procs.append((out, subprocess.Popen(
                tool.run_cmd("-d", "busybox", "sleep", "3600"), env=tool.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)))
        for _, p in procs:
            p.wait(600)
        tool.parallel_s = time.perf_counter() - start
        for out, p in procs:
            out.seek(0)
            text = out.read().decode(errors="replace").strip()
            (ids if p.returncode == 0 else failures).append(
                text.splitlines()[-1] if text else "")
    if failures:
        raise RuntimeError(f"{tool.name}: {len(failures)} of {count} failed: {failures[0]}")
    return ids


def idle_memory(tool: Tool, count: int, settle: float = 2.0) -> None:
    time.sleep(settle)
    pids = tool.monitors()
    tool.memory = memory_of(pids, count, tool.shared(), tool.before)
    tool.memory["process"] = tool.monitor_name


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(tools: list[Tool], notes: list[str], args: argparse.Namespace,
            load_before: str) -> dict[str, Any]:
    docker = next((t for t in tools if t.name == "docker"), None)
    rows = []
    for tool in tools:
        median = statistics.median(tool.samples)
        rows.append({
            "tool": tool.name, "runs": len(tool.samples), "median_ms": round(median, 1),
            "p90_ms": round(pct(tool.samples, 90), 1), "min_ms": round(min(tool.samples), 1),
            "ratio_to_docker": round(median / statistics.median(docker.samples), 2)
            if docker else None,
            f"parallel_{args.parallel}_s": round(tool.parallel_s or 0, 2),
            "memory": tool.memory,
        })
    targets = {}
    isobox = next(t for t in tools if t.name == "isobox")
    if docker is not None:
        ratio = statistics.median(isobox.samples) / statistics.median(docker.samples)
        targets["latency_at_most_1/5_of_docker"] = {"ratio": round(ratio, 2),
                                                    "met": ratio <= 0.2}
        mine = isobox.memory["pss_kib_per_container"]
        theirs = docker.memory["pss_kib_per_container"]
        targets["memory_per_container_at_most_dockers"] = {
            "isobox_pss_kib": mine, "docker_pss_kib": theirs,
            "isobox_rss_kib": isobox.memory["rss_kib_per_container"],
            "docker_rss_kib": docker.memory["rss_kib_per_container"], "met": mine <= theirs}
    machine = _machine()
    machine["loadavg_before"] = load_before
    return {"date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine,
            "rounds": args.rounds, "parallel": args.parallel, "results": rows,
            "targets": targets, "notes": notes}


def _machine() -> dict[str, str]:
    facts = {"kernel": platform.release(), "cpus": str(os.cpu_count()),
             "python": platform.python_version()}
    facts["loadavg_after"] = _loadavg()
    for name, argv in (("docker", ["dockerd", "--version"]), ("podman", ["podman", "--version"]),
                       ("runc", ["runc", "--version"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                                 stdin=subprocess.DEVNULL).stdout
            facts[name] = out.splitlines()[0] if out else "?"
    return facts


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split(" ")[0]
    except OSError:
        return "?"


def render(result: dict[str, Any]) -> str:
    n = result["parallel"]
    lines = [
        f"| tool   | run --rm median ms | p90 ms | min ms | ratio to docker | {n} x run -d, "
        "wall s | per-container process | RSS KiB added / container | PSS KiB added / container |",
        "|--------|------:|------:|------:|------:|------:|--------|------:|------:|",
    ]
    for r in result["results"]:
        m = r["memory"]
        ratio = f"{r['ratio_to_docker']:.2f}x" if r["ratio_to_docker"] is not None else "-"
        lines.append(
            f"| {r['tool']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f} | "
            f"{ratio} | {r[f'parallel_{n}_s']:.2f} | {m.get('process', '-')} "
            f"({m.get('processes', 0)}) | {m.get('rss_kib_per_container', 0)} | "
            f"{m.get('pss_kib_per_container', 0)} |")
    for name, target in result["targets"].items():
        lines.append(f"\ntarget {name}: {'met' if target['met'] else 'MISSED'} "
                     f"({', '.join(f'{k}={v}' for k, v in target.items() if k != 'met')})")
    for r in result["results"]:
        m = r["memory"]
        if m.get("shared_processes"):
            lines.append(f"\n{r['tool']}: shared processes ({m['shared_processes']}): PSS "
                         f"{m['shared_pss_kib_before']} KiB before, "
                         f"{m['shared_pss_kib_after']} KiB with {n} containers; the "
                         f"per-container processes alone: PSS "
                         f"{m['monitor_pss_kib_per_container']} KiB per container")
    lines += [f"\nnote: {note}" for note in result["notes"]]
    m = result["machine"]
    lines.append(f"\n{m.get('cpus')} CPUs, Linux {m.get('kernel')}, 1-minute load "
                 f"{m.get('loadavg_before')} before and {m.get('loadavg_after')} after")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed runs per tool (20)")
    parser.add_argument("--parallel", type=int, default=50,
                        help="detached containers started at once (50)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--no-podman", action="store_true")
    args = parser.parse_args()
    if not_root():
        return 2

    notes: list[str] = []
    load_before = _loadavg()
    # A short path: dockerd's unix sockets under it must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="isobox-run-bench-", dir="/tmp"))
    daemon: Dockerd | None = None
    tools: list[Tool] = []
    try:
        for sub in ("isobox", "docker", "podman"):
            (base / sub).mkdir()
        log("isobox: bootstrap busybox")
        isobox = isobox_tool(base)
        tools.append(isobox)
        archive = base / "busybox.tar"
        run(isobox.cmd("save", "-o", str(archive), "busybox"), env=isobox.env)
        if not args.no_docker:
            log("docker: private dockerd, load the same image")
            docker, daemon = docker_tool(base / "docker", archive, notes)
            if docker is not None:
                tools.append(docker)
        if not args.no_podman:
            log("podman: load the same image")
            podman = podman_tool(base / "podman", archive, notes)
            if podman is not None:
                tools.append(podman)
        log(f"latency: {args.rounds} rounds (+2 warm-up) of {', '.join(t.name for t in tools)}")
        latency(tools, args.rounds)
        for tool in tools:
            log(f"{tool.name}: {args.parallel} x run -d at once")
            tool.before = pss_rss(tool.shared())
            ids = parallel_start(tool, args.parallel)
            idle_memory(tool, len(ids))
            log(f"{tool.name}: {tool.parallel_s:.2f}s; removing them")
            tool.remove_all()
        result = summary(tools, notes, args, load_before)
    finally:
        for tool in tools:
            with contextlib.suppress(Exception):
                tool.remove_all()
        if daemon is not None:
            daemon.stop()
        remove_base(base)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def remove_base(base: Path) -> None:
    """Remove a benchmark's work directory, and first what its isobox roots
    made outside it (see ``release_roots``)."""
    release_roots(base)
    _unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)


def release_roots(base: Path) -> None:
    """The host state of the isobox roots at most two levels below ``base``:
    their networks (bridges, nftables table, DNS), warm launchers and CLI
    command servers."""
    import signal

    from isobox.engine.networking import open_manager

    for depth in ("", "*/", "*/*/"):
        for pid_file in [*base.glob(f"{depth}run/shim-zygote.pid"),
                         *base.glob(f"{depth}run/cli-server.pid")]:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        for network in base.glob(f"{depth}network"):
            nets = open_manager(str(network.parent))
            try:
                nets.destroy()
            finally:
                nets.close()


def _unmount_under(base: Path) -> None:
    prefix = str(base) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(prefix):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
