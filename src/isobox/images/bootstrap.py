"""Base images without a registry: busybox from the host's static binary, and
Debian through debootstrap.

``bootstrap_busybox`` is reproducible: the same busybox binary gives the same
layer, config and image id (entries sorted, uid/gid 0, mtime 0, gzip without
a timestamp, config ``created`` at the epoch).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator

from isobox.errors import InvalidArgument, NotFound, Unavailable
from isobox.images.builder import ImageAssembler, now_rfc3339, register
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords
from isobox.linux import libc, mounts, proc
from isobox.linux.run import run
from isobox.oci import image_spec as spec

__all__ = ["DEFAULT_PATH", "bootstrap_busybox", "bootstrap_debian", "default_mirror",
           "elf_architecture"]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = "1970-01-01T00:00:00Z"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
_PT_INTERP = 3
_MACHINES = {3: "386", 0x3E: "amd64", 0x28: "arm", 0xB7: "arm64", 0xF3: "riscv64",
             0x15: "ppc64", 0x16: "s390x", 0x08: "mips"}
_DEB_ARCH = {"amd64": "amd64", "arm64": "arm64", "armhf": "arm", "armel": "arm",
             "i386": "386", "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
             "mips64el": "mips64le"}
_DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555,
         "root": 0o700, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "var": 0o755}
_PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
           b"nobody:x:65534:65534:nobody:/home:/bin/false\n")
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


# -- busybox ------------------------------------------------------------------

def bootstrap_busybox(store: ContentStore, records: ImageRecords, *,
                      ref: str | None = "busybox:latest",
                      busybox: str = "/bin/busybox", tmpdir: str | None = None) -> str:
    """A busybox image made of the host's static ``busybox``; returns its id."""
    try:
        with open(busybox, "rb") as f:
            binary = f.read()
    except FileNotFoundError:
        raise NotFound(f"{busybox} not found (Debian: apt-get install busybox-static)") from None
    arch = elf_architecture(binary, busybox)
    applets = _applets(busybox)

    def write(tf: tarfile.TarFile) -> None:
        for info, data in sorted(_busybox_entries(binary, applets), key=lambda e: e[0].name):
            tf.addfile(info, io.BytesIO(data) if data is not None else None)

    asm = ImageAssembler(store, tmpdir=tmpdir)
    asm.add_layer(write)
    config = spec.ImageConfig(
        architecture=arch, os="linux", created=EPOCH,
        config=spec.ContainerConfig(env=[DEFAULT_PATH], cmd=["sh"]), rootfs=spec.RootFS())
    image = asm.finish(config, [spec.History(created=EPOCH,
                                             created_by="isobox image bootstrap busybox")])
    return register(records, image, [ref] if ref else [])


def elf_architecture(binary: bytes, name: str = "binary") -> str:
    """The GOARCH of a statically linked ELF executable; InvalidArgument when
    it is not ELF or has a program interpreter (dynamically linked)."""
    if len(binary) < 64 or binary[:4] != b"\x7fELF" or binary[4] not in (1, 2):
        raise InvalidArgument(f"{name} is not an ELF executable")
    end = "<" if binary[5] == 1 else ">"
    machine = struct.unpack_from(end + "H", binary, 18)[0]
    if binary[4] == 2:  # ELFCLASS64
        phoff = struct.unpack_from(end + "Q", binary, 32)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", binary, 54)
    else:
        phoff = struct.unpack_from(end + "I", binary, 28)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", binary, 42)
    if phentsize < 4 or phoff + phentsize * phnum > len(binary):
        raise InvalidArgument(f"{name} is a malformed ELF file")
    wide = binary[4] == 2
    for i in range(phnum):
        start = phoff + i * phentsize
        if struct.unpack_from(end + "I", binary, start)[0] == _PT_INTERP:
            offset = struct.unpack_from(end + ("Q" if wide else "I"), binary,
                                        start + (8 if wide else 4))[0]
            interp = binary[offset:offset + 256].split(b"\0", 1)[0].decode(errors="replace")
            raise InvalidArgument(
                f"{name} is dynamically linked (interpreter {interp}); a container "
                "needs a static busybox (Debian: apt-get install busybox-static)")
    arch = _MACHINES.get(machine)
    if arch is None:
        raise InvalidArgument(f"{name}: unknown ELF machine {machine:#x}")
    if arch in ("ppc64", "mips") and end == "<":
        arch += "le"
    return arch


def _applets(busybox: str) -> list[str]:
    # The host's own busybox, run on the host: it lists what it provides.
    try:
        out = run([busybox, "--list"], timeout=30).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"cannot list the applets of {busybox}: {exc}") from None
    names = sorted({n for n in out.split() if n and "/" not in n and n != "busybox"})
    if "sh" not in names:
        raise InvalidArgument(f"{busybox} has no sh applet")
    return names


def _busybox_entries(binary: bytes, applets: list[str]
                     ) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    for name, mode in _DIRS.items():
        yield _info(name, tarfile.DIRTYPE, mode), None
    yield _info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), binary
    for applet in applets:
        info = _info(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
        info.linkname = "/bin/busybox"
        yield info, None
    yield _info("etc/passwd", tarfile.REGTYPE, 0o644, len(_PASSWD)), _PASSWD
    yield _info("etc/group", tarfile.REGTYPE, 0o644, len(_GROUP)), _GROUP


def _info(name: str, type_: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = type_, mode, size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


# -- debian -------------------------------------------------------------------

def bootstrap_debian(store: ContentStore, records: ImageRecords, *, suite: str = "bookworm",
                     ref: str | None = None, mirror: str | None = None,
                     tmpdir: str | None = None, timeout: float = 3600) -> str:
    """A minimal Debian image (``debootstrap --variant=minbase``) as one
    layer; tagged ``ref`` (default ``debian:<suite>``). Needs root."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise Unavailable("debootstrap not found (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise Unavailable("debootstrap needs root")
    if not suite or "/" in suite or suite.startswith("-"):
        raise InvalidArgument(f"invalid suite {suite!r}")
    mirror = mirror or default_mirror()
    try:
        deb_arch = run(["dpkg", "--print-architecture"]).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"cannot tell the Debian architecture (dpkg): {exc}") from None
    arch = _DEB_ARCH.get(deb_arch, deb_arch)
    argv = [debootstrap, "--variant=minbase", suite]
    created = now_rfc3339()
    work = tempfile.mkdtemp(prefix="isobox-debootstrap-", dir=tmpdir)
    target = os.path.join(work, "rootfs")
    try:
        # Its own mount namespace: the /proc and /sys it mounts die with it.
        unshare = shutil.which("unshare")
        prefix = [unshare, "--mount", "--propagation", "private"] if unshare else []
        result = run([*prefix, *argv, target, mirror], timeout=timeout, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise Unavailable(f"debootstrap {suite} from {mirror} failed "
                              f"(exit {result.returncode}):\n{tail}")
        _unmount_under(target)
        _clean_rootfs(target)
        asm = ImageAssembler(store, tmpdir=tmpdir)
        asm.add_layer_from_dir(target, skip_contents=("dev", "proc", "sys"))
        config = spec.ImageConfig(
            architecture=arch, os="linux", created=created,
            config=spec.ContainerConfig(env=[DEFAULT_PATH], cmd=["bash"]),
            rootfs=spec.RootFS())
        image = asm.finish(config, [spec.History(
            created=created, created_by=f"debootstrap --variant=minbase {suite} {mirror}")])
    finally:
        _unmount_under(target)
        shutil.rmtree(work, ignore_errors=True)
    return register(records, image, [ref or f"debian:{suite}"])


def default_mirror(apt_dir: str = "/etc/apt") -> str:
    """The first Debian archive (not security) configured for apt."""
    for uri, suites in _apt_sources(apt_dir):
        if uri.startswith(("http://", "https://", "file:/")) and not any(
                s.endswith(("-security", "/updates")) for s in suites):
            return uri.rstrip("/")
    return FALLBACK_MIRROR


def _apt_sources(apt_dir: str) -> Iterator[tuple[str, list[str]]]:
    files = [os.path.join(apt_dir, "sources.list")]
    parts = os.path.join(apt_dir, "sources.list.d")
    if os.path.isdir(parts):
        files += [os.path.join(parts, n) for n in sorted(os.listdir(parts))
                  if n.endswith((".list", ".sources"))]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        yield from (_deb822(text) if path.endswith(".sources") else _one_line(text))


def _one_line(text: str) -> Iterator[tuple[str, list[str]]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], [words[1]]


def _deb822(text: str) -> Iterator[tuple[str, list[str]]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        suites = fields.get("suites", "").split()
        for uri in fields.get("uris", "").split():
            yield uri, suites


def _clean_rootfs(root: str) -> None:
    """Drop what debootstrap copied from this host or left as a cache."""
    for name in ("etc/resolv.conf", "etc/hostname", "var/log/bootstrap.log"):
        path = os.path.join(root, name)
        if os.path.lexists(path):
            os.unlink(path)
    for name in ("var/cache/apt/archives", "var/lib/apt/lists"):
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            path = os.path.join(directory, entry)
            if os.path.isfile(path) and not os.path.islink(path) and entry != "lock":
                os.unlink(path)


def _unmount_under(root: str) -> None:
    prefix = os.path.realpath(root) + "/"
    points = [m.mountpoint for m in proc.mountinfo()
              if (m.mountpoint + "/").startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        try:
            libc.umount2(point, mounts.MNT_DETACH)
        except OSError as exc:
            raise Unavailable(f"cannot unmount {point} left by debootstrap: {exc}") from None
