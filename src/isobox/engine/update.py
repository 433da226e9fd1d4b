"""``update``: change a container's resource limits and restart policy.

Takes the body of Docker's ``POST /containers/{id}/update`` (``Memory``,
``MemorySwap``, ``MemoryReservation``, ``NanoCpus``, ``CpuShares``,
``CpuQuota``, ``CpuPeriod``, ``CpusetCpus``, ``CpusetMems``, ``PidsLimit``,
``BlkioWeight``, ``RestartPolicy``; zero or absent means unchanged). A running
container gets the new limits at once through its runtime (``update
--resources -``, runc's protocol); every container keeps them in its record's
HostConfig and its bundle's config.json, which the next start uses. A new
restart policy is written to the monitor's configuration, so it applies from
the next start on.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from isobox.engine import live
from isobox.errors import Conflict, InvalidArgument, IsoboxError, Unavailable
from isobox.linux.files import atomic_write

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

MIN_MEMORY = 6 * 1024 * 1024
_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuQuota",
           "CpuPeriod", "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight")
_RESTART = ("no", "always", "on-failure", "unless-stopped")


def _check(host: dict[str, Any], new: dict[str, Any]) -> None:
    memory = new.get("Memory") or 0
    if memory and memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    current_swap = host.get("MemorySwap") or (2 * host["Memory"] if host.get("Memory") else 0)
    if memory and current_swap > 0 and memory > current_swap and not new.get("MemorySwap"):
        raise Conflict("Memory limit should be smaller than already set memoryswap limit, "
                       "update the memoryswap at the same time")
    swap = new.get("MemorySwap") or 0
    if swap > 0 and swap < (memory or host.get("Memory") or 0):
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if swap > 0 and not (memory or host.get("Memory")):
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage")
    if new.get("NanoCpus"):
        if new.get("CpuPeriod") or host.get("CpuPeriod"):
            raise Conflict("Conflicting options: Nano CPUs and CPU Period cannot both be set")
        if new.get("CpuQuota") or host.get("CpuQuota"):
            raise Conflict("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
        if new["NanoCpus"] < 0 or new["NanoCpus"] > (os.cpu_count() or 1) * 10**9:
            raise InvalidArgument(f"Range of CPUs is from 0.01 to {os.cpu_count() or 1}.00, "
                                  "as there are only "
                                  f"{os.cpu_count() or 1} CPUs available")
    if (new.get("CpuQuota") or new.get("CpuPeriod")) and host.get("NanoCpus"):
        raise Conflict("Conflicting options: CPU Quota or Period cannot be updated as NanoCPUs "
                       "has already been set")
    period = new.get("CpuPeriod") or 0
    if period and not 1000 <= period <= 1000000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    quota = new.get("CpuQuota") or 0
    if quota and (0 < quota < 1000 or quota < -1):
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    weight = new.get("BlkioWeight") or 0
    if weight and not 10 <= weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")


def resources_of(new: dict[str, Any]) -> dict[str, Any]:
    """The OCI ``linux.resources`` for the fields that change."""
    out: dict[str, Any] = {}
    memory = {k: new[f] for f, k in (("Memory", "limit"), ("MemorySwap", "swap"),
                                     ("MemoryReservation", "reservation")) if new.get(f)}
    cpu: dict[str, Any] = {k: new[f] for f, k in (
        ("CpuShares", "shares"), ("CpuQuota", "quota"), ("CpuPeriod", "period"),
        ("CpusetCpus", "cpus"), ("CpusetMems", "mems")) if new.get(f)}
    if new.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = new["NanoCpus"] * 100000 // 10**9
    if memory:
        out["memory"] = memory
    if cpu:
        out["cpu"] = cpu
    if new.get("PidsLimit"):
        out["pids"] = {"limit": new["PidsLimit"] if new["PidsLimit"] > 0 else -1}
    if new.get("BlkioWeight"):
        out["blockIO"] = {"weight": new["BlkioWeight"]}
    return out


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def update(service: ContainerService, ref: str, body: dict[str, Any]) -> None:
    from isobox.engine.execs import runtime_binary
    from isobox.linux.run import run

    record = service.get(ref)
    request = dict(record.request)
    host = dict(request.get("HostConfig") or {})
    new = {k: body[k] for k in _FIELDS if body.get(k)}
    policy = body.get("RestartPolicy") or None
    if policy is not None:
        name = policy.get("Name") or "no"
        if name not in _RESTART:
            raise InvalidArgument(f"invalid restart policy '{name}'")
        if host.get("AutoRemove") and name != "no":
            raise Conflict("Restart policy cannot be updated because AutoRemove is enabled "
                           "for the container")
    _check(host, new)
    resources = resources_of(new)
    if resources and live.is_live(record) and record.isolation == "vm":
        _update_in_vm(service, record.id, resources)
    elif resources and live.is_live(record):
        result = run([runtime_binary(record.runtime), "--root", service.runtime_root,
                      "update", "--resources", "-", record.id],
                     input=json.dumps(resources).encode(), check=False, timeout=60)
        if result.returncode != 0:
            text = result.stderr.decode(errors="replace").strip().splitlines()
            raise Unavailable(f"Cannot update container {record.id}: "
                              f"{text[-1] if text else 'the runtime failed'}")
    if resources:
        spec = live.bundle_spec(service, record)
        if spec:
            linux = spec.setdefault("linux", {})
            _merge(linux.setdefault("resources", {}), resources)
            atomic_write(live.spec_path(service, record),
                         json.dumps(spec).encode(), 0o600)
    host.update(new)
    if policy is not None:
        host["RestartPolicy"] = {"Name": policy.get("Name") or "no",
                                 "MaximumRetryCount": int(policy.get("MaximumRetryCount") or 0)}
        _write_restart(service, record.id, host["RestartPolicy"])
    request["HostConfig"] = host
    service.store.set_request(record.id, request)
    service.event(record, "update")


def _update_in_vm(service: ContainerService, container_id: str,
                  resources: dict[str, Any]) -> None:
    """The container's cgroup in its guest, through the agent. Its VM's size
    and vCPUs are fixed while it runs: a memory limit must fit the VM (the
    next start sizes the VM for the new limit)."""
    from isobox.engine.vmspec import MEMORY_OVERHEAD_MB
    from isobox.vm import execclient

    d = service.dir(container_id)
    try:
        with open(os.path.join(d, "shim.json"), "rb") as f:
            vm_mb = int(json.loads(f.read())["vm"]["memory_mb"])
    except (OSError, ValueError, KeyError, TypeError):
        vm_mb = 0
    limit = (resources.get("memory") or {}).get("limit")
    if vm_mb and limit and limit > (vm_mb - MEMORY_OVERHEAD_MB) << 20:
        raise Conflict(f"Cannot update container {container_id}: a memory limit of "
                       f"{limit >> 20} MiB does not fit its running VM ({vm_mb} MiB, "
                       f"{MEMORY_OVERHEAD_MB} MiB of it the guest's): stop it, update, start")
    try:
        execclient.call(d, "update", resources=resources)
    except IsoboxError as exc:
        raise Unavailable(f"Cannot update container {container_id}: {exc}") from None


def _write_restart(service: ContainerService, container_id: str, policy: dict[str, Any]) -> None:
    path = os.path.join(service.dir(container_id), "shim.json")
    try:
        with open(path, "rb") as f:
            shim = json.loads(f.read())
    except (OSError, ValueError):
        return
    shim["restart"] = {"name": policy["Name"], "max_retries": policy["MaximumRetryCount"]}
    atomic_write(path, json.dumps(shim).encode(), 0o600)
