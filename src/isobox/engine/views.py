"""Docker's views of a container: ``inspect`` JSON, ``ps`` rows and status words."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from isobox.engine.container_store import ContainerRecord
from isobox.engine.logs import parse_time
from isobox.humanize import rfc3339_nano

ZERO_TIME = "0001-01-01T00:00:00Z"


def process_args(container_dir: str) -> list[str]:
    try:
        with open(os.path.join(container_dir, "bundle", "config.json"), "rb") as f:
            args = json.loads(f.read())["process"]["args"]
            return [str(a) for a in args]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _ago(text: str, now: float) -> str:
    from isobox.humanize import human_duration

    try:
        return human_duration(now - parse_time(text))
    except ValueError:
        return ""


def status_text(state: dict[str, Any], now: float | None = None) -> str:
    """``Up 5 seconds``, ``Exited (0) 3 seconds ago``, ``Created``..."""
    from isobox.humanize import human_duration

    now = time.time() if now is None else now
    status = state["Status"]
    if status in ("running", "paused"):
        try:
            up = human_duration(now - parse_time(state["StartedAt"]))
        except ValueError:
            up = "Less than a second"
        return f"Up {up}" + (" (Paused)" if status == "paused" else "")
    if status == "restarting":
        return f"Restarting ({state['ExitCode']}) {_ago(state['FinishedAt'], now)} ago"
    if status == "exited":
        return f"Exited ({state['ExitCode']}) {_ago(state['FinishedAt'], now)} ago"
    if status == "dead":
        return "Dead"
    return "Created"


# Docker's zero values, so that ``inspect -f '{{.HostConfig.Memory}}'`` and
# the like work whatever the request left out.
CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
    "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
    "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
    "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": {},
}
HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default", "PortBindings": {}, "RestartPolicy": {
        "Name": "no", "MaximumRetryCount": 0}, "AutoRemove": False, "VolumeDriver": "",
    "VolumesFrom": None, "CapAdd": None, "CapDrop": None, "CgroupnsMode": "private",
    "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None,
    "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
    "SecurityOpt": None, "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864,
    "ConsoleSize": [0, 0], "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "",
    "BlkioWeight": 0, "CpuPeriod": 0, "CpuQuota": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": [], "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
    "OomKillDisable": False, "PidsLimit": None, "Ulimits": None, "Mounts": None,
    "Tmpfs": None, "Init": None,
}


def inspect(record: ContainerRecord, container_dir: str, image_id: str,
            log_path: str, merged: dict[str, Any] | None = None) -> dict[str, Any]:
    """Docker's inspect JSON; ``merged`` is the request's Config merged with
    the image's (what the container runs with), when known."""
    req = record.request
    host = {**HOST_CONFIG_DEFAULTS, **(req.get("HostConfig") or {})}
    log_config = host["LogConfig"] or {}
    host["LogConfig"] = {"Type": log_config.get("Type") or "json-file",
                         "Config": log_config.get("Config") or {}}
    host["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0,
                             **(host["RestartPolicy"] or {})}
    host["RestartPolicy"]["Name"] = host["RestartPolicy"]["Name"] or "no"
    config = {**CONFIG_DEFAULTS, "Hostname": record.id[:12],
              **{k: v for k, v in req.items() if k not in ("HostConfig", "NetworkingConfig")},
              **(merged or {})}
    args = process_args(container_dir)
    state = dict(record.state)
    state.setdefault("Dead", False)
    return {
        "Id": record.id,
        "Created": rfc3339_nano(record.created),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": state,
        "Image": image_id,
        "ResolvConfPath": os.path.join(container_dir, "resolv.conf"),
        "HostnamePath": os.path.join(container_dir, "hostname"),
        "HostsPath": os.path.join(container_dir, "hosts"),
        "LogPath": log_path,
        "Name": "/" + record.name,
        "RestartCount": state.get("RestartCount", 0),
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {"Runtime": record.runtime, "Isolation": record.isolation, **host},
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "Mounts": [],
        "Config": config,
        "NetworkSettings": {"Networks": {}, "Ports": {}},
    }


def ps_row(record: ContainerRecord, container_dir: str, now: float | None = None
           ) -> dict[str, Any]:
    args = process_args(container_dir)
    # Docker's list view: arguments with a space in single quotes.
    command = " ".join([*args[:1], *(f"'{a}'" if " " in a else a for a in args[1:])])
    labels = record.request.get("Labels") or {}
    return {
        "ID": record.id, "Image": record.image, "Command": command,
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(record.created)),
        "Created": record.created, "State": record.state["Status"],
        "Status": status_text(record.state, now), "Ports": "", "Names": record.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "LabelsMap": labels, "Mounts": "", "Networks": "", "Size": "",
        "ExitCode": record.state["ExitCode"], "ImageID": record.image_id,
    }
