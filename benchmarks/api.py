"""The Engine API through the real docker CLI: isoboxd against a private
dockerd (Debian's docker.io), same busybox rootfs, medians in the same run.

    sudo .venv/bin/python benchmarks/api.py [--rounds 20] [--json]

Each round times ``docker run --rm --network none busybox true``, ``docker
ps -a``, ``docker inspect C`` and ``docker images`` once per daemon (one
stopped container exists for inspect). Targets (issue 7): ``run --rm``
through isoboxd at most half dockerd's time; ``ps`` and ``inspect`` no
slower than dockerd.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import PATH, Dockerd, not_root, remove_base, run

BIN = Path(sys.executable).parent
COMMANDS = {
    "run --rm true": ["run", "--rm", "--network", "none", "busybox", "true"],
    "ps -a": ["ps", "-a"],
    "inspect": ["inspect", "bench-idle"],
    "images": ["images"],
}


class Isoboxd:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = base / "isobox.sock"
        self.root = base / "root"
        self.env = {"PATH": PATH, "HOME": str(base), "DOCKER_CONFIG": str(base / "cli"),
                    "DOCKER_HOST": f"unix://{self.sock}", "ISOBOX_CONFIG": str(base / "cfg")}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        run([str(BIN / "isobox"), "--root", str(self.root), "image", "bootstrap", "busybox"],
            env=self.env)
        with open(self.base / "isoboxd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "isoboxd"), "--root", str(self.root), "-H", f"unix://{self.sock}"],
                env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.sock))
                return
            time.sleep(0.05)
        raise RuntimeError("isoboxd did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.decode(errors='replace')}")
    return elapsed


def measure(daemons: dict[str, dict[str, str]], rounds: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {
        name: {c: [] for c in COMMANDS} for name in daemons}
    for env in daemons.values():
        run(["docker", "create", "--name", "bench-idle", "--network", "none", "busybox",
             "true"], env=env)
        for argv in COMMANDS.values():  # warm-up
            _timed(["docker", *argv], env)
    for _ in range(rounds):
        for name, env in daemons.items():  # interleaved: same load for both
            for command, argv in COMMANDS.items():
                samples[name][command].append(_timed(["docker", *argv], env))
    return {name: {c: statistics.median(v) * 1000 for c, v in by.items()}
            for name, by in samples.items()}


def render(result: dict[str, Any]) -> str:
    names = list(result["median_ms"])
    lines = [f"{'command':<16}" + "".join(f"{n:>12}" for n in names)]
    for command in COMMANDS:
        lines.append(f"{command:<16}" + "".join(
            f"{result['median_ms'][n][command]:>10.1f}ms" for n in names))
    lines += [f"rounds: {result['rounds']}", *result["notes"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--without-run", action="store_true",
                        help="leave run --rm out of the rounds (what it leaves behind "
                             "slowed the commands after it: docs/benchmarks.md)")
    args = parser.parse_args()
    if not_root():
        return 2
    if args.without_run:
        del COMMANDS["run --rm true"]
    if shutil.which("docker") is None:
        print("the docker CLI is not installed", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="isobox-api-bench-", dir="/tmp"))
    notes: list[str] = []
    isoboxd = Isoboxd(base / "isobox")
    dockerd: Dockerd | None = None
    try:
        (base / "isobox").mkdir()
        isoboxd.start()
        daemons = {"isoboxd": isoboxd.env}
        if not args.no_docker:
            (base / "docker").mkdir()
            dockerd = Dockerd(base / "docker")
            why = dockerd.start()
            if why is None:
                archive = base / "busybox.tar"
                run(["docker", "save", "-o", str(archive), "busybox"], env=isoboxd.env)
                run(["docker", "load", "-i", str(archive)], env=dockerd.env)
                daemons["dockerd"] = dockerd.env
                notes.append(f"dockerd {dockerd.version}")
            else:
                notes.append(f"dockerd skipped: {why}")
        result = {"rounds": args.rounds, "median_ms": measure(daemons, args.rounds),
                  "notes": notes}
    finally:
        for env in ({"isoboxd": isoboxd.env} | ({"dockerd": dockerd.env} if dockerd else {})
                    ).values():
            with contextlib.suppress(Exception):
                run(["docker", "rm", "-f", "bench-idle"], env=env, check=False)
        isoboxd.stop()
        if dockerd is not None:
            dockerd.stop()
        remove_base(base)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
