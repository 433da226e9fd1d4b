"""isobox.cgroups on this host's real cgroup v1 hierarchies (root only).

Each test works in its own /isobox-test/<random> cgroup, and the fixture
kills what it started and removes the cgroup even when the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from isobox.cgroups import V1Manager, hierarchies, new_manager
from isobox.errors import InvalidArgument, IsoboxError
from isobox.oci.runtime_spec import CPU, DeviceCgroup, Memory, Pids, Resources


def _v1_memory_mounted() -> bool:
    try:
        return any(h.version == 1 and "memory" in h.controllers
                   and h.mountpoint == "/sys/fs/cgroup/memory" for h in hierarchies())
    except Exception:
        return False


pytestmark = [
    pytest.mark.skipif(not _v1_memory_mounted(),
                       reason="/sys/fs/cgroup/memory is not a cgroup v1 mount on this host"),
    pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root"),
]

TOP = "/isobox-test"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Child:
    """A Python child that waits on stdin until it is in the cgroup, then runs ``code``."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def kill(self) -> None:
        _kill(self.pid)
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for c in started:
            c.kill()


@pytest.fixture
def cgroup(children: list[Child]) -> Iterator[V1Manager]:
    # Depends on children: its teardown (thaw, kill, rmdir) runs before theirs (reap).
    m = new_manager(f"{TOP}/{uuid.uuid4().hex[:12]}")
    assert isinstance(m, V1Manager)
    try:
        m.create()
        yield m
    finally:
        if m.exists():
            try:
                m.thaw()  # a frozen task cannot die; FREEZING counts too
            except IsoboxError:
                pass
            for pid in m.pids():
                _kill(pid)
            m.destroy()
        for d in m.host_paths().values():  # the shared top, when no other test uses it
            try:
                os.rmdir(os.path.dirname(d))
            except OSError:
                pass


def _read(m: V1Manager, controller: str, name: str) -> str:
    d = m.controller_path(controller)
    assert d is not None
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def test_lifecycle(cgroup: V1Manager, children: list[Child]) -> None:
    m = cgroup
    assert m.exists()
    assert _read(m, "cpuset", "cpuset.cpus") != ""  # seeded from the parent
    m.set(Resources(memory=Memory(limit=64 << 20), pids=Pids(limit=20),
                    cpu=CPU(quota=50000, period=100000, shares=512)))
    assert _read(m, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert _read(m, "pids", "pids.max") == "20"
    assert _read(m, "cpu", "cpu.cfs_quota_us") == "50000"
    assert _read(m, "cpu", "cpu.cfs_period_us") == "100000"
    assert _read(m, "cpu", "cpu.shares") == "512"

    child = Child("b = b'x' * (8 << 20)\nprint('ready', flush=True)\nimport time\n"
                  "time.sleep(30)\n")
    children.append(child)
    m.apply(child.pid)
    child.go()
    assert child.readline().strip() == "ready"
    assert m.pids() == [child.pid]
    with open(f"/proc/{child.pid}/cgroup") as f:
        assert f"{m.path}\n" in f.read()

    m.freeze()
    assert _read(m, "freezer", "freezer.state") == "FROZEN"
    assert m.is_frozen()
    m.thaw()
    assert _read(m, "freezer", "freezer.state") == "THAWED"
    assert not m.is_frozen()

    stats = m.stats()
    assert stats["memory"]["usage"]["usage"] > 0
    assert stats["memory"]["usage"]["limit"] == 64 << 20
    assert stats["pids"] == {"current": 1, "limit": 20}
    assert stats["cpu"]["usage"]["total"] > 0

    child.kill()
    m.destroy()
    assert not m.exists()
    m.destroy()  # idempotent


def test_pids_max_stops_forks(cgroup: V1Manager, children: list[Child]) -> None:
    cgroup.set(Resources(pids=Pids(limit=5)))
    child = Child(
        "import os, time\n"
        "ok = fail = 0\nkids = []\n"
        "for _ in range(10):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        fail += 1\n"
        "        continue\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "    ok += 1\n"
        "print(ok, fail, flush=True)\n"
        "sys.stdin.readline()\n"
        "for k in kids:\n"
        "    os.kill(k, 9)\n"
        "    os.waitpid(k, 0)\n")
    children.append(child)
    cgroup.apply(child.pid)
    child.go()
    assert child.readline().split() == ["4", "6"]  # the parent itself counts as one
    assert len(cgroup.pids()) == 5
    assert cgroup.stats()["pids"] == {"current": 5, "limit": 5}
    child.go()
    assert child.proc.wait(timeout=10) == 0


def test_memory_limit_kills(cgroup: V1Manager, children: list[Child]) -> None:
    # memory+swap equal to memory: no swap, so the allocation must hit the OOM killer.
    swap = (32 << 20) if os.path.exists(
        os.path.join(cgroup.host_paths()["memory"], "memory.memsw.limit_in_bytes")) else None
    cgroup.set(Resources(memory=Memory(limit=32 << 20, swap=swap)))
    child = Child("b = b'x' * (128 << 20)\nprint('survived', flush=True)\n")
    children.append(child)
    cgroup.apply(child.pid)
    child.go()
    assert child.proc.wait(timeout=30) == -signal.SIGKILL
    assert cgroup.stats()["memory"]["usage"]["max"] == 32 << 20
    # (failcnt stays 0 on some recent kernels; oom_control counts the kill.)
    oom = dict(line.split() for line in _read(cgroup, "memory", "memory.oom_control").splitlines())
    assert int(oom.get("oom_kill", "1")) >= 1


def test_memory_and_swap_raise_then_lower(cgroup: V1Manager) -> None:
    memsw = os.path.join(cgroup.host_paths()["memory"], "memory.memsw.limit_in_bytes")
    if not os.path.exists(memsw):
        pytest.skip("swap accounting (memory.memsw.*) is off in this kernel")
    for limit, swap in ((64 << 20, 128 << 20), (256 << 20, 512 << 20), (32 << 20, 48 << 20),
                        (64 << 20, -1), (16 << 20, 16 << 20)):
        cgroup.set(Resources(memory=Memory(limit=limit, swap=swap)))
        assert _read(cgroup, "memory", "memory.limit_in_bytes") == str(limit)
        got = _read(cgroup, "memory", "memory.memsw.limit_in_bytes")
        assert got == str(swap) if swap > 0 else int(got) > 1 << 60


def test_cpu_shares_out_of_range(cgroup: V1Manager) -> None:
    with pytest.raises(InvalidArgument, match=r"cpu\.shares"):
        cgroup.set(Resources(cpu=CPU(shares=1)))  # the kernel clamps it to 2


def test_devices(cgroup: V1Manager) -> None:
    cgroup.set(Resources(devices=[
        DeviceCgroup(allow=False, access="rwm"),
        DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),
        DeviceCgroup(allow=True, type="c", major=136, access="rw"),
    ]))
    assert _read(cgroup, "devices", "devices.list").splitlines() == ["c 1:3 rwm", "c 136:* rw"]


def test_refused_value_is_one_clear_line(cgroup: V1Manager) -> None:
    with pytest.raises(InvalidArgument) as info:
        cgroup.set(Resources(cpu=CPU(quota=500)))  # below the kernel's 1ms minimum
    msg = str(info.value)
    assert "cpu.cfs_quota_us" in msg and "'500'" in msg and "\n" not in msg


def test_destroy_right_after_kill(cgroup: V1Manager, children: list[Child]) -> None:
    child = Child("import time\ntime.sleep(30)\n")
    children.append(child)
    cgroup.apply(child.pid)
    _kill(child.pid)
    cgroup.destroy()  # retries EBUSY while the task exits
    assert not cgroup.exists()
