"""``exec``: another process in a running container, through the container's
runtime (``isobox-runtime exec`` proxies a tty itself when given -t)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from isobox.errors import Conflict, InvalidArgument

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService


def runtime_binary(name: str) -> str:
    if name == "isobox-runtime":
        sibling = os.path.join(os.path.dirname(sys.executable), "isobox-runtime")
        if os.path.exists(sibling):
            return sibling
    found = shutil.which(name)
    if found is None:
        raise InvalidArgument(f"runtime {name} is not installed")
    return found


def exec_spec(service: ContainerService, ref: str, cmd: list[str], *, tty: bool = False,
              env: list[str] | None = None, user: str | None = None,
              workdir: str | None = None, privileged: bool = False
              ) -> tuple[Any, dict[str, Any]]:
    """(record, OCI process) for another process in a running container: the
    container's own process with ``cmd``, ``env`` over its environment, and
    the user, working directory and privileges asked for."""
    from isobox.engine.runspec import replace_or_append_env

    record = service.get(ref)
    if record.state["Status"] == "paused":
        raise Conflict(f"Container {record.id} is paused, unpause the container before exec")
    if record.state["Status"] != "running":
        raise Conflict(f"Container {record.id} is not running")
    if not cmd:
        raise InvalidArgument("exec needs a command")
    bundle = os.path.join(service.dir(record.id), "bundle")
    with open(os.path.join(bundle, "config.json"), "rb") as f:
        spec = json.loads(f.read())
    base: dict[str, Any] = spec["process"]
    process = dict(base)
    process["args"] = list(cmd)
    process["terminal"] = tty
    process["env"] = replace_or_append_env(base.get("env") or [], env or [])
    if workdir:
        if not workdir.startswith("/"):
            raise InvalidArgument(f"the working directory '{workdir}' is invalid, it needs to "
                                  "be an absolute path")
        process["cwd"] = workdir
    if user:
        resolved = _resolve_user(service, record, bundle, user)
        process["user"] = {"uid": resolved.uid, "gid": resolved.gid,
                           "additionalGids": list(resolved.additional_gids or [])}
    if privileged:
        from isobox.linux import capabilities, proc

        names = capabilities.names_of(capabilities.bounding(proc.cap_last_cap()))
        process["capabilities"] = {k: names for k in ("bounding", "effective", "permitted")}
    process.pop("consoleSize", None)
    return record, process


def exec_process(service: ContainerService, ref: str, cmd: list[str], *, tty: bool = False,
                 interactive: bool = False, detach: bool = False, env: list[str] | None = None,
                 user: str | None = None, workdir: str | None = None,
                 privileged: bool = False) -> int:
    record, process = exec_spec(service, ref, cmd, tty=tty, env=env, user=user,
                                workdir=workdir, privileged=privileged)
    service.event(record, "exec_create: " + " ".join(cmd))
    if record.isolation == "vm":
        return _exec_in_vm(service, record, process, cmd, tty=tty, interactive=interactive,
                           detach=detach)
    with tempfile.NamedTemporaryFile("w", dir=service.dir(record.id), prefix="exec-",
                                     suffix=".json", delete=False) as f:
        json.dump(process, f)
        process_file = f.name
    try:
        argv = [runtime_binary(record.runtime), "--root", service.runtime_root, "exec",
                "--process", process_file]
        if detach:
            argv.append("--detach")
        argv.append(record.id)
        service.event(record, "exec_start: " + " ".join(cmd))
        stdin = None if interactive or tty else subprocess.DEVNULL
        if detach:
            # A file, not a pipe: the detached process inherits the runtime's
            # stderr and would hold a pipe open for as long as it runs.
            with tempfile.TemporaryFile() as err:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err, check=False)
                if result.returncode != 0:
                    err.seek(0)
                    raise Conflict(err.read().decode(errors="replace").strip()
                                   .removeprefix("isobox-runtime: "))
            return 0
        code = subprocess.run(argv, stdin=stdin, check=False).returncode
        service.event(record, "exec_die", exitCode=str(code))
        return code
    finally:
        os.unlink(process_file)


def _resolve_user(service: ContainerService, record: Any, bundle: str, user: str) -> Any:
    """-u NAME through the image's /etc/passwd and /etc/group. A VM's root
    filesystem lives in the guest: read the image's layers on the host."""
    from isobox.engine import userdb

    if record.isolation != "vm":
        return userdb.resolve_user(os.path.join(bundle, "rootfs"), user)
    from isobox.engine.bundle import read_only_mounts
    from isobox.images.snapshots import mount_all, unmount

    mounts = read_only_mounts(service.images.snapshots.mounts(record.snapshot))
    with tempfile.TemporaryDirectory(dir=service.dir(record.id), prefix="users-") as view:
        mount_all(mounts, view)
        try:
            return userdb.resolve_user(view, user)
        finally:
            unmount(view)


def _exec_in_vm(service: ContainerService, record: Any, process: dict[str, Any],
                cmd: list[str], *, tty: bool, interactive: bool, detach: bool) -> int:
    from isobox.vm import execclient

    service.event(record, "exec_start: " + " ".join(cmd))
    code = execclient.run(service.dir(record.id), process, tty=tty,
                          interactive=interactive or tty, detach=detach)
    if not detach:
        service.event(record, "exec_die", exitCode=str(code))
    return code
