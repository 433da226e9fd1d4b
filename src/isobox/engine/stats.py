"""``stats``: resource usage of containers from their cgroups (the cgroup
manager's runc-shaped stats) and network counters of their namespace, with
Docker's arithmetic: CPU % from the deltas of the container's and the
system's CPU time between two samples, memory without the inactive page
cache, the host's memory as the limit of an unlimited container."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine import live
from isobox.errors import IsoboxError
from isobox.linux.proc import total_memory

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService

_NS = 1_000_000_000


@dataclass(frozen=True)
class Sample:
    id: str
    name: str
    running: bool
    cpu_total: int = 0       #: ns of CPU time the container used
    system_cpu: int = 0      #: ns of CPU time the whole host used
    online_cpus: int = 1
    mem_usage: int = 0
    mem_limit: int = 0
    net_rx: int = 0
    net_tx: int = 0
    blk_read: int = 0
    blk_write: int = 0
    pids: int = 0


@dataclass(frozen=True)
class Usage:
    """What ``docker stats`` shows of one container."""

    id: str
    name: str
    cpu_percent: float
    mem_usage: int
    mem_limit: int
    mem_percent: float
    net_rx: int
    net_tx: int
    blk_read: int
    blk_write: int
    pids: int


def system_cpu_ns(stat_path: str = "/proc/stat") -> int:
    """The host's CPU time (the ``cpu`` line of /proc/stat, first 7 fields), in ns."""
    with open(stat_path) as f:
        for line in f:
            if line.startswith("cpu "):
                ticks = sum(int(v) for v in line.split()[1:8])
                return ticks * _NS // (os.sysconf("SC_CLK_TCK") or 100)
    return 0


def net_counters(pid: int) -> tuple[int, int]:
    """(rx, tx) bytes of every interface but lo in the namespace of ``pid``."""
    rx = tx = 0
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def memory_usage(mem: dict[str, Any]) -> tuple[int, int]:
    """(usage without inactive file cache, limit) as the docker CLI computes them."""
    usage = int((mem.get("usage") or {}).get("usage") or 0)
    limit = int((mem.get("usage") or {}).get("limit") or 0)
    raw = mem.get("raw") or {}
    for key in ("total_inactive_file", "inactive_file"):  # cgroup v1, then v2
        if key in raw:
            if int(raw[key]) < usage:
                usage -= int(raw[key])
            break
    return usage, limit


def block_io(blkio: dict[str, Any]) -> tuple[int, int]:
    read = write = 0
    for entry in blkio.get("ioServiceBytesRecursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += int(entry.get("value") or 0)
        elif op == "write":
            write += int(entry.get("value") or 0)
    return read, write


def sample(service: ContainerService, record: ContainerRecord, *,
           host_mem: int | None = None) -> Sample:
    running = record.state["Status"] in ("running", "paused")
    if running and record.isolation == "vm":
        return _vm_sample(service, record, host_mem)
    manager = live.cgroup(service, record) if running else None
    if manager is None:
        return Sample(record.id, record.name, False)
    try:
        raw = manager.stats()
    except (OSError, IsoboxError):
        return Sample(record.id, record.name, False)
    cpu = ((raw.get("cpu") or {}).get("usage") or {})
    usage, limit = memory_usage(raw.get("memory") or {})
    machine = total_memory() if host_mem is None else host_mem
    if machine and (limit == 0 or limit > machine):
        limit = machine
    rx, tx = net_counters(int(record.state.get("Pid") or 0))
    read, write = block_io(raw.get("blkio") or {})
    return Sample(record.id, record.name, True, cpu_total=int(cpu.get("total") or 0),
                  system_cpu=system_cpu_ns(),
                  online_cpus=os.sysconf("SC_NPROCESSORS_ONLN") or len(cpu.get("percpu") or [1]),
                  mem_usage=usage, mem_limit=limit, net_rx=rx, net_tx=tx, blk_read=read,
                  blk_write=write, pids=int((raw.get("pids") or {}).get("current") or 0))


def _vm_sample(service: ContainerService, record: ContainerRecord,
               host_mem: int | None) -> Sample:
    """From the container's cgroup inside the guest, through its agent.
    CPU time is the guest's, set against the host's clock like the rest."""
    from isobox.vm import execclient

    if record.state["Status"] == "paused":
        return Sample(record.id, record.name, False)  # a frozen VM answers nothing
    try:
        raw = execclient.call(service.dir(record.id), "stats")
    except (OSError, IsoboxError):
        return Sample(record.id, record.name, False)
    limit = int(raw.get("memory_limit") or 0)
    machine = total_memory() if host_mem is None else host_mem
    if machine and (limit == 0 or limit > machine):
        limit = machine
    return Sample(record.id, record.name, True, cpu_total=int(raw.get("cpu_usage_ns") or 0),
                  system_cpu=system_cpu_ns(), online_cpus=os.sysconf("SC_NPROCESSORS_ONLN"),
                  mem_usage=int(raw.get("memory_usage") or 0), mem_limit=limit,
                  pids=int(raw.get("pids") or 0))


def usage(previous: Sample | None, current: Sample) -> Usage:
    cpu = 0.0
    if previous is not None and previous.running and current.running:
        cpu_delta = current.cpu_total - previous.cpu_total
        system_delta = current.system_cpu - previous.system_cpu
        if cpu_delta > 0 and system_delta > 0:
            cpu = cpu_delta / system_delta * current.online_cpus * 100.0
    mem_percent = current.mem_usage / current.mem_limit * 100.0 if current.mem_limit else 0.0
    return Usage(current.id, current.name, cpu, current.mem_usage, current.mem_limit,
                 mem_percent, current.net_rx, current.net_tx, current.blk_read,
                 current.blk_write, current.pids)


class Sampler:
    """Keeps each container's last sample, so that every ``take`` reports
    CPU use since the previous one (the first: since a short warm-up)."""

    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self._last: dict[str, Sample] = {}

    def take(self, records: list[ContainerRecord], *, warmup: float = 0.0) -> list[Usage]:
        host_mem = total_memory()
        fresh = [r for r in records if r.id not in self._last]
        if fresh and warmup > 0:
            for record in fresh:
                self._last[record.id] = sample(self.service, record, host_mem=host_mem)
            time.sleep(warmup)
        out = []
        for record in records:
            now = sample(self.service, record, host_mem=host_mem)
            out.append(usage(self._last.get(record.id), now))
            self._last[record.id] = now
        return out
