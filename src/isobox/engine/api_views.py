"""The Engine API's own shapes of what the engine knows, for ``isoboxd``:
the container list (``GET /containers/json``) with Docker's filters, the
stats object, ``wait`` with its conditions, and the daemon's ``info``."""

from __future__ import annotations

import fnmatch
import os
import platform
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isobox.engine import live
from isobox.engine.views import process_args, status_text
from isobox.errors import InvalidArgument, IsoboxError, NotFound

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService
    from isobox.engine.stats import Sample

_LIST_FILTERS = ("name", "id", "status", "exited", "label", "ancestor", "before", "since",
                 "volume", "network", "isolation", "health", "is-task", "publish", "expose")


def _ports(service: ContainerService, record: ContainerRecord) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if record.state["Status"] not in ("running", "paused"):
        return out
    for private, address in service.networking.bindings(service.dir(record.id)) or []:
        number, _, proto = private.partition("/")
        host_ip, _, host_port = address.rpartition(":")
        out.append({"IP": host_ip, "PrivatePort": int(number), "PublicPort": int(host_port),
                    "Type": proto or "tcp"})
    return out


#: bundle/config.json path -> (mtime_ns, size, inode, the process's args).
_ARGS: dict[str, tuple[int, int, int, list[str]]] = {}
_ARGS_MAX = 4096


def cached_process_args(container_dir: str) -> list[str]:
    """``views.process_args`` (the OCI spec read and parsed, 40-50 us), kept
    while the spec's mtime, size and inode stay: a listing reads each spec
    once per change instead of once per request. Only a spec that parsed is
    kept (a half-written one is read again); safe from any thread."""
    path = os.path.join(container_dir, "bundle", "config.json")
    try:
        st = os.stat(path)
    except OSError:
        return []
    found = _ARGS.get(path)
    if found is not None and found[:3] == (st.st_mtime_ns, st.st_size, st.st_ino):
        return list(found[3])
    args = process_args(container_dir)
    if args:
        if len(_ARGS) >= _ARGS_MAX:
            _ARGS.clear()
        _ARGS[path] = (st.st_mtime_ns, st.st_size, st.st_ino, list(args))
    return args


def container_summary(service: ContainerService, record: ContainerRecord, *,
                      size: bool = False, now: float | None = None) -> dict[str, Any]:
    """One item of ``GET /containers/json``."""
    args = cached_process_args(service.dir(record.id))
    command = " ".join([*args[:1], *(f"'{a}'" if " " in a else a for a in args[1:])])
    host = record.request.get("HostConfig") or {}
    settings = service.networking.settings(service.dir(record.id)) or {}
    out: dict[str, Any] = {
        "Id": record.id, "Names": ["/" + record.name], "Image": record.image,
        "ImageID": record.image_id, "Command": command, "Created": int(record.created),
        "Ports": _ports(service, record), "Labels": record.request.get("Labels") or {},
        "State": record.state["Status"], "Status": status_text(record.state, now),
        "HostConfig": {"NetworkMode": host.get("NetworkMode") or "bridge"},
        "NetworkSettings": {"Networks": settings.get("Networks") or {}},
        "Mounts": [],
    }
    if size:
        out["SizeRw"] = service.size(record.id)
        out["SizeRootFs"] = out["SizeRw"]
    return out


def _matches(service: ContainerService, record: ContainerRecord, key: str,
             value: str) -> bool:
    labels = record.request.get("Labels") or {}
    status = record.state["Status"]
    if key == "name":
        return re.search(value.lstrip("/"), record.name) is not None
    if key == "id":
        return record.id.startswith(value)
    if key == "status":
        return bool(status == value)
    if key == "exited":
        return status == "exited" and str(record.state["ExitCode"]) == value
    if key == "label":
        k, sep, v = value.partition("=")
        return k in labels and (not sep or labels[k] == v)
    if key == "ancestor":
        try:
            if service.images.get(value).id == record.image_id:
                return True
        except (NotFound, InvalidArgument):
            pass
        return fnmatch.fnmatch(record.image, value) or record.image_id.startswith(value)
    if key == "isolation":
        return record.isolation == value or (value == "default" and record.isolation ==
                                             "process")
    if key == "network":
        host = record.request.get("HostConfig") or {}
        return bool((host.get("NetworkMode") or "bridge") == value)
    return True


def list_containers(service: ContainerService, *, all_containers: bool = False,
                    limit: int = -1, size: bool = False,
                    filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    filters = filters or {}
    for key, values in filters.items():
        if key not in _LIST_FILTERS:
            raise InvalidArgument(f"invalid filter '{key}'")
        if key == "status":
            for v in values:
                if v not in ("created", "restarting", "running", "removing", "paused",
                             "exited", "dead"):
                    raise InvalidArgument(f"invalid filter 'status={v}'")
    show_all = all_containers or limit > 0 or "status" in filters or "exited" in filters
    records = service.records(all_containers=show_all)
    for key in ("before", "since"):
        for ref in filters.get(key, []):
            pivot = service.store.lookup(ref)
            records = [r for r in records
                       if (r.created < pivot.created if key == "before"
                           else r.created > pivot.created)]
    records = [r for r in records
               if all(any(_matches(service, r, k, v) for v in vs)
                      for k, vs in filters.items() if k not in ("before", "since"))]
    if limit > 0:
        records = records[:limit]
    now = time.time()
    return [container_summary(service, r, size=size, now=now) for r in records]


# -- wait ---------------------------------------------------------------------------------

def wait(service: ContainerService, ref: str, condition: str,
         stop: threading.Event | None = None, poll: float = 0.05, *,
         finished: str | None = None) -> dict[str, Any]:
    """Docker's ``POST /containers/{id}/wait``: ``not-running`` answers at
    once for a stopped container, ``next-exit`` waits for the next exit
    even of a container not started yet, ``removed`` until the container is
    gone (removing it when it asked for AutoRemove, as Docker's daemon does).
    ``finished``: the container's FinishedAt when the wait was asked for."""
    if condition not in ("", "not-running", "next-exit", "removed"):
        raise InvalidArgument(f"invalid condition: {condition!r}")
    stop = stop or threading.Event()
    record = service.get(ref)
    cid = record.id
    finished = record.state["FinishedAt"] if finished is None else finished
    code: int | None = None
    if condition in ("", "not-running") and not live.is_live(record):
        return {"StatusCode": int(record.state["ExitCode"]), "Error": None}
    while code is None and not stop.is_set():
        try:
            record = service.get(cid)
        except NotFound:
            return {"StatusCode": 0, "Error": None}
        monitored = record.state["Status"] == "created" and service.monitor_alive(record)
        if live.is_live(record) or monitored:
            # The monitor answers once the container has exited for good.
            code = _wait_monitor(service, record)
            if code is None:
                code = int(service.get(cid).state["ExitCode"])
        elif record.state["FinishedAt"] != finished:
            code = int(record.state["ExitCode"])
        else:
            stop.wait(poll)
    if code is None:
        raise IsoboxError("the client went away")
    if condition != "removed":
        return {"StatusCode": code, "Error": None}
    while not stop.is_set():
        try:
            record = service.get(cid)
        except NotFound:
            break
        if (record.request.get("HostConfig") or {}).get("AutoRemove"):
            try:
                service.remove(cid, force=True)
            except NotFound:
                pass
            break
        stop.wait(poll)
    return {"StatusCode": code, "Error": None}


def _wait_monitor(service: ContainerService, record: ContainerRecord) -> int | None:
    try:
        code, _ = service.shim(record).wait()
        return int(code)
    except (IsoboxError, OSError, TimeoutError):
        return None


# -- stats ---------------------------------------------------------------------------------

def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"


def stats_json(record: ContainerRecord, current: Sample, previous: Sample | None,
               read: float, preread: float | None) -> dict[str, Any]:
    """Docker's ``types.StatsJSON`` from two samples (the docker CLI computes
    CPU % from ``cpu_stats`` against ``precpu_stats``)."""
    def cpu(s: Sample | None) -> dict[str, Any]:
        if s is None or not s.running:
            return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                                  "usage_in_usermode": 0}, "throttling_data": {
                "periods": 0, "throttled_periods": 0, "throttled_time": 0}}
        return {"cpu_usage": {"total_usage": s.cpu_total, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "system_cpu_usage": s.system_cpu, "online_cpus": s.online_cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0,
                                    "throttled_time": 0}}

    blkio = [{"major": 0, "minor": 0, "op": "read", "value": current.blk_read},
             {"major": 0, "minor": 0, "op": "write", "value": current.blk_write}]
    return {
        "id": record.id, "name": "/" + record.name,
        "read": _rfc3339(read) if current.running else "0001-01-01T00:00:00Z",
        "preread": _rfc3339(preread) if preread else "0001-01-01T00:00:00Z",
        "pids_stats": {"current": current.pids} if current.running else {},
        "blkio_stats": {"io_service_bytes_recursive": blkio if current.running else None},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": cpu(current), "precpu_stats": cpu(previous),
        "memory_stats": ({"usage": current.mem_usage, "limit": current.mem_limit,
                          "stats": {}} if current.running else {}),
        "networks": ({"eth0": {"rx_bytes": current.net_rx, "tx_bytes": current.net_tx,
                               "rx_packets": 0, "tx_packets": 0, "rx_errors": 0,
                               "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}}
                     if current.running else None),
    }


def stats_stream(service: ContainerService, ref: str, *, stream: bool, one_shot: bool,
                 stop: threading.Event, interval: float = 1.0,
                 ) -> Any:
    """Stats objects: one (after a second's sampling unless one_shot), or
    one a second while ``stream``."""
    from isobox.engine.stats import sample

    record = service.get(ref)
    previous: Sample | None = None
    preread: float | None = None
    if not one_shot:
        previous, preread = sample(service, record), time.time()
        if stop.wait(0.0 if stream else interval):
            return
    while not stop.is_set():
        record = service.get(record.id)
        current, read = sample(service, record), time.time()
        yield stats_json(record, current, previous, read, preread)
        if not stream:
            return
        previous, preread = current, read
        if stop.wait(interval):
            return


# -- info -------------------------------------------------------------------------------

def _meminfo() -> int:
    from isobox.linux.proc import total_memory

    return total_memory()


def info(service: ContainerService, *, name: str, api_socket: str) -> dict[str, Any]:
    """``GET /info``: counts, host and engine facts."""
    from isobox import __version__
    from isobox.engine.hostinfo import host_facts

    records = service.records(all_containers=True)
    statuses = [r.state["Status"] for r in records]
    facts: dict[str, Any] = {}
    try:
        facts = host_facts(service.config)
    except (IsoboxError, OSError):
        pass
    runtimes = {n: {"path": p} for n, p in (facts.get("Runtimes") or {}).items()}
    runtimes.setdefault("isobox-runtime", {"path": "isobox-runtime"})
    return {
        "ID": _engine_id(service), "Containers": len(records),
        "ContainersRunning": statuses.count("running"),
        "ContainersPaused": statuses.count("paused"),
        "ContainersStopped": len(records) - statuses.count("running")
        - statuses.count("paused"),
        "Images": len(service.images.records.all()), "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "overlay"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"],
                    "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
        "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
        "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False,
        "NGoroutines": 0, "SystemTime": _rfc3339(time.time()), "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": str(facts.get("CgroupVersion") or "1"),
        "NEventsListener": 0, "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux",
        "Architecture": platform.machine(), "IndexServerAddress":
        "https://index.docker.io/v1/", "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
            "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": _meminfo(),
        "GenericResources": None, "DockerRootDir": service.config.root,
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": name, "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": __version__, "Runtimes": runtimes,
        "DefaultRuntime": "isobox-runtime", "Swarm": {"LocalNodeState": "inactive",
                                                      "NodeID": "", "NodeAddr": "",
                                                      "ControlAvailable": False,
                                                      "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": str(facts.get("DefaultIsolation") or
                                                     "process"),
        "InitBinary": "", "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""}, "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": None, "IsoboxSocket": api_socket,
    }


def _engine_id(service: ContainerService) -> str:
    path = os.path.join(service.config.root, "engine-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    import uuid

    value = str(uuid.uuid4()).upper()
    try:
        with open(path, "x") as f:
            f.write(value)
    except FileExistsError:
        with open(path) as f:
            return f.read().strip()
    return value


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "Linux"


Poll = Callable[[float], bool]
