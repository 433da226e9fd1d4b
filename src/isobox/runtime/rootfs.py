"""The container's filesystem: mounts resolved inside the rootfs, devices,
pivot_root, masked and read-only paths.

Every mount destination is resolved with openat2(RESOLVE_IN_ROOT) and the
mount made on /proc/self/fd/N of the result, so a symlink in the image (or
one swapped in during setup) cannot make a mount land outside the rootfs.
"""

from __future__ import annotations

import errno
import os
import stat
from types import SimpleNamespace

from isobox.errors import InvalidArgument
from isobox.linux import libc, proc
from isobox.linux import mounts as m
from isobox.oci.runtime_spec import Device, Mount, Spec


class CgroupSource(SimpleNamespace):
    """One cgroup hierarchy as the container should see it under /sys/fs/cgroup."""

    subdir: str               # "" for cgroup v2 (mounted at the destination itself)
    fstype: str               # "cgroup" or "cgroup2"
    data: str                 # mount data, e.g. "memory", "cpu,cpuacct", "none,name=systemd"
    host_path: str            # the container's cgroup directory on the host
    aliases: tuple[str, ...]


DEFAULT_DEVICES = (
    Device(type="c", path="/dev/null", major=1, minor=3, file_mode=0o666),
    Device(type="c", path="/dev/zero", major=1, minor=5, file_mode=0o666),
    Device(type="c", path="/dev/full", major=1, minor=7, file_mode=0o666),
    Device(type="c", path="/dev/random", major=1, minor=8, file_mode=0o666),
    Device(type="c", path="/dev/urandom", major=1, minor=9, file_mode=0o666),
    Device(type="c", path="/dev/tty", major=5, minor=0, file_mode=0o666),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
)


def _abs_dest(destination: str) -> str:
    return destination if destination.startswith("/") else "/" + destination


class RootfsBuilder:
    """Sets up one rootfs in the current (new) mount namespace."""

    def __init__(self, spec: Spec, rootfs: str, bundle: str, *,
                 cgroup_sources: list[CgroupSource], cgroupns: bool, userns: bool) -> None:
        self.spec = spec
        self.rootfs = rootfs
        self.bundle = bundle
        self.cgroup_sources = cgroup_sources
        self.cgroupns = cgroupns
        self.userns = userns
        self.root_fd = -1

    # -- before pivot_root -------------------------------------------------

    def prepare(self) -> None:
        linux = self.spec.linux
        propagation = m.PROPAGATION.get(
            (linux.rootfs_propagation if linux else None) or "rslave", m.MS_SLAVE | m.MS_REC)
        libc.mount(None, "/", None, propagation)
        if not propagation & m.MS_REC or propagation & m.MS_SHARED:
            # Otherwise no mount of this namespace is shared any more, and
            # pivot_root has nothing to refuse: no need to read mountinfo.
            self._make_parent_private()
        libc.mount(self.rootfs, self.rootfs, None, m.MS_BIND | m.MS_REC)
        self.root_fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        dev_is_bound = False
        for mount in self.spec.mounts or ():
            self.mount(mount)
            if _abs_dest(mount.destination) == "/dev" and m.MountOptions(mount.options).is_bind:
                dev_is_bound = True
        if not dev_is_bound:
            self._create_devices(DEFAULT_DEVICES, skip_existing_bind=False)
            self._dev_symlinks()
        linux_devices = linux.devices if linux else None
        if linux_devices:
            self._create_devices(tuple(linux_devices), skip_existing_bind=False)

    def _make_parent_private(self) -> None:
        info = proc.mount_of(self.rootfs)
        if "shared:" in info.optional:
            libc.mount(None, info.mountpoint, None, m.MS_PRIVATE)

    def mount(self, mount: Mount) -> None:
        dest = _abs_dest(mount.destination)
        opts = m.MountOptions(mount.options)
        fstype = mount.type
        try:
            if fstype == "cgroup" or fstype == "cgroup2":
                self._mount_cgroup(dest, opts)
            elif opts.is_bind or fstype == "bind":
                self._mount_bind(mount, dest, opts)
            else:
                self._mount_fs(mount, dest, opts)
        except OSError as exc:
            reason = exc.strerror or os.strerror(exc.errno or 0)
            raise OSError(exc.errno, f"mount {mount.source or fstype} to {dest}: "
                          f"{reason.split(': ')[-1]}") from None

    def _resolve(self, dest: str) -> int:
        return m.resolve_in_root(self.root_fd, dest)

    def _propagate(self, dest: str, opts: m.MountOptions) -> None:
        for flag in opts.propagation:
            fd = self._resolve(dest)
            try:
                libc.mount(None, m.fd_path(fd), None, flag)
            finally:
                os.close(fd)

    def _mount_bind(self, mount: Mount, dest: str, opts: m.MountOptions) -> None:
        source = mount.source or ""
        if not os.path.isabs(source):
            source = os.path.join(self.bundle, source)
        src_stat = os.stat(source)
        fd = m.mkdir_all_in_root(self.root_fd, dest, file=not stat.S_ISDIR(src_stat.st_mode))
        try:
            libc.mount(source, m.fd_path(fd), None, m.MS_BIND | (opts.flags & m.MS_REC))
        finally:
            os.close(fd)
        extra = opts.flags & ~(m.MS_BIND | m.MS_REC)
        if extra:
            fd = self._resolve(dest)
            try:
                m.bind_remount(m.fd_path(fd), extra)
            finally:
                os.close(fd)
        self._propagate(dest, opts)

    def _mount_fs(self, mount: Mount, dest: str, opts: m.MountOptions) -> None:
        fstype = mount.type or "none"
        fd = m.mkdir_all_in_root(self.root_fd, dest)
        try:
            try:
                libc.mount(mount.source or fstype, m.fd_path(fd), fstype, opts.flags, opts.data)
            except OSError as exc:
                # sysfs cannot be mounted without owning the netns: bind the host's.
                if fstype != "sysfs" or exc.errno not in (errno.EPERM, errno.EBUSY):
                    raise
                libc.mount("/sys", m.fd_path(fd), None, m.MS_BIND | m.MS_REC)
                if opts.flags & m.MS_RDONLY:
                    inner = self._resolve(dest)
                    try:
                        m.bind_remount(m.fd_path(inner), m.MS_RDONLY)
                    finally:
                        os.close(inner)
        finally:
            os.close(fd)
        self._propagate(dest, opts)

    def _mount_cgroup(self, dest: str, opts: m.MountOptions) -> None:
        flags = (opts.flags | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC) & ~m.MS_BIND
        sources = self.cgroup_sources
        if len(sources) == 1 and sources[0].subdir == "":
            self._mount_one_cgroup(dest, sources[0], flags)
            return
        fd = m.mkdir_all_in_root(self.root_fd, dest)
        try:
            libc.mount("tmpfs", m.fd_path(fd), "tmpfs",
                       m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, "mode=755")
        finally:
            os.close(fd)
        for source in sources:
            self._mount_one_cgroup(f"{dest}/{source.subdir}", source, flags)
            for alias in source.aliases:
                parent = self._resolve(dest)
                try:
                    os.symlink(source.subdir, alias, dir_fd=parent)
                except FileExistsError:
                    pass
                finally:
                    os.close(parent)
        if flags & m.MS_RDONLY:
            fd = self._resolve(dest)
            try:
                libc.mount(None, m.fd_path(fd), None,
                           m.MS_REMOUNT | m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC,
                           "mode=755")
            finally:
                os.close(fd)

    def _mount_one_cgroup(self, dest: str, source: CgroupSource, flags: int) -> None:
        fd = m.mkdir_all_in_root(self.root_fd, dest)
        try:
            if self.cgroupns:
                libc.mount(source.fstype, m.fd_path(fd), source.fstype, flags, source.data)
                return
            libc.mount(source.host_path, m.fd_path(fd), None, m.MS_BIND | m.MS_REC)
        finally:
            os.close(fd)
        inner = self._resolve(dest)
        try:
            m.bind_remount(m.fd_path(inner), flags)
        finally:
            os.close(inner)

    def _create_devices(self, devices: tuple[Device, ...], *, skip_existing_bind: bool) -> None:
        old_umask = os.umask(0)
        try:
            for device in devices:
                self._create_device(device)
        finally:
            os.umask(old_umask)

    def _create_device(self, device: Device) -> None:
        dest = _abs_dest(device.path)
        parent_path, name = os.path.split(dest)
        if not name:
            raise InvalidArgument(f"invalid device path {device.path!r}")
        kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
        if device.type not in kinds:
            raise InvalidArgument(f"device {device.path}: unknown type {device.type!r}")
        mode = (device.file_mode if device.file_mode is not None else 0o666) & 0o7777
        parent = m.mkdir_all_in_root(self.root_fd, parent_path)
        try:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise InvalidArgument(f"device path {dest} is a directory in the image") from None
            if self.userns and device.type != "p":
                # mknod is refused in a user namespace: bind the host's node.
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=parent))
                target = m.resolve_in_root(self.root_fd, dest)
                try:
                    libc.mount(dest, m.fd_path(target), None, m.MS_BIND)
                finally:
                    os.close(target)
                return
            dev = os.makedev(device.major or 0, device.minor or 0)
            os.mknod(name, kinds[device.type] | mode, dev, dir_fd=parent)
            os.chown(name, device.uid or 0, device.gid or 0, dir_fd=parent,
                     follow_symlinks=False)
        finally:
            os.close(parent)

    def _dev_symlinks(self) -> None:
        dev = m.mkdir_all_in_root(self.root_fd, "/dev")
        try:
            links = list(DEV_SYMLINKS)
            if os.path.exists("/proc/kcore"):
                links.append(("/proc/kcore", "core"))
            for target, name in links:
                try:
                    os.symlink(target, name, dir_fd=dev)
                except FileExistsError:
                    pass
            try:
                os.stat("pts/ptmx", dir_fd=dev, follow_symlinks=False)
            except FileNotFoundError:
                return
            try:
                os.unlink("ptmx", dir_fd=dev)
            except FileNotFoundError:
                pass
            os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
        finally:
            os.close(dev)

    # -- the switch ----------------------------------------------------------

    def pivot(self, no_pivot: bool) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        if no_pivot:
            # runc's --no-pivot for ramfs roots: move the rootfs over / and chroot.
            os.chdir(self.rootfs)
            libc.mount(self.rootfs, "/", None, m.MS_MOVE)
            libc.chroot(".")
            os.chdir("/")
            return
        old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new_root = os.open(self.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new_root)
            libc.pivot_root(".", ".")
            os.fchdir(old_root)
            libc.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
            libc.umount2(".", m.MNT_DETACH)
        finally:
            os.close(old_root)
            os.close(new_root)
        os.chdir("/")

    # -- after pivot_root ----------------------------------------------------

    def finish(self) -> None:
        linux = self.spec.linux
        if linux is not None:
            for path in linux.masked_paths or ():
                mask_path(path)
            for path in linux.readonly_paths or ():
                readonly_path(path)
            if linux.rootfs_propagation in ("shared", "rshared"):
                libc.mount(None, "/", None, m.PROPAGATION[linux.rootfs_propagation])
        if self.spec.root is not None and self.spec.root.readonly:
            m.bind_remount("/", m.MS_RDONLY)


def _open_in_root(path: str) -> int | None:
    """O_PATH fd of path inside the (new) root, refusing magic links such as
    /proc/self/fd/N; None when it does not exist."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return libc.openat2(root, path, os.O_PATH,
                            resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"masked or read-only path {path} is a magic link") from None
        raise
    finally:
        os.close(root)


def _target(fd: int, path: str) -> str:
    # /proc/self/fd/N names exactly what was resolved; without a /proc in the
    # container fall back to the path, already resolved inside the new root.
    target = m.fd_path(fd)
    return target if os.path.exists(target) else path


def mask_path(path: str) -> None:
    fd = _open_in_root(path)
    if fd is None:
        return
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            libc.mount("tmpfs", _target(fd, path), "tmpfs", m.MS_RDONLY)
        else:
            libc.mount("/dev/null", _target(fd, path), None, m.MS_BIND)
    finally:
        os.close(fd)


def readonly_path(path: str) -> None:
    fd = _open_in_root(path)
    if fd is None:
        return
    try:
        libc.mount(_target(fd, path), _target(fd, path), None, m.MS_BIND | m.MS_REC)
    finally:
        os.close(fd)
    m.bind_remount(path, m.MS_RDONLY, recursive=True)


def apply_sysctl(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
