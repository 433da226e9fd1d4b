"""What the isoboxd tests share: a private root with busybox, an ``isoboxd``
on a socket in a temporary directory (started and stopped by pid), and the
real ``docker`` CLI pointed at it with its own DOCKER_CONFIG."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
ISOBOX = str(BIN / "isobox")
ISOBOXD = str(BIN / "isoboxd")
DOCKER = shutil.which("docker")

needs_docker = pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")


def base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(home), "ISOBOX_CONFIG": str(home / "isobox-config"),
            "LANG": "C.UTF-8", "TZ": "UTC"}


class Daemon:
    """One isoboxd process over ``root``, listening on ``sock``."""

    def __init__(self, root: Path, sock: Path, home: Path, extra: tuple[str, ...] = ()) -> None:
        self.root, self.sock, self.home = root, sock, home
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "isoboxd.log"

    def start(self, timeout: float = 30) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [ISOBOXD, "--root", str(self.root), "-H", f"unix://{self.sock}", *self.extra],
                env=base_env(self.home), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"isoboxd exited: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.sock))
                return
            time.sleep(0.05)
        raise AssertionError("isoboxd did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def env(self) -> dict[str, str]:
        return {**base_env(self.home), "DOCKER_HOST": f"unix://{self.sock}",
                "DOCKER_CONFIG": str(self.home / "docker-config")}

    def docker(self, *args: str, check: bool = True, input: bytes | None = None,
               timeout: float = 60, cwd: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
        assert DOCKER is not None
        result = subprocess.run([DOCKER, *args], env=self.env, capture_output=True,
                                input=input, timeout=timeout, cwd=cwd,
                                stdin=subprocess.DEVNULL if input is None else None)
        done = subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def isobox(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([ISOBOX, "--root", str(self.root), *args],
                                env=base_env(self.home), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"isobox {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def http(self) -> Any:
        import httpx

        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.sock)),
                            base_url="http://isoboxd", timeout=30)

    def remove_all(self) -> None:
        ids = self.isobox("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self.isobox("rm", "-f", *ids, check=False)


@contextlib.contextmanager
def running_daemon(tmp: Path, extra: tuple[str, ...] = ()) -> Iterator[Daemon]:
    root, home = tmp / "root", tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    # Short: a unix socket's path must fit in 108 bytes.
    sockdir = Path(subprocess.check_output(["mktemp", "-d", "/tmp/ibd-XXXXXX"], text=True)
                   .strip())
    daemon = Daemon(root, sockdir / "d.sock", home, extra)
    try:
        if not (root / "images.db").exists():
            daemon.isobox("image", "bootstrap", "busybox")
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        daemon.remove_all()
        shutil.rmtree(sockdir, ignore_errors=True)
        from cli_containers_support import destroy_networks, stop_launchers

        stop_launchers(root)
        destroy_networks(root)  # the root's bridges and nftables table
