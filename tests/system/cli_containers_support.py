"""What the container CLI tests share: the real ``isobox`` binary on a private
root per module (busybox bootstrapped once), and a per-test check that the
test's containers are gone without a trace: no mount under the root, no
monitor (shim) process, no runtime state, no cgroup, and nothing of their
networks (containers join the default bridge): no endpoint, lease, veth, tap
or nftables rule. At the end of a module the root's networks are destroyed
(bridge, nftables table, DNS server) and checked gone from the host.

Imported by ``test_cli_containers.py`` and ``test_cli_containers_monitor.py``
(pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ISOBOX = str(Path(sys.executable).parent / "isobox")
FULL_ID = re.compile(r"[0-9a-f]{64}")
PS_HEADER = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]


class Isobox:
    """``isobox --root ROOT ...`` with a private HOME and ISOBOX_CONFIG."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HOME": str(home), "ISOBOX_CONFIG": str(home / "isobox-config"),
                    "LANG": "C.UTF-8", "TZ": "UTC"}

    def argv(self, *args: str) -> list[str]:
        return [ISOBOX, "--root", str(self.root), *args]

    def __call__(self, *args: str, check: bool = True, input: bytes | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a container started with -d must not hold our pipe.
        result = subprocess.run(self.argv(*args), env=self.env, capture_output=True,
                                input=input, timeout=timeout,
                                stdin=subprocess.DEVNULL if input is None else None)
        done = subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"isobox {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*args), env=self.env, **kw)

    def fails(self, *args: str, code: int, match: str = "") -> str:
        """Run, expect exit ``code`` and one line on stderr containing ``match``."""
        result = self(*args, check=False)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"want one line on stderr, got {result.stderr!r}"
        assert match in lines[0], lines[0]
        return lines[0]

    def inspect(self, ref: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self("inspect", ref).stdout)
        return found[0]

    def fmt(self, ref: str, template: str) -> str:
        return self("inspect", "-f", template, ref).stdout.strip()

    def container_dir(self, cid: str) -> Path:
        return self.root / "containers" / cid

    def shim_state(self, cid: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            (self.container_dir(cid) / "state.json").read_text())
        return state

    def ids(self) -> list[str]:
        return self("ps", "-aq", "--no-trunc").stdout.split()

    def names(self, *extra: str) -> dict[str, str]:
        """name -> Docker's status words, for every container."""
        out = self("ps", "-a", *extra, "--format", "{{.Names}}\t{{.Status}}").stdout
        return dict(line.split("\t", 1) for line in out.splitlines())


def until(predicate: Callable[[], Any], timeout: float = 20, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def table(text: str) -> list[list[str]]:
    """Docker's tabwriter output as cells (columns are 2+ spaces apart)."""
    return [re.split(r" {2,}", line.rstrip()) for line in text.splitlines()]


def mounts_under(root: Path) -> list[str]:
    """Mount points under ``root``, from /proc/self/mountinfo (field 5,
    with the kernel's octal escapes)."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                           line.split()[4])
            if point.startswith(prefix) or point == str(root):
                found.append(point)
    return found


def live_processes(extra: str) -> Iterator[tuple[int, list[str], str]]:
    """(pid, argv, the contents of /proc/PID/``extra``) of every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{entry}/{extra}") as f:
                more = f.read()
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    continue
        except OSError:
            continue
        yield int(entry), argv, more


def shim_processes(root: Path) -> dict[int, str]:
    """pid -> container directory, for every monitor (``python -m
    isobox.shim DIR``) running on a container of ``root``."""
    prefix = str(root / "containers") + "/"
    found = {}
    for pid, argv, _ in live_processes("comm"):
        if "isobox.shim" in argv:
            directory = argv[argv.index("isobox.shim") + 1] if argv[-1] != "isobox.shim" else ""
        elif "isobox.shim.zygote" in argv:  # forked by isoboxd's launcher: find its log fd
            directory = _container_dir_of_fds(pid, prefix)
        else:
            continue
        if directory.startswith(prefix):
            found[pid] = directory
    return found


def _container_dir_of_fds(pid: int, prefix: str) -> str:
    """The container directory a process holds a file open in (a monitor keeps
    its container's log open), or ""."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(prefix):
                return prefix + target[len(prefix):].split("/")[0]
    except OSError:
        pass
    return ""


#: The detached per-root servers, by module, and the name their forks take.
SERVERS = {"isobox.shim.zygote": "isobox-shim", "isobox.cli.resident": "isobox"}


def launchers_under(base: Path, module: str | None = None) -> dict[int, str]:
    """pid -> socket, for every shared warm shim launcher (``python -m
    isobox.shim.zygote --keep N SOCK``) and CLI command server (``python -m
    isobox.cli.resident --keep N ... SOCK``) whose socket is under ``base``
    (only ``module``'s if given); the monitors and commands they forked keep
    their command line but take another name."""
    prefix = str(base).rstrip("/") + "/"
    found = {}
    for pid, raw, comm in live_processes("comm"):
        argv = [a for a in raw if a]
        for name, forked in SERVERS.items():
            if (module in (None, name) and name in argv and "--keep" in argv
                    and comm.strip() != forked and argv[-1].startswith(prefix)):
                found[pid] = argv[-1]
    return found


def launcher_pid(root: Path) -> int | None:
    """The pid of a root's shared launcher once it listens, else None."""
    try:
        pid = int((root / "run" / "shim-zygote.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if pid in launchers_under(root, "isobox.shim.zygote") else None


def stop_launchers(base: Path) -> None:
    """Stop (by pid) every shared launcher of a root under ``base``: they
    outlive the commands that start them, not the test session."""
    for pid in launchers_under(base):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    until(lambda: not launchers_under(base), timeout=10)


def cgroups_of(cid: str) -> list[str]:
    base = Path("/sys/fs/cgroup")
    return [str(p) for p in base.glob(f"*/isobox/{cid}") if p.is_dir()]


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def assert_gone(box: Isobox, ids: list[str]) -> None:
    """Nothing of ``ids`` left: no record, directory, shim, runtime state or cgroup,
    and no mount anywhere under the root."""
    assert not mounts_under(box.root), mounts_under(box.root)
    shims = shim_processes(box.root)
    assert not shims, f"monitors left running: {shims}"
    runtime = box.root / "run" / "runtime"
    left = sorted(p.name for p in runtime.iterdir()) if runtime.is_dir() else []
    assert not [i for i in ids if i in left], f"runtime state left: {left}"
    for cid in ids:
        assert not box.container_dir(cid).exists(), f"container directory left: {cid}"
        assert not cgroups_of(cid), cgroups_of(cid)


def network_leftovers(root: Path) -> list[str]:
    """What a root's network state still holds with no container left:
    endpoints (their leases), and whatever ``system check`` finds (veths,
    taps, bridges and nftables rules no record claims)."""
    from isobox.engine.networking import open_manager

    if not (root / "network" / "network.db").exists():
        return []
    nets = open_manager(str(root))
    try:
        return [f"endpoint {e.id[:12]} of {e.container_name or e.container_id[:12]} on "
                f"{e.network} ({e.ip})" for e in nets.store.endpoints()] + nets.check()
    finally:
        nets.close()


def destroy_networks(root: Path) -> None:
    """Remove what a root's networks made on the host (bridges, the nftables
    table, the DNS server; ip_forward back off if we turned it on), and check
    that none of it is left."""
    from isobox.engine.networking import names_for_root, open_manager

    if not (root / "network").is_dir():
        return
    nets = open_manager(str(root))
    try:
        nets.destroy()
    finally:
        nets.close()
    table, prefix = names_for_root(str(root))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f" {prefix}" not in links, links
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert table not in tables.split(), tables


def make_box(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Isobox]:
    """A module's root with busybox bootstrapped; at the end, any monitor the
    tests left is killed so one failure cannot hang the next module, and the
    root's networks are destroyed."""
    base = tmp_path_factory.mktemp(name)
    box = Isobox(base / "root", base / "home")
    box("image", "bootstrap", "busybox")
    try:
        yield box
    finally:
        for cid in box.ids():
            box("rm", "-f", cid, check=False)
        for pid in shim_processes(box.root):
            kill_pid(pid)
        stop_launchers(box.root)
        destroy_networks(box.root)


def clean_box(box: Isobox) -> Iterator[Isobox]:
    """Per test: the test's containers (everything in the root, since tests of
    a module run one after another) removed with ``rm -f``, then checked gone."""
    yield box
    ids = box.ids()
    for cid in ids:
        result = box("rm", "-f", cid, check=False)
        assert result.returncode == 0, result.stderr
    assert box.ids() == []
    assert_gone(box, ids)
    assert network_leftovers(box.root) == []


class Terminal:
    """A command on a pseudo-terminal, as a user at a real terminal runs it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once
            try:
                os.execve(argv[0], argv, {**env, "TERM": "xterm"})
            finally:
                os._exit(127)
        self.seen = b""

    def expect(self, pattern: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while pattern not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; got {self.seen[-400:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side closed
                    data = b""
                if not data:
                    raise AssertionError(f"EOF before {pattern!r}; got {self.seen[-400:]!r}")
                self.seen += data
        return self.seen

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_status = os.waitpid(self.pid, os.WNOHANG)
            if with_status[0] == self.pid:
                self._drain()  # what was written before it exited, not yet read
                os.close(self.fd)
                return os.waitstatus_to_exitcode(with_status[1])
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:  # drain, so the child never blocks on a full pty
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running; output {self.seen[-400:]!r}")

    def _drain(self, limit: float = 2.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # EIO: nothing holds the terminal any more
                return
            if not data:
                return
            self.seen += data
