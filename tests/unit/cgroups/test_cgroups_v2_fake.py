"""cgroup v2 manager against a fake cgroupfs tree."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from isobox.cgroups import V2Manager, new_manager
from isobox.cgroups.v2 import cpu, io, memory
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
    from conftest import FakeV2  # fixtures only: never imported at run time

PATH = "/isobox/c1"


def _manager(fake: FakeV2, path: str = PATH) -> V2Manager:
    m = new_manager(path, root=str(fake.root), version=2)
    assert isinstance(m, V2Manager)
    return m


@pytest.fixture
def mgr(fake_v2: FakeV2) -> V2Manager:
    """A created cgroup, its parent pre-existing with controllers enabled."""
    fake_v2.populate("/isobox", cgroup__subtree_control="cpuset cpu io memory hugetlb pids")
    fake_v2.write("/", "cgroup.subtree_control", "cpuset cpu io memory hugetlb pids")
    m = _manager(fake_v2)
    m.create()
    fake_v2.populate(PATH)
    return m


def test_create_enables_controllers_in_ancestors(fake_v2: FakeV2) -> None:
    fake_v2.populate("/isobox", cgroup__controllers="cpu memory pids rdma",
                     cgroup__subtree_control="memory")
    m = _manager(fake_v2)
    assert not m.exists()
    m.create()
    assert m.exists()
    assert fake_v2.dir(PATH).is_dir()
    # Order of cgroup.controllers, only wanted ones, none already enabled.
    assert fake_v2.read("/", "cgroup.subtree_control") == "+cpuset +cpu +io +memory +hugetlb +pids"
    assert fake_v2.read("/isobox", "cgroup.subtree_control") == "+cpu +pids"
    m.create()  # idempotent


def test_set_memory_cpu_pids(mgr: V2Manager, fake_v2: FakeV2) -> None:
    mgr.set(Resources(
        memory=Memory(limit=64 << 20, reservation=32 << 20, swap=128 << 20),
        cpu=CPU(shares=1024, quota=50000, period=100000, cpus="0-1", mems="0"),
        pids=Pids(limit=20),
    ))
    assert fake_v2.read(PATH, "memory.max") == str(64 << 20)
    assert fake_v2.read(PATH, "memory.low") == str(32 << 20)
    assert fake_v2.read(PATH, "memory.swap.max") == str(64 << 20)  # swap - limit
    assert fake_v2.read(PATH, "cpu.weight") == "39"
    assert fake_v2.read(PATH, "cpu.max") == "50000 100000"
    assert fake_v2.read(PATH, "cpuset.cpus") == "0-1"
    assert fake_v2.read(PATH, "cpuset.mems") == "0"
    assert fake_v2.read(PATH, "pids.max") == "20"


def test_set_unlimited_values(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.write(PATH, "memory.swap.max", "0")
    mgr.set(Resources(memory=Memory(limit=-1), cpu=CPU(quota=-1, period=100000),
                      pids=Pids(limit=0)))
    assert fake_v2.read(PATH, "memory.max") == "max"
    assert fake_v2.read(PATH, "memory.swap.max") == "max"
    assert fake_v2.read(PATH, "cpu.max") == "max 100000"
    assert fake_v2.read(PATH, "pids.max") == "max"


def test_swap_equal_to_limit_disables_swap(mgr: V2Manager, fake_v2: FakeV2) -> None:
    mgr.set(Resources(memory=Memory(limit=100, swap=100)))
    assert fake_v2.read(PATH, "memory.swap.max") == "0"


@pytest.mark.parametrize(("swap", "limit", "want"), [
    (0, 0, 0), (-1, 100, -1), (0, -1, -1), (300, 100, 200), (100, 100, 0),
])
def test_swap_conversion(swap: int, limit: int, want: int) -> None:
    assert memory.swap_value(swap, limit) == want


@pytest.mark.parametrize(("swap", "limit", "match"), [
    (100, 0, "without a memory limit"), (100, -1, "without a memory limit"),
    (50, 100, ">= memory limit"),
])
def test_swap_conversion_refuses(swap: int, limit: int, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        memory.swap_value(swap, limit)


def test_swap_without_swap_accounting(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.remove(PATH, "memory.swap.max")
    mgr.set(Resources(memory=Memory(limit=100, swap=-1)))
    assert fake_v2.read(PATH, "memory.max") == "100"


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (512, 20)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert cpu.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("quota", "period", "text"), [
    (50000, 100000, "50000 100000"), (50000, None, "50000"), (0, 100000, "max 100000"),
    (-1, None, "max"), (None, 20000, "max 20000"),
])
def test_cpu_max_value(quota: int | None, period: int | None, text: str) -> None:
    assert cpu.max_value(quota, period) == text


def test_cpu_realtime_refused(mgr: V2Manager) -> None:
    with pytest.raises(Unavailable, match="cgroup v1"):
        mgr.set(Resources(cpu=CPU(realtime_runtime=1000)))


def test_io_weight_converted_and_max(mgr: V2Manager, fake_v2: FakeV2) -> None:
    mgr.set(Resources(block_io=BlockIO(
        weight=500,
        throttle_read_bps_device=[ThrottleDevice(major=8, minor=0, rate=1 << 20)])))
    assert fake_v2.read(PATH, "io.weight") == str(io.weight_to_io(500))
    assert io.weight_to_io(500) == 1 + 490 * 9999 // 990
    assert io.weight_to_io(10) == 1
    assert io.weight_to_io(1000) == 10000
    assert fake_v2.read(PATH, "io.max") == "8:0 rbps=1048576"


def test_io_bfq_preferred(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.write(PATH, "io.bfq.weight", "default 100")
    mgr.set(Resources(block_io=BlockIO(weight=300)))
    assert fake_v2.read(PATH, "io.bfq.weight") == "300"
    mgr.set(Resources(block_io=BlockIO(weight_device=[WeightDevice(major=8, minor=16,
                                                                   weight=200)])))
    assert fake_v2.read(PATH, "io.bfq.weight") == "8:16 200"


def test_io_max_lines() -> None:
    res = Resources(block_io=BlockIO(
        throttle_write_bps_device=[ThrottleDevice(major=8, minor=0, rate=10)],
        throttle_read_iops_device=[ThrottleDevice(major=8, minor=0, rate=0)],
        throttle_write_iops_device=[ThrottleDevice(major=253, minor=1, rate=7)]))
    assert io.max_lines(res) == ["8:0 wbps=10", "8:0 riops=max", "253:1 wiops=7"]


def test_hugetlb(mgr: V2Manager, fake_v2: FakeV2) -> None:
    mgr.set(Resources(hugepage_limits=[HugepageLimit(page_size="2MB", limit=1 << 30)]))
    assert fake_v2.read(PATH, "hugetlb.2MB.max") == str(1 << 30)
    mgr.set(Resources(hugepage_limits=[HugepageLimit(page_size=2 << 20, limit=0)]))
    assert fake_v2.read(PATH, "hugetlb.2MB.max") == "0"
    with pytest.raises(Unavailable, match=r"hugetlb\.1GB\.max"):
        mgr.set(Resources(hugepage_limits=[HugepageLimit(page_size="1GB", limit=1)]))


def test_unified_raw_keys(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.write(PATH, "memory.high", "max")
    mgr.set(Resources(memory=Memory(limit=100), unified={"memory.high": "90", "pids.max": "7"}))
    assert fake_v2.read(PATH, "memory.high") == "90"
    assert fake_v2.read(PATH, "pids.max") == "7"
    with pytest.raises(Unavailable, match=r"memory\.oom\.group"):
        mgr.set(Resources(unified={"memory.oom.group": "1"}))
    with pytest.raises(InvalidArgument, match="file name"):
        mgr.set(Resources(unified={"../cgroup.procs": "1"}))


def test_devices_are_a_logged_noop(mgr: V2Manager, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        mgr.set(Resources(devices=[DeviceCgroup(allow=False, access="rwm"),
                                   DeviceCgroup(allow=True, type="c", major=1, minor=3)]))
    assert "eBPF" in caplog.text


def test_missing_controller_is_unavailable(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.write("/isobox", "cgroup.subtree_control", "memory")
    with pytest.raises(Unavailable, match="pids"):
        mgr.set(Resources(pids=Pids(limit=3)))
    mgr.set(Resources(memory=Memory(limit=100)))  # enabled controllers still work


def test_refused_value_names_file_and_value(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.remove(PATH, "memory.max")
    with pytest.raises(Unavailable) as info:
        mgr.set(Resources(memory=Memory(limit=4096)))
    assert "memory.max" in str(info.value)
    assert "'4096'" in str(info.value)
    with pytest.raises(InvalidArgument, match="-5"):
        mgr.set(Resources(memory=Memory(limit=-5)))


def test_apply_and_pids(mgr: V2Manager, fake_v2: FakeV2) -> None:
    mgr.apply(4242)
    assert fake_v2.read(PATH, "cgroup.procs") == "4242"
    fake_v2.populate(PATH + "/sub", cgroup__procs="17\n4243\n")
    fake_v2.write(PATH, "cgroup.procs", "4242\n99\n")
    assert mgr.pids() == [17, 99, 4242, 4243]
    with pytest.raises(InvalidArgument):
        mgr.apply(0)


def test_enter_writes_zero_unless_cloned_in(mgr: V2Manager, fake_v2: FakeV2) -> None:
    assert mgr.cgroup2_dir() == str(fake_v2.dir(PATH))
    mgr.enter(cgroup2=False)  # started there by CLONE_INTO_CGROUP: nothing to write
    assert fake_v2.read(PATH, "cgroup.procs") == ""
    mgr.enter()
    assert fake_v2.read(PATH, "cgroup.procs") == "0"
    fake_v2.remove(PATH, "cgroup.procs")
    with pytest.raises(NotFound, match="cannot join cgroup"):
        mgr.enter()


def test_freeze_thaw(mgr: V2Manager, fake_v2: FakeV2) -> None:
    assert not mgr.is_frozen()
    fake_v2.write(PATH, "cgroup.events", "populated 1\nfrozen 1\n")  # as the kernel would
    mgr.freeze()
    assert fake_v2.read(PATH, "cgroup.freeze") == "1"
    assert mgr.is_frozen()
    mgr.thaw()
    assert fake_v2.read(PATH, "cgroup.freeze") == "0"
    assert not mgr.is_frozen()


def test_freeze_times_out_and_thaws(fake_v2: FakeV2) -> None:
    m = V2Manager(PATH, str(fake_v2.root), freeze_timeout=0.05)
    m.create()
    fake_v2.populate(PATH)
    with pytest.raises(Unavailable, match="not frozen"):
        m.freeze()
    assert fake_v2.read(PATH, "cgroup.freeze") == "0"


def test_freeze_needs_cgroup_freeze(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.remove(PATH, "cgroup.freeze")
    with pytest.raises(Unavailable, match=r"5\.2"):
        mgr.freeze()


def test_stats(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.write(PATH, "memory.current", "1048576")
    fake_v2.write(PATH, "memory.max", "67108864")
    fake_v2.write(PATH, "memory.peak", "2097152")
    fake_v2.write(PATH, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    fake_v2.write(PATH, "memory.stat", "anon 4096\nfile 8192\nkernel 100\n")
    fake_v2.write(PATH, "memory.swap.current", "4096")
    fake_v2.write(PATH, "memory.swap.max", "max")
    fake_v2.write(PATH, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
                  "nr_periods 10\nnr_throttled 2\nthrottled_usec 30\n")
    fake_v2.write(PATH, "pids.current", "3")
    fake_v2.write(PATH, "pids.max", "20")
    fake_v2.write(PATH, "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
    fake_v2.write(PATH, "hugetlb.2MB.current", "0")
    s = mgr.stats()
    assert s["memory"]["usage"] == {"limit": 67108864, "usage": 1048576, "max": 2097152,
                                    "failcnt": 3}
    assert s["memory"]["swap"] == {"limit": 2**64 - 1, "usage": 1048576 + 4096, "max": 0,
                                   "failcnt": 0}
    assert s["memory"]["cache"] == 8192
    assert s["memory"]["raw"] == {"anon": 4096, "file": 8192, "kernel": 100}
    assert s["cpu"] == {"usage": {"total": 1_500_000, "kernel": 500_000, "user": 1_000_000},
                        "throttling": {"periods": 10, "throttledPeriods": 2,
                                       "throttledTime": 30_000}}
    assert s["pids"] == {"current": 3, "limit": 20}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 100},
        {"major": 8, "minor": 0, "op": "Write", "value": 200}]
    assert s["blkio"]["ioServicedRecursive"][1]["value"] == 2
    assert s["hugetlb"] == {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}


def test_stats_omits_missing_controllers(mgr: V2Manager, fake_v2: FakeV2) -> None:
    fake_v2.unpopulate(PATH)
    fake_v2.write(PATH, "pids.current", "1")
    fake_v2.write(PATH, "pids.max", "max")
    assert mgr.stats() == {"pids": {"current": 1, "limit": 0}}


def test_destroy_idempotent_keeps_preexisting_ancestors(fake_v2: FakeV2) -> None:
    fake_v2.populate("/pre")
    m = _manager(fake_v2, "/pre/new/c1")
    m.create()
    fake_v2.populate("/pre/new/c1")
    fake_v2.populate("/pre/new/c1/child")
    fake_v2.unpopulate("/pre/new/c1")
    m.destroy()
    assert not m.exists()
    assert not fake_v2.dir("/pre/new").exists()  # created by create(): removed when empty
    assert fake_v2.dir("/pre").is_dir()          # existed before: kept
    m.destroy()
    assert m.pids() == []
    assert m.stats() == {}
    assert not m.is_frozen()


def test_destroy_of_busy_cgroup_is_conflict(mgr: V2Manager) -> None:
    # A fake directory that still holds files cannot be removed, as a busy cgroup.
    with pytest.raises(Conflict, match="cannot remove cgroup"):
        mgr.destroy()
