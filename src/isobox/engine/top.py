"""``top``: the host's ``ps`` output, kept to the container's processes (the
pids of its cgroup), as Docker's daemon and ``runc ps`` do; for a VM-isolated
container, the guest's ``ps`` (through its agent), kept likewise."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from isobox.engine import live
from isobox.errors import InvalidArgument, IsoboxError, NotRunning, Unavailable

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

DEFAULT_ARGS = "-ef"
_ENV_KEEP = ("PATH", "TZ", "LANG", "LC_ALL", "LC_TIME", "COLUMNS")


def _ps(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    from isobox.linux.run import run

    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        return run(["ps", *argv], env=env, check=False, timeout=30)
    except FileNotFoundError:
        raise Unavailable("ps: executable file not found in $PATH") from None


def top(service: ContainerService, ref: str, ps_args: str = "") -> tuple[list[str],
                                                                         list[list[str]]]:
    """(titles, processes) for the container's processes."""
    record = service.get(ref)
    live.require_running(record)
    args = (ps_args or DEFAULT_ARGS).split(" ")
    args = [a for a in args if a] or [DEFAULT_ARGS]
    if record.isolation == "vm":
        return _top_in_vm(service, record.id, args)
    pids = live.pids(service, record)
    result = _ps([*args, "-q", ",".join(str(p) for p in pids)]) if pids else None
    if result is None or result.returncode != 0:
        # Some options (such as f) cannot be combined with -q: without it.
        result = _ps(args)
        if result.returncode != 0:
            first = result.stderr.decode(errors="replace").strip().splitlines()
            raise InvalidArgument(f"ps: {first[0] if first else 'exit status ' + str(result.returncode)}")
    return parse_ps(result.stdout.decode(errors="replace"), set(pids))


def _top_in_vm(service: ContainerService, container_id: str,
               args: list[str]) -> tuple[list[str], list[list[str]]]:
    """The guest's ps (busybox's: its options, its columns), kept to the
    container's processes, as pids of the guest."""
    from isobox.vm import execclient

    try:
        found = execclient.call(service.dir(container_id), "top", args=args)
    except NotRunning:
        raise
    except IsoboxError as exc:  # ps refused the arguments
        raise InvalidArgument(str(exc)) from None
    pids = found.get("pids")
    if not isinstance(pids, list):
        raise Unavailable("the VM's agent did not list the container's processes")
    return parse_ps(str(found.get("output") or ""), {int(p) for p in pids})


def parse_ps(output: str, pids: set[int]) -> tuple[list[str], list[list[str]]]:
    """Docker's parsePSOutput: rows whose PID is the container's; a thread
    row (PID "-") follows its process; the last column takes the rest."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidArgument("Couldn't find PID field in ps output")
    at = titles.index("PID")
    rows: list[list[str]] = []
    keep_threads = False
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= at:
            continue
        if fields[at] == "-":
            if keep_threads:
                rows.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[at])
        except ValueError:
            raise InvalidArgument(f"Unexpected pid '{fields[at]}'") from None
        keep_threads = pid in pids
        if keep_threads:
            rows.append(_fit(fields, len(titles)))
    return titles, rows


def _fit(fields: list[str], n: int) -> list[str]:
    return [*fields[:n - 1], " ".join(fields[n - 1:])]
