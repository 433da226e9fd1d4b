"""A dockerd of our own for tests and benchmarks: its data root, exec root,
pid file and socket under one directory, no bridge, no iptables, in its own
mount namespace; the docker CLI pointed at it (``env``), never at a system
daemon. Started and stopped by pid; what it leaves mounted under its
directory is unmounted when it stops.

    daemon = PrivateDockerd(Path(tempfile.mkdtemp(dir="/tmp")))
    why = daemon.start()        # None when it runs, else why not
    daemon.docker("load", "-i", "x.tar")
    daemon.stop()

Keep the directory short: dockerd's unix sockets under it must fit in 108
bytes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

PATH = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")


class PrivateDockerd:
    def __init__(self, base: Path, extra_args: Sequence[str] = ()) -> None:
        self.base = Path(base)
        self.sock = self.base / "docker.sock"
        self.extra_args = tuple(extra_args)
        self.env = {"PATH": PATH, "HOME": str(self.base),
                    "DOCKER_CONFIG": str(self.base / "cli"),
                    "DOCKER_HOST": f"unix://{self.sock}"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = "?"
        self.driver = ""

    def start(self, drivers: Sequence[str] = ("overlay2",), timeout: float = 60) -> str | None:
        """Start with the first storage driver that works: None when it
        runs, else why not (with the end of its log)."""
        dockerd, docker = shutil.which("dockerd"), shutil.which("docker")
        if dockerd is None or docker is None:
            return "dockerd or docker not installed (Debian: apt-get install docker.io)"
        why: str | None = "no storage driver given"
        for driver in drivers:
            why = self._start(dockerd, driver, timeout)
            if why is None:
                self.driver = driver
                return None
        return why

    def _start(self, dockerd: str, driver: str, timeout: float) -> str | None:
        for sub in ("data", "exec"):
            shutil.rmtree(self.base / sub, ignore_errors=True)
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "daemon.json").write_text("{}")
        unshare = shutil.which("unshare")
        prefix = [unshare, "--mount", "--propagation", "private"] if unshare else []
        argv = [*prefix, dockerd, "--config-file", str(self.base / "daemon.json"),
                "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
                "--pidfile", str(self.base / "docker.pid"), "-H", f"unix://{self.sock}",
                "--bridge=none", "--iptables=false", "--ip6tables=false",
                f"--storage-driver={driver}", *self.extra_args]
        log_path = self.base / f"dockerd-{driver}.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.sock.exists():
                probe = self.docker("version", "--format", "{{.Server.Version}}", check=False,
                                    timeout=20)
                if probe.returncode == 0:
                    self.version = probe.stdout.strip()
                    return None
            time.sleep(0.2)
        self.stop()
        return f"dockerd ({driver}) did not start:\n{self.log_tail()}"

    def docker(self, *args: str, check: bool = True, timeout: float = 300,
               input: bytes | None = None, extra_env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this daemon (text output)."""
        result = subprocess.run(["docker", *args], env={**self.env, **(extra_env or {})},
                                capture_output=True, input=input, timeout=timeout,
                                stdin=subprocess.DEVNULL if input is None else None)
        done = subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    __call__ = docker

    def log_tail(self, size: int = 1500) -> str:
        logs = sorted(self.base.glob("dockerd-*.log"))
        return b"".join(p.read_bytes()[-size:] for p in logs).decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) to our dockerd, SIGKILL to what it started
        and left (its containerd), then unmount what is left under ``base``."""
        if self.proc is None:
            return
        from isobox.linux import libc, mounts, proc

        pid = self.proc.pid
        children = descendants(pid)
        if self.proc.poll() is None:
            os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for child, started in children:
            if proc.is_alive(child, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        self.proc = None
        prefix = str(self.base) + "/"
        for point in sorted((m.mountpoint for m in proc.mountinfo()
                             if m.mountpoint.startswith(prefix)), key=len, reverse=True):
            with contextlib.suppress(OSError):
                libc.umount2(point, mounts.MNT_DETACH)


def descendants(pid: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every descendant of ``pid``."""
    from isobox.linux import proc

    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = proc.stat_fields(int(entry))
            except (OSError, IndexError):
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry))  # ppid
    found: list[tuple[int, int]] = []
    todo, seen = [pid], {pid}
    while todo:
        for child in parents.get(todo.pop(), []):
            if child in seen:
                continue
            seen.add(child)
            try:
                found.append((child, proc.start_time(child)))
            except OSError:
                continue
            todo.append(child)
    return found
