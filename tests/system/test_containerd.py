"""isobox-runtime under a real containerd: ``ctr run --runc-binary isobox-runtime``.

Each module starts a private containerd (its own root, state, socket and
config), imports a busybox image built here from the host's static busybox
(no network), and drives containers through ctr and containerd's runc v2
shim, which calls the runtime exactly as it calls runc. Every scenario runs
with runc first, as the control, then with isobox-runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from isobox.linux import libc, proc
from isobox.tools.busybox_bundle import make_rootfs

pytestmark = pytest.mark.containerd

BIN = Path(sys.executable).parent
ISOBOX_RUNTIME = str(BIN / "isobox-runtime")
CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
SHIM = shutil.which("containerd-shim-runc-v2")
RUNC = shutil.which("runc")
SCRIPT = shutil.which("script")
IMAGE_BASE = "docker.io/library/busybox"
IMAGE = f"{IMAGE_BASE}:test"
SHIM_RUNC_ROOT = "/run/containerd/runc"  # the runc v2 shim's default --root parent
SHIM_SOCKET_DIR = "/run/containerd/s"
MNT_DETACH = 2


def _missing() -> str | None:
    for name, path in (("containerd", CONTAINERD), ("ctr", CTR),
                       ("containerd-shim-runc-v2 (the io.containerd.runc.v2 runtime)", SHIM)):
        if path is None:
            return f"{name} is not installed"
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read().split():
            return "the kernel has no overlayfs, which the overlayfs snapshotter needs"
    return None


# -- an OCI image of the host's busybox, built here --------------------------

def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def _blob(tf: tarfile.TarFile, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    _add(tf, f"blobs/sha256/{digest}", data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _layer(rootfs: Path) -> bytes:
    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for entry in sorted(rootfs.iterdir()):
            layer.add(str(entry), arcname=entry.name, filter=as_root)
    return buf.getvalue()


def build_oci_archive(out: Path, rootfs: Path, tag: str = "test") -> Path:
    """An OCI image layout tarball: one uncompressed layer, config, manifest,
    index.json (tag in org.opencontainers.image.ref.name) and oci-layout."""
    goarch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
              "s390x": "s390x", "riscv64": "riscv64"}.get(os.uname().machine,
                                                         os.uname().machine)
    platform = {"architecture": goarch, "os": "linux"}
    with tarfile.open(out, "w") as tf:
        layer = _blob(tf, _layer(rootfs), "application/vnd.oci.image.layer.v1.tar")
        config = {
            **platform,
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            "history": [{"created_by": "isobox tests: host busybox"}],
        }
        config_desc = _blob(tf, json.dumps(config).encode(),
                            "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer]}
        manifest_desc = _blob(tf, json.dumps(manifest).encode(),
                              "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["platform"] = platform
        manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [manifest_desc]}
        _add(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add(tf, "index.json", json.dumps(index).encode())
    return out


# -- a private containerd ----------------------------------------------------

def _run(args: list[str], *, timeout: float = 60, check: bool = False
         ) -> subprocess.CompletedProcess[str]:
    # Files, not pipes, for the same reason as conftest's Runtime.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            p = subprocess.run(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                               timeout=timeout)
            code = p.returncode
        except subprocess.TimeoutExpired:
            code = -999
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, code, out.read().decode(errors="replace"),
                                             err.read().decode(errors="replace"))
    if code == -999:
        raise AssertionError(f"{args} timed out after {timeout}s: {result.stderr.strip()}")
    if check and code != 0:
        raise AssertionError(f"{args} exited {code}: {result.stderr.strip()}")
    return result


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cgroup_dirs(parent: str) -> list[Path]:
    found: list[Path] = []
    base = Path("/sys/fs/cgroup")
    for hierarchy in base.iterdir() if base.exists() else []:
        top = hierarchy / parent.lstrip("/")
        if top.is_dir():
            found += [top, *(p for p in top.rglob("*") if p.is_dir())]
    return found


def _cgroup_procs(parent: str) -> set[int]:
    procs: set[int] = set()
    for d in _cgroup_dirs(parent):
        with contextlib.suppress(OSError):
            procs |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    return procs


def _remove_cgroups(parent: str) -> None:
    for d in sorted(_cgroup_dirs(parent), key=lambda p: len(str(p)), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


def _unmount_under(path: str) -> None:
    for m in sorted((m for m in proc.mountinfo()
                     if m.mountpoint == path or m.mountpoint.startswith(path + "/")),
                    key=lambda m: len(m.mountpoint), reverse=True):
        with contextlib.suppress(OSError):
            libc.umount2(m.mountpoint, MNT_DETACH)


@dataclass
class Containerd:
    tmp: Path
    address: str
    namespace: str
    cgroup_parent: str
    process: subprocess.Popen[bytes]
    ids: list[str] = field(default_factory=list)
    extra_cgroups: list[str] = field(default_factory=list)  # removed at teardown too

    @property
    def runc_root(self) -> Path:
        """Where the shim tells the runtime to keep its state: --root."""
        return Path(SHIM_RUNC_ROOT) / self.namespace

    @property
    def fifo_dir(self) -> str:
        return str(self.tmp / "fifo")

    def ctr(self, *args: str, timeout: float = 60, check: bool = False
            ) -> subprocess.CompletedProcess[str]:
        assert CTR is not None
        return _run([CTR, "--address", self.address, "--namespace", self.namespace, *args],
                    timeout=timeout, check=check)

    def new_id(self, stem: str) -> str:
        cid = f"{stem}-{uuid.uuid4().hex[:6]}"
        self.ids.append(cid)
        return cid

    def cgroup(self, cid: str) -> str:
        return f"{self.cgroup_parent}/{cid}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.tmp / "containerd.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def tasks(self, check: bool = True) -> dict[str, tuple[int, str]]:
        out = self.ctr("task", "ls", check=check).stdout.splitlines()[1:]
        rows = [line.split() for line in out if line.strip()]
        return {r[0]: (int(r[1]), r[2]) for r in rows if len(r) >= 3}

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.tasks().get(cid, (0, "absent"))[1]
            if seen == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"task {cid} is {seen}, not {status}, after {timeout}s")

    def remove(self, cid: str) -> None:
        """Best effort: kill, delete the task and the container."""
        self.ctr("task", "kill", "--all", "--signal", "KILL", cid, timeout=30)
        deadline = time.monotonic() + 10
        while self.tasks(check=False).get(cid, (0, "STOPPED"))[1] != "STOPPED" and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        self.ctr("task", "delete", "--force", cid, timeout=30)
        self.ctr("container", "rm", cid, timeout=30)


def _shim_socket(address: str, namespace: str, cid: str) -> Path:
    # containerd 1.6 shim.SocketAddress: sha256(<containerd address>/<ns>/<id>)
    digest = hashlib.sha256(os.path.join(address, namespace, cid).encode()).hexdigest()
    return Path(SHIM_SOCKET_DIR) / digest


def _stop(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    if os.geteuid() != 0:
        pytest.skip("containerd tests need root")
    reason = _missing()
    if reason:
        pytest.skip(reason)
    assert CONTAINERD is not None and CTR is not None
    existed = {p: os.path.exists(p) for p in ("/run/containerd", SHIM_RUNC_ROOT,
                                              SHIM_SOCKET_DIR)}
    # Short, because the socket path must fit in sun_path (108 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="ibctrd-", dir="/tmp"))
    tag = uuid.uuid4().hex[:8]
    address = str(tmp / "containerd.sock")
    config = tmp / "config.toml"
    config.write_text(f"""\
version = 2
root = "{tmp}/root"
state = "{tmp}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  level = "debug"

[metrics]
  address = ""
""")
    log = open(tmp / "containerd.log", "wb")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen([CONTAINERD, "--config", str(config)], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cd = Containerd(tmp=tmp, address=address, namespace=f"isobox-test-{tag}",
                    cgroup_parent=f"/isobox-ctrd-{tag}", process=process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"containerd exited {process.returncode}:\n{cd.log_tail()}")
            if os.path.exists(address) and cd.ctr("version", timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"containerd did not come up in 30s:\n{cd.log_tail()}")
            time.sleep(0.1)
        rootfs = Path(make_rootfs(str(tmp / "image-rootfs")))
        archive = build_oci_archive(tmp / "busybox-oci.tar", rootfs)
        imported = cd.ctr("images", "import", "--base-name", IMAGE_BASE, str(archive),
                          timeout=120)
        assert imported.returncode == 0, f"import failed: {imported.stderr}\n{cd.log_tail()}"
        images = cd.ctr("images", "ls", "-q", check=True).stdout.split()
        assert IMAGE in images, images
        yield cd
    finally:
        _teardown(cd, existed)
        log.close()


def _teardown(cd: Containerd, existed: dict[str, bool]) -> None:
    """Stop everything this module's containerd started, whatever state it is in."""
    if cd.process.poll() is None:
        try:
            for cid in cd.ctr("container", "ls", "-q", timeout=30).stdout.split():
                cd.remove(cid)
        except AssertionError:  # ctr timed out: what follows cleans up without it
            pass
    # The shims daemonize (their parent is pid 1): find ours by the address they serve.
    shims = [pid for pid in _pids()
             if any("containerd-shim" in a for a in _cmdline(pid)[:1])
             and cd.address in _cmdline(pid)]
    if cd.process.poll() is None:
        cd.process.terminate()
        try:
            cd.process.wait(15)
        except subprocess.TimeoutExpired:
            cd.process.kill()
            cd.process.wait(15)
    for parent in [cd.cgroup_parent, *cd.extra_cgroups]:
        for pid in _cgroup_procs(parent):
            _stop(pid)
    for pid in shims:
        _stop(pid)
    for pid in shims:
        deadline = time.monotonic() + 5
        while proc.is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # Runtime state the shim left: delete through the runtime that made it.
    if cd.runc_root.is_dir():
        for entry in cd.runc_root.iterdir():
            for binary in (ISOBOX_RUNTIME, RUNC):
                if binary:
                    _run([binary, "--root", str(cd.runc_root), "delete", "--force", entry.name],
                         timeout=30)
        shutil.rmtree(cd.runc_root, ignore_errors=True)
    # A shim removes its socket as it exits, which may be after containerd has
    # gone; a killed one leaves it.
    sockets = [_shim_socket(cd.address, cd.namespace, cid) for cid in cd.ids]
    deadline = time.monotonic() + 5
    while any(s.exists() for s in sockets) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.unlink()
    _unmount_under(str(cd.tmp))
    for parent in [cd.cgroup_parent, *cd.extra_cgroups]:
        _remove_cgroups(parent)
    shutil.rmtree(cd.tmp, ignore_errors=True)
    for path in (SHIM_RUNC_ROOT, SHIM_SOCKET_DIR, "/run/containerd"):
        if not existed[path]:
            with contextlib.suppress(OSError):
                os.rmdir(path)


# -- the runtimes under test -------------------------------------------------

@dataclass
class Runtime:
    name: str
    binary: str            # what --runc-binary gets: a wrapper that logs the calls
    calls: Path

    def argvs(self) -> list[list[str]]:
        try:
            lines = self.calls.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line.rstrip("\x1f").split("\x1f") for line in lines]


@pytest.fixture(params=["runc", "isobox"])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Runtime:
    """runc first (the control), then isobox-runtime; both behind a wrapper
    that records each command line the shim runs."""
    if request.param == "runc":
        if RUNC is None:
            pytest.skip("runc is not installed: no control run")
        real = RUNC
    else:
        real = ISOBOX_RUNTIME
    calls = tmp_path / "calls.jsonl"
    wrapper = tmp_path / f"{request.param}-wrapper"
    # One line per call, arguments separated by US (0x1f).
    wrapper.write_text(
        "#!/bin/sh\n"
        f"{{ for a in \"$@\"; do printf '%s\\037' \"$a\"; done; echo; }} >> '{calls}'\n"
        f"exec '{real}' \"$@\"\n")
    wrapper.chmod(0o755)
    return Runtime(request.param, str(wrapper), calls)


@pytest.fixture
def ctrd(containerd: Containerd) -> Iterator[Containerd]:
    """The module's containerd; containers a test leaves are removed after it,
    and their cgroups must be gone."""
    first = len(containerd.ids)
    yield containerd
    mine = containerd.ids[first:]
    existing = set(containerd.ctr("container", "ls", "-q", timeout=30).stdout.split())
    for cid in mine:
        if cid in existing:
            containerd.remove(cid)
    leaked = [str(d) for cid in mine for d in _cgroup_dirs(containerd.cgroup(cid))]
    for pid in _cgroup_procs(containerd.cgroup_parent):
        _stop(pid)
    for cid in mine:
        _remove_cgroups(containerd.cgroup(cid))
    assert not leaked, f"cgroups left after the containers were deleted: {leaked}"


def _run_args(ctrd: Containerd, rt: Runtime, cid: str, *extra: str) -> list[str]:
    return ["run", "--runc-binary", rt.binary, "--fifo-dir", ctrd.fifo_dir,
            "--cgroup", ctrd.cgroup(cid), *extra]


def _assert_gone(ctrd: Containerd, cid: str) -> None:
    assert cid not in ctrd.ctr("container", "ls", "-q", check=True).stdout.split()
    assert not (ctrd.runc_root / cid).exists(), "runtime state left behind"
    assert not _cgroup_dirs(ctrd.cgroup(cid)), "container cgroup left behind"


# -- the scenarios -----------------------------------------------------------

def test_run_rm_prints_output(ctrd, rt):
    cid = ctrd.new_id("run")
    script = "echo hi; hostname; cat /proc/1/cmdline"
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "--rm"), IMAGE, cid, "sh", "-c", script)
    assert result.returncode == 0, f"{result.stderr}\n{ctrd.log_tail()}"
    # ctr gives the container a UTS namespace but no hostname: it keeps the host's.
    # busybox sh execs the last command of -c itself, so pid 1 is then cat.
    assert result.stdout == f"hi\n{socket.gethostname()}\ncat\0/proc/1/cmdline\0"
    _assert_gone(ctrd, cid)

    argvs = rt.argvs()
    verbs = [_verb(a) for a in argvs]
    assert "create" in verbs and "start" in verbs and "delete" in verbs, verbs
    create = argvs[verbs.index("create")]
    # The shim's global flags, as documented for runc.
    assert create[create.index("--root") + 1] == str(ctrd.runc_root)
    assert create[create.index("--log-format") + 1] == "json"
    assert create[create.index("--log") + 1].endswith(f"/{cid}/log.json")
    assert "--bundle" in create and "--pid-file" in create


def _verb(argv: list[str]) -> str:
    """The subcommand of a runc command line (skipping global flags and their values)."""
    takes_value = {"--root", "--log", "--log-format", "--criu", "--rootless"}
    i = 0
    while i < len(argv):
        if argv[i] in takes_value:
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            return argv[i]
    return ""


def test_exit_status_propagates(ctrd, rt):
    cid = ctrd.new_id("exit")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "--rm"), IMAGE, cid, "sh", "-c", "exit 7")
    assert result.returncode == 7, f"{result.stderr}\n{ctrd.log_tail()}"
    _assert_gone(ctrd, cid)

    # A child killed by a signal: the shell reports 128+9. (Not the init itself:
    # pid 1 of a pid namespace cannot be killed from inside; ``exit $?`` keeps
    # busybox sh from exec'ing the inner shell as pid 1.)
    cid = ctrd.new_id("sig")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "--rm"), IMAGE, cid,
                      "sh", "-c", "sh -c 'kill -KILL $$'; exit $?")
    assert result.returncode == 137, result.stderr
    _assert_gone(ctrd, cid)


def test_missing_command_is_an_error_and_leaves_nothing(ctrd, rt):
    cid = ctrd.new_id("missing")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "--rm"), IMAGE, cid, "nosuchcommand")
    assert result.returncode != 0
    # The shim reports the last error of the runtime's --log json file.
    assert "executable file not found in $PATH" in result.stderr, result.stderr
    assert "nosuchcommand" in result.stderr
    _assert_gone(ctrd, cid)


def test_detached_exec_ps_pause_resume_kill_delete(ctrd, rt):
    cid = ctrd.new_id("detached")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "-d"), IMAGE, cid,
                      "sh", "-c", "sleep 300 & exec sleep 301")
    assert result.returncode == 0, f"{result.stderr}\n{ctrd.log_tail()}"
    pid, status = ctrd.tasks()[cid]
    assert status == "RUNNING"
    assert _cmdline(pid)[:2] == ["sleep", "301"]

    out = ctrd.ctr("task", "exec", "--fifo-dir", ctrd.fifo_dir, "--exec-id", "x1", cid,
                   "sh", "-c", "echo in; cat /proc/1/cmdline; echo; echo $$; exit 5")
    assert out.returncode == 5, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "in"
    assert lines[1] == "sleep\x00301\x00"
    assert int(lines[2]) > 1  # in the container's pid namespace

    user = ctrd.ctr("task", "exec", "--fifo-dir", ctrd.fifo_dir, "--exec-id", "x2",
                    "--user", "65534", "--cwd", "/tmp", cid, "sh", "-c", "id -u; pwd")
    assert (user.returncode, user.stdout.split()) == (0, ["65534", "/tmp"]), user.stderr

    detached = ctrd.ctr("task", "exec", "--fifo-dir", ctrd.fifo_dir, "--exec-id", "x4",
                        "--detach", cid, "sleep", "302")
    assert detached.returncode == 0, detached.stderr
    deadline = time.monotonic() + 10
    pids: list[int] = []
    while time.monotonic() < deadline:
        pids = _task_pids(ctrd, cid)
        if len(pids) >= 3:
            break
        time.sleep(0.05)
    assert pid in pids
    commands = sorted(" ".join(_cmdline(p)).strip() for p in pids)
    assert commands == ["sleep 300", "sleep 301", "sleep 302"], commands
    ctrd.ctr("task", "kill", "--exec-id", "x4", "--signal", "KILL", cid, check=True)
    deadline = time.monotonic() + 10
    while len(_task_pids(ctrd, cid)) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_task_pids(ctrd, cid)) == 2
    gone = ctrd.ctr("task", "delete", "--exec-id", "x4", cid)
    assert gone.returncode == 137, gone.stderr  # ctr exits with the exec's status

    ctrd.ctr("task", "pause", cid, check=True)
    assert ctrd.tasks()[cid][1] == "PAUSED"
    freezer = Path("/sys/fs/cgroup/freezer") / ctrd.cgroup(cid).lstrip("/") / "freezer.state"
    if freezer.exists():
        assert freezer.read_text().strip() == "FROZEN"
    assert proc.state_letter(pid) in ("D", "S")
    ctrd.ctr("task", "resume", cid, check=True)
    assert ctrd.tasks()[cid][1] == "RUNNING"
    if freezer.exists():
        assert freezer.read_text().strip() == "THAWED"

    refused = ctrd.ctr("task", "delete", cid)
    assert refused.returncode != 0  # running: delete without --force is refused

    ctrd.ctr("task", "kill", "--all", "--signal", "KILL", cid, check=True)
    ctrd.wait_status(cid, "STOPPED")
    assert not proc.is_alive(pid)
    deleted = ctrd.ctr("task", "delete", cid)
    assert deleted.returncode == 0, deleted.stderr
    assert "137" in deleted.stderr  # ctr reports the exit status of the killed init
    assert cid not in ctrd.tasks()
    ctrd.ctr("container", "rm", cid, check=True)
    _assert_gone(ctrd, cid)

    verbs = {_verb(a) for a in rt.argvs()}
    assert {"create", "start", "exec", "pause", "resume", "kill", "delete"} <= verbs, verbs


def test_exec_of_a_missing_command_says_why(ctrd, rt, request):
    """The shim runs ``exec --process F --detach --pid-file P`` and, when it fails,
    reports the last error of the runtime's --log file."""
    cid = ctrd.new_id("execmissing")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "-d"), IMAGE, cid, "sleep", "300")
    assert result.returncode == 0, result.stderr
    missing = ctrd.ctr("task", "exec", "--fifo-dir", ctrd.fifo_dir, "--exec-id", "x1", cid,
                       "nosuchcommand")
    try:
        assert missing.returncode != 0
        assert "executable file not found" in missing.stderr, missing.stderr
        assert "nosuchcommand" in missing.stderr
        # the container is unharmed
        assert ctrd.tasks()[cid][1] == "RUNNING"
    finally:
        ctrd.remove(cid)
    _assert_gone(ctrd, cid)


def _task_pids(ctrd: Containerd, cid: str) -> list[int]:
    rows = ctrd.ctr("task", "ps", cid, check=True).stdout.splitlines()[1:]
    return [int(r.split()[0]) for r in rows if r.split() and r.split()[0].isdigit()]


def test_kill_init_with_term_and_delete(ctrd, rt):
    """A program that does not ignore SIGTERM as pid 1: the default ctr task kill."""
    cid = ctrd.new_id("term")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "-d"), IMAGE, cid,
                      "sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done")
    assert result.returncode == 0, result.stderr
    ctrd.wait_status(cid, "RUNNING")
    time.sleep(0.3)  # let the shell install its trap
    ctrd.ctr("task", "kill", cid, check=True)
    ctrd.wait_status(cid, "STOPPED")
    deleted = ctrd.ctr("task", "delete", cid, check=True)
    assert "42" in deleted.stderr
    ctrd.ctr("container", "rm", cid, check=True)
    _assert_gone(ctrd, cid)


def test_metrics_read_the_runtime_cgroup(ctrd, rt):
    """The shim reads the cgroup at the config's cgroupsPath: the runtime must
    have put the container there, as runc does."""
    cid = ctrd.new_id("metrics")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "-d"), IMAGE, cid,
                      "sh", "-c", "sleep 300 & exec sleep 301")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    metrics: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = ctrd.ctr("task", "metrics", cid, check=True).stdout
        metrics = dict(line.split(None, 1) for line in out.splitlines()
                       if len(line.split(None, 1)) == 2)
        if metrics.get("pids.current", "").strip() == "2":
            break
        time.sleep(0.05)
    assert metrics.get("pids.current", "").strip() == "2", metrics
    assert int(metrics["memory.usage_in_bytes"]) > 0
    ctrd.remove(cid)
    _assert_gone(ctrd, cid)


def test_update_resources_from_stdin(ctrd, rt):
    """CRI's UpdateContainerResources runs ``<runtime> update --resources -``;
    1.6's ctr has no command for it, so call the runtime as the shim would."""
    cid = ctrd.new_id("update")
    result = ctrd.ctr(*_run_args(ctrd, rt, cid, "-d"), IMAGE, cid, "sleep", "300")
    assert result.returncode == 0, result.stderr
    limit = 64 * 1024 * 1024
    resources = json.dumps({"memory": {"limit": limit}, "pids": {"limit": 50},
                            "cpu": {"shares": 512}})
    real = RUNC if rt.name == "runc" else ISOBOX_RUNTIME
    assert real is not None
    p = subprocess.run([real, "--root", str(ctrd.runc_root), "update", "--resources", "-", cid],
                       input=resources.encode(), capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    sub = ctrd.cgroup(cid).lstrip("/")
    base = Path("/sys/fs/cgroup")
    assert int((base / "memory" / sub / "memory.limit_in_bytes").read_text()) == limit
    assert (base / "pids" / sub / "pids.max").read_text().strip() == "50"
    assert (base / "cpu" / sub / "cpu.shares").read_text().strip() == "512"
    ctrd.remove(cid)
    _assert_gone(ctrd, cid)


def test_systemd_cgroup_flag(ctrd, rt):
    """ctr --runc-systemd-cgroup: the shim adds --systemd-cgroup and the config has a
    slice:prefix:name cgroupsPath. Without systemd, isobox-runtime maps it onto
    cgroupfs as /slice/prefix-name.scope (runc refuses to run without systemd)."""
    if rt.name == "runc" and not os.path.isdir("/run/systemd/system"):
        pytest.skip("runc needs a running systemd for --systemd-cgroup; there is none here")
    cid = ctrd.new_id("systemd")
    slice_ = ctrd.cgroup_parent.strip("/").replace("-", "") + ".slice"
    ctrd.extra_cgroups.append("/" + slice_)
    result = ctrd.ctr("run", "--runc-binary", rt.binary, "--fifo-dir", ctrd.fifo_dir,
                      "--runc-systemd-cgroup", "--cgroup", f"{slice_}:ctr:{cid}", "--rm",
                      IMAGE, cid, "cat", "/proc/self/cgroup")
    assert result.returncode == 0, f"{result.stderr}\n{ctrd.log_tail()}"
    creates = [a for a in rt.argvs() if _verb(a) == "create"]
    assert creates and "--systemd-cgroup" in creates[0]
    scope = f"/{slice_}/ctr-{cid}.scope"
    if rt.name == "isobox":
        paths = {line.split(":", 2)[2] for line in result.stdout.splitlines()}
        assert paths == {scope}, result.stdout
    assert cid not in ctrd.ctr("container", "ls", "-q", check=True).stdout.split()
    assert not _cgroup_dirs(scope), "container cgroup left behind"


@pytest.mark.skipif(SCRIPT is None, reason="util-linux script(1) is needed to give ctr a tty")
def test_tty_through_console_socket(ctrd, rt):
    """ctr run -t: the shim passes --console-socket and expects the pty master on it."""
    cid = ctrd.new_id("tty")
    args = [CTR or "ctr", "--address", ctrd.address, "--namespace", ctrd.namespace,
            *_run_args(ctrd, rt, cid, "--rm", "-t"), IMAGE, cid,
            "sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; exit 4"]
    command = " ".join(_shell_quote(a) for a in args)
    assert SCRIPT is not None
    result = _run([SCRIPT, "-qec", command, "/dev/null"], timeout=60)
    assert result.returncode == 4, result.stdout + result.stderr
    assert re.search(r"/dev/pts/\d+", result.stdout), result.stdout
    assert "stdin-is-a-tty" in result.stdout
    _assert_gone(ctrd, cid)


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
