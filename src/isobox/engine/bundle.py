"""The container directory the monitor runs from: ``bundle/config.json``
(the OCI spec), ``shim.json``, and the hostname, hosts and resolv.conf files
bound into the container."""

from __future__ import annotations

import json
import os
import platform
import stat
from typing import TYPE_CHECKING, Any

from isobox.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from isobox.engine.api_types import CreateRequest
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService
    from isobox.images.records import ImageRecord
    from isobox.images.snapshots import Mount


def write(service: ContainerService, record: ContainerRecord, image: ImageRecord,
          mounts: list[Mount]) -> None:
    from isobox.cgroups import detect_version
    from isobox.engine import api_types, runspec, userdb
    from isobox.images.snapshots import mount_all, unmount

    d = service.dir(record.id)
    bundle = os.path.join(d, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs, mode=0o755, exist_ok=True)
    create = api_types.decode_create(record.request)
    host = create.host_config
    image_config = service.images.config_of(image)
    merged = runspec.merge_config(create, image_config)
    hostname = create.hostname or record.id[:12]
    files = _write_files(d, hostname, create)
    mount_all(read_only_mounts(mounts), rootfs)
    try:
        user = userdb.resolve_user(rootfs, merged.user or "", list(host.group_add or []))
        oci_mounts = _mounts(service, create, merged, rootfs)
        make_workdir = not _is_dir_in_root(rootfs, merged.working_dir or "/")
    finally:
        unmount(rootfs)
    if make_workdir:  # Docker creates a missing working directory (root's, 0755)
        mount_all(mounts, rootfs)
        try:
            _mkdir_in_root(rootfs, merged.working_dir)
        finally:
            unmount(rootfs)
    devices = [_device(dev.path_on_host, dev.path_in_container or dev.path_on_host,
                       dev.cgroup_permissions or "rwm") for dev in host.devices or ()]
    if runspec.wants_host_devices(create):
        devices += _host_devices()
    parent = host.cgroup_parent or "/isobox"
    spec = runspec.build_spec(
        create, image_config, container_id=record.id, rootfs=rootfs, hostname=hostname,
        user=user, mounts=oci_mounts, resolv_conf=files["resolv.conf"],
        hosts_file=files["hosts"], hostname_file=files["hostname"],
        cgroups_path=f"{parent.rstrip('/')}/{record.id}", kernel=_kernel(),
        host_caps=_host_caps(), cgroup_version=detect_version(), devices=devices,
        default_sysctls=True, namespace_paths=_joined_namespaces(service, host))
    vm = None
    if record.isolation == "vm":
        from isobox.engine import vmspec

        spec, vm = vmspec.prepare(service, record, create, spec, mounts)
    _plain_write(os.path.join(bundle, "config.json"), json.dumps(spec).encode(), 0o600)
    _write_shim_config(service, record, create, merged, bundle, mounts, vm)


def _joined_namespaces(service: ContainerService, host: Any) -> dict[str, str]:
    """``--network/--pid/--ipc container:<name|id>``: the running target's
    namespaces, by its init's pid."""
    from isobox.errors import Conflict

    paths: dict[str, str] = {}
    for kind, ns, mode in (("network", "net", host.network_mode), ("pid", "pid", host.pid_mode),
                           ("ipc", "ipc", host.ipc_mode)):
        if not (mode or "").startswith("container:") or mode == "container:":
            continue
        target = service.get(mode.partition(":")[2])
        if target.isolation == "vm":
            raise InvalidArgument(f"cannot join the {kind} namespace of VM-isolated container "
                                  f"{target.name}: it lives in the VM's kernel")
        pid = int(target.state.get("Pid") or 0)
        if target.state["Status"] not in ("running", "paused") or pid <= 0:
            raise Conflict(f"cannot join the {kind} namespace of container {target.name}: "
                           "it is not running")
        paths[kind] = f"/proc/{pid}/ns/{ns}"
    return paths


def read_only_mounts(mounts: list[Mount]) -> list[Mount]:
    """The new snapshot's mounts without its (still empty) upper layer, read-only.

    Enough to read the image's users and volume content, and an overlay
    without an upper layer unmounts without syncing the host's filesystem
    (the writable one made create 2-50 ms slower, more on a busy host)."""
    from isobox.images.snapshots import Mount

    out = []
    for m in mounts:
        opts = {k: v for k, _, v in (o.partition("=") for o in m.options)}
        if m.type != "overlay" or "upperdir" not in opts or "lowerdir" not in opts:
            out.append(m)
            continue
        kept = [o for o in m.options
                if o.partition("=")[0] not in ("upperdir", "workdir", "lowerdir", "rw")]
        lower = f"lowerdir={opts['upperdir']}:{opts['lowerdir']}"
        out.append(Mount(m.type, m.source, ["ro", *kept, lower], m.target))
    return out


def _is_dir_in_root(rootfs: str, path: str) -> bool:
    from isobox.linux import mounts

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = mounts.resolve_in_root(root_fd, path)
    except OSError:
        return False
    finally:
        os.close(root_fd)
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _mkdir_in_root(rootfs: str, path: str) -> None:
    from isobox.linux import mounts

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(mounts.mkdir_all_in_root(root_fd, path))
    except OSError as exc:
        raise InvalidArgument(f"cannot create the working directory {path}: "
                              f"{exc.strerror}") from None
    finally:
        os.close(root_fd)


def _plain_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` atomically, without fsync: the per-container files
    Docker (containerd) also writes without one (hostname, hosts,
    resolv.conf, the bundle's config.json, the monitor's shim.json); a crash
    before they reach the disk leaves a container that ``rm`` still removes.
    The file has ``mode`` from its creation on (no window with more)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask took away
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def _write_files(d: str, hostname: str, create: CreateRequest) -> dict[str, str]:
    host = create.host_config
    paths = {name: os.path.join(d, name) for name in ("hostname", "hosts", "resolv.conf")}
    _plain_write(paths["hostname"], f"{hostname}\n".encode())
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
             "ff02::2\tip6-allrouters"]
    for entry in host.extra_hosts or ():
        name, sep, addr = entry.partition(":")
        if not sep or not name or not addr:
            raise InvalidArgument(f"invalid extra host {entry!r}: want name:ip")
        hosts.append(f"{addr}\t{name}")
    _plain_write(paths["hosts"], ("\n".join(hosts) + "\n").encode())
    _plain_write(paths["resolv.conf"], _resolv_conf(host.dns, host.dns_search,
                                                    host.dns_options).encode())
    return paths


def _resolv_conf(dns: list[str] | None, search: list[str] | None,
                 options: list[str] | None) -> str:
    """The host's resolv.conf without loopback resolvers (unreachable from a
    container's own network namespace), overridden by --dns*, as Docker does."""
    try:
        with open("/etc/resolv.conf") as f:
            host_lines = f.read().splitlines()
    except OSError:
        host_lines = []
    servers = [ln.split()[1] for ln in host_lines
               if ln.startswith("nameserver") and len(ln.split()) > 1
               and not ln.split()[1].startswith(("127.", "::1"))]
    lines = [f"nameserver {s}" for s in (dns or servers)]
    host_search = next((ln.split()[1:] for ln in host_lines if ln.startswith("search")), [])
    host_options = next((ln.split()[1:] for ln in host_lines if ln.startswith("options")), [])
    if search or host_search:
        lines.append("search " + " ".join(search or host_search))
    if options or host_options:
        lines.append("options " + " ".join(options or host_options))
    return "\n".join(lines) + "\n"


def _mounts(service: ContainerService, create: CreateRequest, merged: Any,
            rootfs: str) -> list[dict[str, Any]]:
    """OCI mounts for Binds, Mounts, and anonymous volumes (the image's VOLUMEs
    and ``-v /path``); new named volumes are filled from the image."""
    from isobox.engine import api_types
    from isobox.engine.volumes import VolumeService

    volumes = VolumeService(service.config.root)
    host = create.host_config
    out: dict[str, dict[str, Any]] = {}

    def volume_mount(name: str | None, target: str, read_only: bool, no_copy: bool) -> None:
        info = volumes.create(name, anonymous=name is None)
        if not no_copy:
            _fill_volume(volumes, info["Name"], rootfs, target)
        out[target] = {"destination": target, "type": "bind", "source": info["Mountpoint"],
                       "options": ["rbind", "ro" if read_only else "rw"]}

    for entry in host.binds or ():
        bind = api_types.parse_bind(entry)
        if bind.kind == "bind":
            if not os.path.exists(bind.source):
                os.makedirs(bind.source, exist_ok=True)  # Docker creates a missing bind source
            opts = ["rbind", "ro" if bind.read_only else "rw"]
            if bind.propagation:
                opts.append(bind.propagation)
            out[bind.target] = {"destination": bind.target, "type": "bind",
                                "source": os.path.realpath(bind.source), "options": opts}
        else:
            volume_mount(bind.source or None, bind.target, bind.read_only, bind.no_copy)
    for m in host.mounts or ():
        if m.type == "bind":
            if not os.path.exists(m.source):
                raise InvalidArgument(f"invalid mount config for type \"bind\": bind source "
                                      f"path does not exist: {m.source}")
            opts = ["rbind", "ro" if m.read_only else "rw"]
            if m.bind_options and m.bind_options.propagation:
                opts.append(m.bind_options.propagation)
            out[m.target] = {"destination": m.target, "type": "bind", "source": m.source,
                             "options": opts}
        elif m.type == "volume":
            no_copy = bool(m.volume_options and m.volume_options.no_copy)
            volume_mount(m.source or None, m.target, m.read_only, no_copy)
        elif m.type == "tmpfs":
            continue  # runspec turns tmpfs mounts into OCI tmpfs mounts
        else:
            raise InvalidArgument(f"invalid mount type {m.type!r}: want bind, volume or tmpfs")
    for target in (merged.volumes or {}):
        if target not in out and target not in (host.tmpfs or {}):
            volume_mount(None, target, False, False)
    return list(out.values())


def _fill_volume(volumes: Any, name: str, rootfs: str, target: str) -> None:
    """Copy the image's content at ``target`` into a new volume, resolving the
    path inside the rootfs so an image symlink cannot point at the host."""
    from isobox.linux import libc
    from isobox.linux.mounts import fd_path

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = libc.openat2(root_fd, target, os.O_PATH | os.O_DIRECTORY,
                          resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return  # nothing there (or not a directory): the volume starts empty
    finally:
        os.close(root_fd)
    try:
        # The trailing slash: /proc/self/fd/N is itself a (magic) link, which
        # fill_from refuses; with the slash it names the directory it resolves to.
        volumes.fill_from(name, fd_path(fd) + "/")
    finally:
        os.close(fd)


def _device(path_on_host: str, path_in_container: str, permissions: str) -> dict[str, Any]:
    try:
        st = os.stat(path_on_host)
    except FileNotFoundError:
        raise NotFound(f"error gathering device information while adding custom device "
                       f"\"{path_on_host}\": no such file or directory") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidArgument(f"{path_on_host} is not a device")
    return {"path_in_container": path_in_container, "type": kind,
            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "permissions": permissions, "file_mode": st.st_mode & 0o777,
            "uid": st.st_uid, "gid": st.st_gid}


def _host_devices() -> list[dict[str, Any]]:
    out = []
    for name in sorted(os.listdir("/dev")):
        path = os.path.join("/dev", name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            if name in ("console", "ptmx", "tty"):
                continue
            out.append(_device(path, path, "rwm"))
    return out


def _kernel() -> tuple[int, int] | None:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def _host_caps() -> list[str]:
    from isobox.linux import capabilities, proc

    last = proc.cap_last_cap()
    return capabilities.names_of(capabilities.bounding(last))


def _write_shim_config(service: ContainerService, record: ContainerRecord,
                       create: CreateRequest, merged: Any, bundle: str,
                       mounts: list[Mount], vm: dict[str, Any] | None) -> None:
    import shutil

    from isobox.engine.containers import parse_signal

    host = create.host_config
    runtime = record.runtime
    if runtime != "isobox-runtime":
        runtime = shutil.which(runtime) or runtime
    log = host.log_config
    opts = (log.config if log and log.config else {}) or {}
    if log and log.type not in ("", "json-file", None):
        raise InvalidArgument(f"logging driver {log.type!r} is not supported: use json-file")
    restart = host.restart_policy
    stop_signal = parse_signal(merged.stop_signal or "SIGTERM")
    shim = {
        "id": record.id, "bundle": bundle,
        # A VM's root filesystem is assembled in the guest, from disks.
        "rootfs_mounts": [] if vm else [
            {"type": m.type, "source": m.source,
             "options": _volatile(m.options) if host.auto_remove else list(m.options)}
            for m in mounts],
        "runtime": runtime, "runtime_root": service.runtime_root,
        "tty": bool(create.tty), "open_stdin": bool(create.open_stdin),
        "stdin_once": bool(create.stdin_once),
        "log_path": service.log_path(record.id),
        "log_max_size": _size(opts.get("max-size", "0")),
        "log_max_file": int(opts.get("max-file", "1") or 1),
        "restart": {"name": (restart.name if restart else "") or "no",
                    "max_retries": (restart.maximum_retry_count if restart else 0) or 0},
        "stop_signal": stop_signal,
        "stop_timeout": create.stop_timeout if create.stop_timeout is not None else 10,
    }
    if host.auto_remove:
        shim["exit_command"] = _remove_command(service, record.id)
    if vm is None:
        # A restart makes a new network namespace: connect it before it starts.
        shim["restart_hook"] = _isobox_command(service, "network", "reattach", record.id)
    if vm is not None:
        shim["vm"] = vm
    _plain_write(os.path.join(service.dir(record.id), "shim.json"),
                 json.dumps(shim).encode(), 0o600)


def _volatile(options: list[str]) -> list[str]:
    """A writable overlay's options for a container removed at its end: no
    sync of the host's filesystem when it is unmounted (see
    :mod:`isobox.shim.rootfs`). A crash of the host can cost such a layer
    its last writes; the container is removed after one anyway."""
    from isobox.shim.rootfs import VOLATILE

    if not any(o.startswith("upperdir=") for o in options) or VOLATILE in options:
        return list(options)
    return [*options, VOLATILE]


def _isobox_command(service: ContainerService, *args: str) -> list[str]:
    """``isobox [--root R] ARGS``, for the monitor to run without a CLI around."""
    import sys

    from isobox.engine.config import DEFAULT_ROOT

    argv = [os.path.join(os.path.dirname(sys.executable), "isobox")]
    if service.config.root != DEFAULT_ROOT:
        argv += ["--root", service.config.root]
    return [*argv, *args]


#: How long the exit command leaves an attached client (``docker run --rm``
#: through isoboxd, ``isobox run --rm``) to remove the container itself.
REMOVE_GRACE_S = 1


def _remove_command(service: ContainerService, container_id: str) -> list[str]:
    """``isobox rm -f <id>`` when a --rm container ends (podman's exit command):
    a detached container is removed without a CLI. An attached client removes
    it first, so the command is a shell that waits a moment and starts
    ``isobox`` (a Python start-up, ~0.1 s of CPU) only when the container's
    directory is still there: without that, every ``docker run --rm`` left an
    ``isobox rm`` running after it that found nothing to remove but slowed
    whatever came next on a small host by 4 ms (benchmarks/api.py)."""
    import shutil

    sleep = shutil.which("sleep") or "/bin/sleep"
    script = f'{sleep} {REMOVE_GRACE_S}; [ -d "$1" ] || exit 0; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "isobox-autoremove", service.dir(container_id),
            *_isobox_command(service, "rm", "-f", container_id)]


def _size(text: str) -> int:
    text = text.strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text or 0)
    except ValueError:
        raise InvalidArgument(f"invalid log max-size {text!r}") from None
