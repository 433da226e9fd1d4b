"""Fake cgroupfs trees: plain directories and files laid out as the kernel would.

Nothing here emulates the kernel: a test creates a cgroup with the manager,
then calls ``populate`` to add the interface files the kernel would have
added, and ``unpopulate`` before ``destroy`` (rmdir needs an empty directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

V2_FILES = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc",
    "cgroup.subtree_control": "",
    "cgroup.procs": "",
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0",
    "memory.max": "max",
    "memory.low": "0",
    "memory.swap.max": "max",
    "memory.current": "0",
    "cpu.max": "max 100000",
    "cpu.weight": "100",
    "cpu.max.burst": "0",
    "cpu.idle": "0",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "pids.max": "max",
    "pids.current": "0",
    "io.weight": "default 100",
    "io.max": "",
    "hugetlb.2MB.max": "max",
}

V1_FILES = {
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.memsw.limit_in_bytes": "9223372036854771712",
        "memory.soft_limit_in_bytes": "9223372036854771712",
        "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0",
        "memory.usage_in_bytes": "0",
    },
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
            "cpu.cfs_burst_us": "0", "cpu.rt_runtime_us": "0", "cpu.rt_period_us": "1000000"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.weight": "500", "blkio.weight_device": "", "blkio.leaf_weight": "500",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "9223372036854771712"},
    "name=systemd": {},
    "": {},
}

COMMON_V1 = {"cgroup.procs": "", "tasks": ""}


def _write_files(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def _unpopulate(d: Path) -> None:
    for sub, _dirs, files in os.walk(d):
        for name in files:
            os.unlink(os.path.join(sub, name))


@dataclass
class FakeV2:
    root: Path

    def dir(self, path: str) -> Path:
        return self.root / path.strip("/")

    def populate(self, path: str, **extra: str) -> Path:
        d = self.dir(path)
        _write_files(d, {**V2_FILES, **{k.replace("__", "."): v for k, v in extra.items()}})
        return d

    def write(self, path: str, name: str, text: str) -> None:
        (self.dir(path) / name).write_text(text)

    def read(self, path: str, name: str) -> str:
        return (self.dir(path) / name).read_text()

    def remove(self, path: str, name: str) -> None:
        (self.dir(path) / name).unlink()

    def unpopulate(self, path: str) -> None:
        _unpopulate(self.dir(path))


@pytest.fixture
def fake_v2(tmp_path: Path) -> FakeV2:
    root = tmp_path / "cgroup2"
    _write_files(root, {"cgroup.controllers": V2_FILES["cgroup.controllers"],
                        "cgroup.subtree_control": "", "cgroup.procs": "1\n"})
    return FakeV2(root)


@dataclass
class FakeV1:
    base: Path
    mountinfo: Path
    #: hierarchy name ("cpu,cpuacct", "name=systemd", "" for cgroup2) -> mountpoint
    mounts: dict[str, Path] = field(default_factory=dict)

    def dir(self, hierarchy: str, path: str) -> Path:
        return self.mounts[hierarchy] / path.strip("/")

    def populate(self, path: str) -> None:
        for name, mount in self.mounts.items():
            files = dict(COMMON_V1)
            for ctrl in name.split(","):
                files.update(V1_FILES.get(ctrl, {}))
            _write_files(mount / path.strip("/"), files)

    def read(self, hierarchy: str, path: str, name: str) -> str:
        return (self.dir(hierarchy, path) / name).read_text()

    def write(self, hierarchy: str, path: str, name: str, text: str) -> None:
        (self.dir(hierarchy, path) / name).write_text(text)

    def remove(self, hierarchy: str, path: str, name: str) -> None:
        (self.dir(hierarchy, path) / name).unlink()

    def unpopulate(self, path: str) -> None:
        for name in self.mounts:
            _unpopulate(self.dir(name, path))


def _mountinfo_line(n: int, mountpoint: Path, fstype: str, superopts: str) -> str:
    mp = str(mountpoint).replace(" ", "\\040")
    return (f"{30 + n} 23 0:{40 + n} / {mp} rw,nosuid,nodev,noexec,relatime shared:{n} - "
            f"{fstype} {fstype} {superopts}")


def make_fake_v1(base: Path, names: list[str]) -> FakeV1:
    """A fake v1 host with one mount per hierarchy name, and a cgroup2 for ""."""
    lines = ["22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
             "23 22 0:20 / /sys rw,nosuid shared:2 - sysfs sysfs rw"]
    fake = FakeV1(base, base / "mountinfo")
    for n, name in enumerate(names):
        mount = base / "cg" / (name.replace("name=", "") or "unified")
        fake.mounts[name] = mount
        if name:
            lines.append(_mountinfo_line(n, mount, "cgroup", "rw," + name))
        else:
            lines.append(_mountinfo_line(n, mount, "cgroup2", "rw,nsdelegate"))
        _write_files(mount, {"cgroup.procs": "1\n"})
    fake.mountinfo.write_text("\n".join(lines) + "\n")
    cpuset = next((m for n, m in fake.mounts.items() if "cpuset" in n.split(",")), None)
    if cpuset is not None:
        _write_files(cpuset, {"cpuset.cpus": "0-3", "cpuset.mems": "0"})
    return fake


SEPARATE = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
            "hugetlb", "name=systemd", ""]
COMBINED = ["cpu,cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
            "name=systemd"]


@pytest.fixture
def fake_v1(tmp_path: Path) -> FakeV1:
    return make_fake_v1(tmp_path, SEPARATE)


@pytest.fixture
def fake_v1_factory(tmp_path: Path) -> Callable[[list[str]], FakeV1]:
    def make(names: list[str]) -> FakeV1:
        return make_fake_v1(tmp_path / "h", names)
    return make
