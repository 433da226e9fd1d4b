"""cgroup v1 manager against a fake tree of hierarchies and a fake mountinfo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from isobox.cgroups import V1Manager, new_manager
from isobox.cgroups.v1 import devices, hugetlb, memory
from isobox.errors import Conflict, InvalidArgument, NotFound, Unavailable
from isobox.oci.runtime_spec import (
    CPU,
    BlockIO,
    DeviceCgroup,
    HugepageLimit,
    Memory,
    Pids,
    Resources,
    ThrottleDevice,
    WeightDevice,
)

if TYPE_CHECKING:
    from conftest import FakeV1  # fixtures only: never imported at run time

PATH = "/isobox/c1"
LIM = memory.LIMIT
SW = memory.SWAP_LIMIT


def _manager(fake: FakeV1, path: str = PATH) -> V1Manager:
    m = new_manager(path, version=1, mountinfo=str(fake.mountinfo))
    assert isinstance(m, V1Manager)
    return m


@pytest.fixture
def mgr(fake_v1: FakeV1) -> V1Manager:
    fake_v1.populate(PATH)  # the files the kernel makes on mkdir
    m = _manager(fake_v1)
    m.create()
    return m


def test_host_paths_every_hierarchy(fake_v1: FakeV1) -> None:
    m = _manager(fake_v1)
    paths = m.host_paths()
    assert set(paths) == set(fake_v1.mounts)
    assert paths["name=systemd"] == str(fake_v1.dir("name=systemd", PATH))
    assert paths[""] == str(fake_v1.dir("", PATH))


def test_create_makes_every_dir_and_seeds_cpuset(fake_v1: FakeV1) -> None:
    m = _manager(fake_v1)
    m.create()
    for name in fake_v1.mounts:
        assert fake_v1.dir(name, PATH).is_dir(), name
    assert m.exists()
    # A fake mkdir makes no files; emulate the kernel and seed again.
    fake_v1.populate("/isobox")
    fake_v1.populate(PATH)
    m.create()
    assert fake_v1.read("cpuset", "/isobox", "cpuset.cpus") == "0-3"
    assert fake_v1.read("cpuset", PATH, "cpuset.cpus") == "0-3"
    assert fake_v1.read("cpuset", PATH, "cpuset.mems") == "0"


def test_create_keeps_existing_cpuset(fake_v1: FakeV1, mgr: V1Manager) -> None:
    fake_v1.write("cpuset", PATH, "cpuset.cpus", "1")
    mgr.create()
    assert fake_v1.read("cpuset", PATH, "cpuset.cpus") == "1"


def test_combined_cpu_cpuacct(fake_v1_factory: Callable[[list[str]], FakeV1]) -> None:
    fake = fake_v1_factory(["cpu,cpuacct", "memory", "name=systemd"])
    fake.populate(PATH)
    fake.write("cpu,cpuacct", PATH, "cpuacct.usage", "123")
    m = _manager(fake)
    assert set(m.host_paths()) == {"cpu,cpuacct", "memory", "name=systemd"}
    assert m.controller_path("cpu") == m.controller_path("cpuacct")
    m.set(Resources(cpu=CPU(shares=512)))
    assert fake.read("cpu,cpuacct", PATH, "cpu.shares") == "512"
    assert m.stats()["cpu"]["usage"]["total"] == 123
    with pytest.raises(Unavailable, match="pids"):
        m.set(Resources(pids=Pids(limit=5)))
    with pytest.raises(Unavailable, match="freezer"):
        m.freeze()
    assert not m.is_frozen()


def test_set_memory_cpu_pids(mgr: V1Manager, fake_v1: FakeV1) -> None:
    mgr.set(Resources(
        memory=Memory(limit=64 << 20, reservation=32 << 20, swap=128 << 20, swappiness=10,
                      disable_oom_killer=True, kernel_tcp=1 << 20),
        cpu=CPU(shares=512, quota=50000, period=100000, burst=1000, cpus="0-1", mems="0"),
        pids=Pids(limit=20),
    ))
    assert fake_v1.read("memory", PATH, LIM) == str(64 << 20)
    assert fake_v1.read("memory", PATH, SW) == str(128 << 20)  # memory + swap, as in the spec
    assert fake_v1.read("memory", PATH, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert fake_v1.read("memory", PATH, "memory.swappiness") == "10"
    assert fake_v1.read("memory", PATH, "memory.oom_control") == "1"
    assert fake_v1.read("memory", PATH, "memory.kmem.tcp.limit_in_bytes") == str(1 << 20)
    assert fake_v1.read("cpu", PATH, "cpu.shares") == "512"
    assert fake_v1.read("cpu", PATH, "cpu.cfs_quota_us") == "50000"
    assert fake_v1.read("cpu", PATH, "cpu.cfs_period_us") == "100000"
    assert fake_v1.read("cpu", PATH, "cpu.cfs_burst_us") == "1000"
    assert fake_v1.read("cpuset", PATH, "cpuset.cpus") == "0-1"
    assert fake_v1.read("pids", PATH, "pids.max") == "20"


def test_set_unlimited(mgr: V1Manager, fake_v1: FakeV1) -> None:
    mgr.set(Resources(memory=Memory(limit=-1), cpu=CPU(quota=-1), pids=Pids(limit=-1)))
    assert fake_v1.read("memory", PATH, LIM) == "-1"
    assert fake_v1.read("memory", PATH, SW) == "-1"  # unlimited memory: unlimited swap too
    assert fake_v1.read("cpu", PATH, "cpu.cfs_quota_us") == "-1"
    assert fake_v1.read("pids", PATH, "pids.max") == "max"


@pytest.mark.parametrize(("current", "limit", "swap", "order"), [
    (100, 200, 400, [SW, LIM]),    # raising: memsw first
    (400, 200, 300, [LIM, SW]),    # lowering below the current limit: limit first
    (100, 200, -1, [SW, LIM]),     # unlimited swap first
    (100, 200, 0, [LIM]),
    (100, 0, 300, [SW]),
])
def test_memory_write_order(current: int, limit: int, swap: int, order: list[str]) -> None:
    assert [name for name, _ in memory.write_order(current, limit, swap)] == order


def test_swap_below_limit_refused(mgr: V1Manager) -> None:
    with pytest.raises(InvalidArgument, match=">= memory limit"):
        mgr.set(Resources(memory=Memory(limit=200, swap=100)))


def test_swap_without_memsw_file(mgr: V1Manager, fake_v1: FakeV1) -> None:
    fake_v1.remove("memory", PATH, SW)
    mgr.set(Resources(memory=Memory(limit=100, swap=300)))
    assert fake_v1.read("memory", PATH, LIM) == "100"


def test_bad_swappiness(mgr: V1Manager) -> None:
    with pytest.raises(InvalidArgument, match="0-100"):
        mgr.set(Resources(memory=Memory(swappiness=101)))


def test_unified_refused_on_v1(mgr: V1Manager, fake_v1: FakeV1) -> None:
    with pytest.raises(InvalidArgument, match="unified resources need cgroup v2"):
        mgr.set(Resources(pids=Pids(limit=3), unified={"pids.max": "3"}))
    assert fake_v1.read("pids", PATH, "pids.max") == "max"  # nothing written


@pytest.mark.parametrize(("rule", "line"), [
    (DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"), "c 1:3 rwm"),
    (DeviceCgroup(allow=True, type="c", major=136, access="rw"), "c 136:* rw"),
    (DeviceCgroup(allow=True, type="b", major=-1, minor=-1, access="m"), "b *:* m"),
    (DeviceCgroup(allow=False, access="rwm"), "a"),
    (DeviceCgroup(allow=False, type="a"), "a"),
    (DeviceCgroup(allow=True, type="c", major=5, minor=1), "c 5:1 rwm"),
])
def test_device_rule_line(rule: DeviceCgroup, line: str) -> None:
    assert devices.rule_line(rule) == line


@pytest.mark.parametrize("rule", [
    DeviceCgroup(allow=True, type="x", major=1, minor=3),
    DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwx"),
])
def test_device_rule_refused(rule: DeviceCgroup) -> None:
    with pytest.raises(InvalidArgument):
        devices.rule_line(rule)


def test_devices_deny_all_then_rules(mgr: V1Manager, fake_v1: FakeV1) -> None:
    mgr.set(Resources(devices=[
        DeviceCgroup(allow=False, access="rwm"),
        DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),
        DeviceCgroup(allow=True, type="c", major=1, minor=5, access="rwm"),
    ]))
    # Plain files keep only the last write of each: the deny file ends with the spec's rule.
    assert fake_v1.read("devices", PATH, "devices.deny") == "a"
    assert fake_v1.read("devices", PATH, "devices.allow") == "c 1:5 rwm"


def test_blkio(mgr: V1Manager, fake_v1: FakeV1) -> None:
    mgr.set(Resources(block_io=BlockIO(
        weight=300, leaf_weight=200,
        weight_device=[WeightDevice(major=8, minor=0, weight=400)],
        throttle_read_bps_device=[ThrottleDevice(major=8, minor=0, rate=1 << 20)],
        throttle_write_iops_device=[ThrottleDevice(major=8, minor=16, rate=100)])))
    assert fake_v1.read("blkio", PATH, "blkio.weight") == "300"
    assert fake_v1.read("blkio", PATH, "blkio.leaf_weight") == "200"
    assert fake_v1.read("blkio", PATH, "blkio.weight_device") == "8:0 400"
    assert fake_v1.read("blkio", PATH, "blkio.throttle.read_bps_device") == "8:0 1048576"
    assert fake_v1.read("blkio", PATH, "blkio.throttle.write_iops_device") == "8:16 100"


def test_blkio_bfq_files(mgr: V1Manager, fake_v1: FakeV1) -> None:
    fake_v1.remove("blkio", PATH, "blkio.weight")
    fake_v1.write("blkio", PATH, "blkio.bfq.weight", "100")
    fake_v1.write("blkio", PATH, "blkio.bfq.weight_device", "")
    mgr.set(Resources(block_io=BlockIO(weight=300,
                                       weight_device=[WeightDevice(major=8, minor=0,
                                                                   weight=50)])))
    assert fake_v1.read("blkio", PATH, "blkio.bfq.weight") == "300"
    assert fake_v1.read("blkio", PATH, "blkio.bfq.weight_device") == "8:0 50"


def test_blkio_weight_unsupported(mgr: V1Manager, fake_v1: FakeV1) -> None:
    fake_v1.remove("blkio", PATH, "blkio.weight")
    with pytest.raises(Unavailable, match=r"'300' to .*blkio\.weight: .*does not exist"):
        mgr.set(Resources(block_io=BlockIO(weight=300)))


@pytest.mark.parametrize(("size", "name"), [
    ("2MB", "2MB"), ("1gb", "1GB"), (2 << 20, "2MB"), (1 << 30, "1GB"), (64 << 10, "64KB"),
])
def test_hugetlb_size_name(size: int | str, name: str) -> None:
    assert hugetlb.size_name(size) == name


def test_hugetlb_set(mgr: V1Manager, fake_v1: FakeV1) -> None:
    mgr.set(Resources(hugepage_limits=[HugepageLimit(page_size="2MB", limit=4 << 20)]))
    assert fake_v1.read("hugetlb", PATH, "hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    with pytest.raises(InvalidArgument):
        hugetlb.size_name("huge")


def test_apply_every_hierarchy_and_pids(mgr: V1Manager, fake_v1: FakeV1) -> None:
    mgr.apply(321)
    for name in fake_v1.mounts:
        assert fake_v1.read(name, PATH, "cgroup.procs") == "321", name
    fake_v1.write("memory", PATH, "cgroup.procs", "321\n400\n")
    assert mgr.pids() == [321, 400]


def test_enter_writes_zero_to_tasks_and_cgroup2_procs(mgr: V1Manager, fake_v1: FakeV1) -> None:
    # pid 0 in each v1 hierarchy's per-thread file (the kernel's lock-free
    # path); cgroup2 has no such file, so its cgroup.procs, unless cloned in.
    assert mgr.cgroup2_dir() == str(fake_v1.dir("", PATH))
    mgr.enter()
    for name in fake_v1.mounts:
        if name:
            assert fake_v1.read(name, PATH, "tasks") == "0", name
            assert fake_v1.read(name, PATH, "cgroup.procs") == "", name
    assert fake_v1.read("", PATH, "cgroup.procs") == "0"
    fake_v1.write("", PATH, "cgroup.procs", "")
    mgr.enter(cgroup2=False)
    assert fake_v1.read("", PATH, "cgroup.procs") == ""


def test_enter_without_cgroup2(fake_v1_factory: Callable[[list[str]], FakeV1]) -> None:
    fake = fake_v1_factory(["cpu,cpuacct", "memory"])
    fake.populate(PATH)
    m = _manager(fake)
    m.create()
    assert m.cgroup2_dir() is None
    m.enter()
    assert fake.read("memory", PATH, "tasks") == "0"


def test_enter_a_missing_cgroup_is_not_found(mgr: V1Manager, fake_v1: FakeV1) -> None:
    fake_v1.remove("pids", PATH, "tasks")
    with pytest.raises(NotFound, match=r"cannot join cgroup .*pids"):
        mgr.enter()


def test_freeze_thaw(mgr: V1Manager, fake_v1: FakeV1) -> None:
    assert not mgr.is_frozen()
    mgr.freeze()
    assert fake_v1.read("freezer", PATH, "freezer.state") == "FROZEN"
    assert mgr.is_frozen()
    mgr.thaw()
    assert fake_v1.read("freezer", PATH, "freezer.state") == "THAWED"
    assert not mgr.is_frozen()


def test_stats(mgr: V1Manager, fake_v1: FakeV1) -> None:
    w = fake_v1.write
    w("memory", PATH, "memory.usage_in_bytes", "1048576")
    w("memory", PATH, "memory.limit_in_bytes", "67108864")
    w("memory", PATH, "memory.max_usage_in_bytes", "2097152")
    w("memory", PATH, "memory.failcnt", "4")
    w("memory", PATH, "memory.memsw.usage_in_bytes", "1052672")
    w("memory", PATH, "memory.memsw.limit_in_bytes", "134217728")
    w("memory", PATH, "memory.stat", "cache 8192\nrss 4096\ntotal_cache 16384\ntotal_rss 4096\n")
    w("cpuacct", PATH, "cpuacct.usage", "3000")
    w("cpuacct", PATH, "cpuacct.usage_percpu", "1000 2000 \n")
    w("cpuacct", PATH, "cpuacct.usage_user", "1800")
    w("cpuacct", PATH, "cpuacct.usage_sys", "1200")
    w("cpu", PATH, "cpu.stat", "nr_periods 5\nnr_throttled 1\nthrottled_time 777\n")
    w("pids", PATH, "pids.current", "2")
    w("blkio", PATH, "blkio.throttle.io_service_bytes_recursive",
      "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n")
    w("blkio", PATH, "blkio.throttle.io_serviced_recursive", "8:0 Read 1\nTotal 1\n")
    w("hugetlb", PATH, "hugetlb.2MB.usage_in_bytes", "0")
    s = mgr.stats()
    assert s["memory"]["usage"] == {"limit": 67108864, "usage": 1048576, "max": 2097152,
                                    "failcnt": 4}
    assert s["memory"]["swap"]["usage"] == 1052672
    assert s["memory"]["swap"]["limit"] == 134217728
    assert s["memory"]["cache"] == 16384
    assert s["memory"]["raw"]["rss"] == 4096
    assert s["cpu"]["usage"] == {"total": 3000, "percpu": [1000, 2000], "kernel": 1200,
                                 "user": 1800}
    assert s["cpu"]["throttling"] == {"periods": 5, "throttledPeriods": 1, "throttledTime": 777}
    assert s["pids"] == {"current": 2, "limit": 0}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 0}]
    assert s["blkio"]["ioServicedRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 1}]
    assert s["hugetlb"]["2MB"] == {"usage": 0, "max": 0, "failcnt": 0}


def test_cpuacct_stat_ticks(mgr: V1Manager, fake_v1: FakeV1) -> None:
    import os
    hz = os.sysconf("SC_CLK_TCK")
    fake_v1.write("cpuacct", PATH, "cpuacct.usage", "5")
    fake_v1.write("cpuacct", PATH, "cpuacct.stat", f"user {hz}\nsystem {2 * hz}\n")
    usage = mgr.stats()["cpu"]["usage"]
    assert (usage["user"], usage["kernel"]) == (1_000_000_000, 2_000_000_000)


def test_destroy_leaf_first_and_idempotent(fake_v1: FakeV1) -> None:
    fake_v1.populate("/keep")
    m = _manager(fake_v1, "/keep/new/c1")
    m.create()
    for name in fake_v1.mounts:
        fake_v1.dir(name, "/keep/new/c1/sub").mkdir()
    fake_v1.write("memory", "/keep/new/c1/sub", "cgroup.procs", "")
    with pytest.raises(Conflict, match="sub"):
        m.destroy()  # a file left in the fake dir reads as a busy cgroup
    fake_v1.remove("memory", "/keep/new/c1/sub", "cgroup.procs")
    m.destroy()
    assert not m.exists()
    for name in fake_v1.mounts:
        assert not fake_v1.dir(name, "/keep/new").exists(), name
        assert fake_v1.dir(name, "/keep").is_dir(), name
    m.destroy()
    assert m.pids() == []
    assert m.stats() == {}
