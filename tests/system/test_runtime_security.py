"""Container escapes, attempted the way an attacker would, against isobox-runtime.

Each test plants its attack in a busybox container (or in the image the runtime
is about to use) and shows that the host stays out of reach: the host's
interpreter unchanged, no host directory reachable from a container cwd or fd,
no mount made outside the rootfs, no code from the image run by the runtime.
The attacks only read, or open without writing, so a weakness is reported
without harming the host.
"""

from __future__ import annotations

import contextlib
import encodings
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import isobox
from isobox.linux import libc, proc
from isobox.linux import mounts as m
from isobox.oci.runtime_spec import encode
from isobox.oci.seccomp_profile import docker_default_profile, to_oci
from isobox.runtime.spec import MASKED_PATHS

DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
HOST_EXE = os.path.realpath(sys.executable)
# Planted at the root of a test's own rootfs: a directory from which `..`
# repeated reaches this file is inside the container.
MARK = f".isobox-rootfs-{uuid.uuid4().hex[:12]}"
UP = "/".join([".."] * 40)
# Markers written by anything the runtime should never run; only ever created
# inside a rootfs, never on the host.
PLANTED = f"/.isobox-planted-{uuid.uuid4().hex[:12]}"


# -- helpers -------------------------------------------------------------------

def docker_caps(spec: dict[str, Any]) -> None:
    """Container root with Docker's default capabilities and no no_new_privs."""
    caps = spec["process"]["capabilities"]
    for key in ("bounding", "effective", "permitted"):
        caps[key] = list(DOCKER_CAPS)
    spec["process"]["noNewPrivileges"] = False


def docker_seccomp(spec: dict[str, Any]) -> None:
    profile = to_oci(docker_default_profile(), capabilities=DOCKER_CAPS)
    spec["linux"]["seccomp"] = json.loads(encode(profile))


def edits(*fns: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        for fn in fns:
            fn(spec)
    return apply


def plant(rootfs: Path, path: str, content: str | bytes = "", mode: int = 0o644) -> Path:
    """A file at path as the container sees it; parents made as real dirs."""
    target = rootfs / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    target.write_bytes(content)
    target.chmod(mode)
    return target


def plant_dir(rootfs: Path, path: str, mode: int = 0o755) -> Path:
    target = rootfs / path.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(mode)
    return target


def plant_symlink(rootfs: Path, path: str, target: str) -> None:
    link = rootfs / path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def mark_rootfs(rootfs: Path) -> None:
    plant(rootfs, MARK, "inside\n")


# Shell: INSIDE when `..` from the cwd stays in the marked rootfs.
INSIDE_OR_OUT = f'if [ -e "{UP}/{MARK}" ]; then echo INSIDE; else echo OUTSIDE; fi'


def fingerprint(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns, st.st_size


def host_interpreter_files() -> list[str]:
    """The interpreter binary and its libpython: what CVE-2019-5736 would overwrite."""
    files = {HOST_EXE}
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libpython" in path and path.startswith("/"):
                files.add(os.path.realpath(path))
    return sorted(files)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def fds_listed(ls_output: str) -> dict[int, str]:
    """fd -> target from `ls -l /proc/self/fd`; ls's own directory fd, closed
    before it reads the links, shows no target and is left out."""
    return {int(fd): target for fd, target in re.findall(r" (\d+) -> (.*)$", ls_output, re.M)}


def mountpoints_under(path: Path) -> list[str]:
    prefix = str(path)
    return [mi.mountpoint for mi in proc.mountinfo()
            if mi.mountpoint == prefix or mi.mountpoint.startswith(prefix + "/")]


@contextlib.contextmanager
def shared_mountpoint(path: Path) -> Iterator[None]:
    """path bind-mounted on itself and made shared: a mount the runtime wrongly
    made on it from the container's namespace would show up on the host."""
    libc.mount(str(path), str(path), None, m.MS_BIND)
    try:
        libc.mount(None, str(path), None, m.MS_SHARED)
        yield
    finally:
        while str(path) in mountpoints_under(path):
            libc.umount2(str(path), m.MNT_DETACH)


# -- 1. CVE-2019-5736: the runtime's interpreter and fds, seen from the container --

# Run by container root: probes every process it can see, not a busybox, for
# its exe (to overwrite the host interpreter), its fds and cwd (to reach the
# host). Each success is one line in /attack/log. Only opens, never writes.
ATTACK_SH = r"""
H='@HOST_EXE@'
LOG=/attack/log
note() { echo "$*" >> $LOG; }
outside() { ( cd "$1" 2>/dev/null && [ ! -e "@UP@/@MARK@" ] ); }
attack() {  # $1: /proc/<pid>, $2: its exe as readlink showed it
  d=$1; p=${1#/proc/}; t=$2
  [ "$t" = "$H" ] && note "saw-host-exe pid=$p"
  true 2>/dev/null 3<>$d/exe && note "write-open-exe pid=$p exe=$t"
  { o=$(readlink /proc/self/fd/4)
    if [ "$o" != /bin/busybox ]; then
      note "read-open-exe pid=$p exe=$o"
      true 2>/dev/null 5<>/proc/self/fd/4 && note "reopen-write-exe pid=$p exe=$o"
    fi
  } 2>/dev/null 4<$d/exe
  outside $d/cwd && note "cwd-outside pid=$p"
  outside $d/root && note "root-outside pid=$p"
  for f in $d/fd/*; do
    outside $f && note "fd-outside pid=$p fd=${f##*/} $(readlink $f)"
    [ "$(readlink $f 2>/dev/null)" = "$H" ] && note "fd-host-exe pid=$p"
  done
}
probe() {
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$$" ] && continue
    t=$(readlink $d/exe 2>/dev/null)
    [ "$t" = /bin/busybox ] && continue
    if [ -z "$t" ] && kill -STOP $p 2>/dev/null; then
      # Unreadable: maybe the runtime mid-setup. Hold it still and try again.
      echo "$p $(cat $d/comm 2>/dev/null)" >> /attack/held
      attack $d "$(readlink $d/exe 2>/dev/null)"
      kill -CONT $p
    else
      attack $d "$t"
    fi
  done
}
case "$1" in
  once) probe ;;
  loop)
    i=0
    while [ $i -lt 4 ]; do
      ( while [ ! -e /attack/stop ]; do probe; done ) &
      i=$((i + 1))
    done
    : > /attack/started
    wait ;;
esac
"""


def plant_attack(rootfs: Path) -> Path:
    mark_rootfs(rootfs)
    attack = plant_dir(rootfs, "/attack", 0o777)
    plant(rootfs, "/attack/attack.sh", ATTACK_SH.replace("@HOST_EXE@", HOST_EXE)
          .replace("@UP@", UP).replace("@MARK@", MARK), 0o755)
    (attack / "log").touch(0o666)
    return attack


def attack_log(attack: Path) -> list[str]:
    return (attack / "log").read_text().splitlines()


@contextlib.contextmanager
def dumpable_host_process(init_pid: int) -> Iterator[int]:
    """A host interpreter with no capabilities, moved into the container's pid
    namespace: what a runtime process left dumpable would look like. Yields
    its pid as the container sees it."""
    control = subprocess.Popen(
        ["nsenter", "-t", str(init_pid), "-p", "--", "setpriv", "--bounding-set", "-all",
         "--", HOST_EXE, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert control.stdout is not None
        yield int(control.stdout.readline())
    finally:
        os.killpg(control.pid, 9)
        control.wait(timeout=10)
        if control.stdout is not None:
            control.stdout.close()


def test_exec_setup_is_out_of_reach_of_container_processes(runtime, bundle):
    """CVE-2019-5736: container root loops over /proc/*/exe, opening each for
    writing, and for reading then reopening /proc/self/fd/N for writing, and
    tries the fds and cwd of any process that is not busybox, while many
    `exec`s set up processes in the container. None may reach the host's
    interpreter or a host directory."""
    before = {path: fingerprint(path) for path in host_interpreter_files()}
    path, cid = bundle(["sh", "/attack/attack.sh", "loop"], edit=docker_caps, own_rootfs=True)
    attack = plant_attack(path / "rootfs")
    runtime("run", "-d", "--bundle", str(path), cid)
    assert wait_for(lambda: (attack / "started").exists())

    control = None
    if shutil.which("nsenter") and shutil.which("setpriv"):
        # The probe is live: a dumpable host interpreter in the container is caught.
        with dumpable_host_process(runtime.state(cid)["pid"]) as control:
            assert wait_for(lambda: f"saw-host-exe pid={control}" in attack_log(attack))
            assert f"read-open-exe pid={control} exe={HOST_EXE}" in attack_log(attack)

    def exec_one(i: int) -> int:
        args = ["exec", cid, "sh", "-c", "exit 0"] if i % 2 else ["exec", cid, "true"]
        return runtime(*args, check=False).returncode

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(exec_one, range(48)))
    assert codes == [0] * 48
    (attack / "stop").touch()
    runtime("delete", "--force", cid)

    found = [line for line in attack_log(attack) if line.split()[1] != f"pid={control}"]
    assert not found, f"container processes reached the runtime: {found}"
    assert {path: fingerprint(path) for path in before} == before


def test_init_waiting_for_start_is_out_of_reach(runtime, bundle):
    """CVE-2019-5736 / CVE-2024-21626 against a created container: a process
    exec'd before `start` probes the waiting init (pid 1, still the runtime's
    interpreter) for its exe, fds and cwd."""
    path, cid = bundle(["true"], edit=docker_caps, own_rootfs=True)
    attack = plant_attack(path / "rootfs")
    runtime("create", "--bundle", str(path), cid)
    runtime("exec", cid, "sh", "/attack/attack.sh", "once")
    runtime("delete", "--force", cid)
    assert attack_log(attack) == [], attack_log(attack)


# -- 2. CVE-2024-21626: host fds and a host cwd ---------------------------------

LIST_FDS = ["ls", "-l", "/proc/self/fd"]


@contextlib.contextmanager
def host_fds(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Two inheritable host fds as a careless caller would leak them: a file,
    then a directory (a way out if it reached the container)."""
    (tmp_path / "host-file").write_text("host\n")
    file_fd = os.open(tmp_path / "host-file", os.O_RDONLY)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert file_fd < dir_fd
        yield file_fd, dir_fd
    finally:
        os.close(dir_fd)
        os.close(file_fd)


@pytest.mark.parametrize("how", ["run", "exec"])
def test_no_host_fd_reaches_the_container(runtime, bundle, tmp_path, how):
    """CVE-2024-21626: the caller's fds (a host file and a host directory) and
    the runtime's own (its state dir, sync sockets) must not reach a container
    process; --preserve-fds N hands over exactly fds 3..N+2."""
    with host_fds(tmp_path) as (file_fd, dir_fd):
        preserve = str(file_fd - 2)  # 3..file_fd, not dir_fd
        if how == "run":
            path, cid = bundle(LIST_FDS)
            plain = runtime("run", "--bundle", str(path), cid, pass_fds=(file_fd, dir_fd))
            path, cid = bundle(LIST_FDS)
            kept = runtime("run", "--preserve-fds", preserve, "--bundle", str(path), cid,
                           pass_fds=(file_fd, dir_fd))
        else:
            path, cid = bundle(["sleep", "300"])
            runtime("run", "-d", "--bundle", str(path), cid)
            plain = runtime("exec", cid, *LIST_FDS, pass_fds=(file_fd, dir_fd))
            kept = runtime("exec", "--preserve-fds", preserve, cid, *LIST_FDS,
                           pass_fds=(file_fd, dir_fd))
            runtime("delete", "--force", cid)
    assert sorted(fds_listed(plain.stdout)) == [0, 1, 2], plain.stdout
    assert sorted(fds_listed(kept.stdout)) == [0, 1, 2, file_fd], kept.stdout
    assert fds_listed(kept.stdout)[file_fd] == str(tmp_path / "host-file")


FD_SCAN = [f"/proc/self/fd/{n}" for n in range(3, 10)]
CLIMBS = ["../../../..", "/../../../..", "/proc/../../..", "/proc/self/root/../..",
          "/proc/1/cwd", "/proc/1/root/.."]


@pytest.mark.parametrize("how,trick", [
    ("run", "fd-scan"),
    ("run", "caller-dir-fd"),
    ("run", "climb"),
    ("exec", "fd-scan"),
    ("exec", "caller-dir-fd"),
    ("exec", "climb"),
])
def test_cwd_cannot_point_outside_the_rootfs(runtime, bundle, tmp_path, how, trick):
    """CVE-2024-21626: a process cwd of /proc/self/fd/N (every small N, and the
    number of a directory fd the caller leaked) or one climbing with `..` and
    /proc links must start the process inside the rootfs, or fail clearly."""
    with host_fds(tmp_path) as (_, dir_fd):
        cwds = {"fd-scan": FD_SCAN, "caller-dir-fd": [f"/proc/self/fd/{dir_fd}"],
                "climb": CLIMBS}[trick]
        probe = ["sh", "-c", f"readlink /proc/self/cwd; {INSIDE_OR_OUT}"]
        escapes = []
        if how == "exec":
            path, cid = bundle(["sleep", "300"], own_rootfs=True)
            mark_rootfs(path / "rootfs")
            runtime("run", "-d", "--bundle", str(path), cid)
        for cwd in cwds:
            if how == "run":
                def with_cwd(spec: dict[str, Any], cwd: str = cwd) -> None:
                    spec["process"]["cwd"] = cwd

                path, cid = bundle(probe, edit=with_cwd, own_rootfs=True)
                mark_rootfs(path / "rootfs")
                result = runtime("run", "--bundle", str(path), cid, check=False,
                                 pass_fds=(dir_fd,))
            else:
                result = runtime("exec", "--cwd", cwd, cid, *probe, check=False,
                                 pass_fds=(dir_fd,))
            if result.returncode != 0:
                assert cwd in result.stderr, result.stderr
            elif "INSIDE" not in result.stdout:
                escapes.append(f"{cwd}: {result.stdout.strip()!r}")
        if how == "exec":
            runtime("delete", "--force", cid)
    assert not escapes, f"container started outside its rootfs: {escapes}"


# -- 3. CVE-2021-30465: mount destinations through symlinks in the image ---------

def mount_cases(tmp_path: Path, hostdir: Path) -> dict[str, tuple[dict[str, str], str, str]]:
    """name -> (symlinks planted in the image, mount destination, where the
    mount must land as the container sees it)."""
    climb = "../" * 12
    return {
        "absolute": ({"/mnt/evil": str(hostdir)}, "/mnt/evil", str(hostdir)),
        "relative-multi-hop": ({"/hop1": "hop2", "/hop2": climb + str(hostdir.parent)[1:]},
                               f"hop1/{hostdir.name}", str(hostdir)),
        "parent-component": ({"/srv": "/" + climb + str(hostdir)[1:]}, "/srv/made/here",
                             f"{hostdir}/made/here"),
        "dangling": ({"/dangle": str(tmp_path / "nowhere" / "x")}, "/dangle",
                     str(tmp_path / "nowhere" / "x")),
    }


def mount_entry(kind: str, destination: str, bindsrc: Path) -> dict[str, Any]:
    if kind == "tmpfs":
        return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m"]}
    return {"destination": destination, "type": "bind", "source": str(bindsrc),
            "options": ["rbind", "rw"]}


def host_target(tmp_path: Path) -> Path:
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "canary").write_text("host\n")
    return hostdir


def assert_host_untouched(hostdir: Path, tmp_path: Path) -> None:
    assert sorted(os.listdir(hostdir)) == ["canary"]
    assert mountpoints_under(hostdir) == [str(hostdir)], "a mount reached the host"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
@pytest.mark.parametrize("case", ["absolute", "relative-multi-hop", "parent-component",
                                  "dangling"])
def test_mount_destination_symlinks_stay_in_the_rootfs(runtime, bundle, tmp_path, case, kind):
    """CVE-2021-30465: the image makes a mount destination (or a parent of it)
    a symlink to a host directory: absolute, relative climbing past /, through
    two hops, or dangling. The mount must land inside the rootfs (the link
    resolved as if / were the rootfs) or create must fail naming it; never on
    the host directory, shared with the container's mounts (rshared)."""
    hostdir = host_target(tmp_path)
    bindsrc = tmp_path / "bindsrc"
    bindsrc.mkdir()
    (bindsrc / "bind-canary").touch()
    links, destination, landing = mount_cases(tmp_path, hostdir)[case]

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append(mount_entry(kind, destination, bindsrc))
        spec["linux"]["rootfsPropagation"] = "rshared"

    path, cid = bundle(["sh", "-c", 'cat /proc/self/mountinfo; ls -a "$0"', landing],
                       edit=edit, own_rootfs=True)
    rootfs = path / "rootfs"
    if case != "dangling":
        plant_dir(rootfs, str(hostdir))
    for link, target in links.items():
        plant_symlink(rootfs, link, target)
    with shared_mountpoint(hostdir):
        result = runtime("run", "--bundle", str(path), cid, check=False)
        assert_host_untouched(hostdir, tmp_path)
    if result.returncode != 0:
        assert destination.lstrip("/") in result.stderr, result.stderr
        return
    assert landing in [line.split()[4] for line in result.stdout.splitlines()
                       if len(line.split()) > 4], result.stdout
    if kind == "bind":
        assert "bind-canary" in result.stdout


@pytest.mark.parametrize("case", ["masked-file", "readonly-dir", "masked-fd", "readonly-fd"])
def test_masked_and_readonly_symlinks_stay_in_the_rootfs(runtime, bundle, tmp_path, case):
    """The image makes a masked or read-only path a symlink: to another file
    of the image, up and out towards a host directory, or to the runtime's
    own fds (/proc/self/fd/3). What gets masked or made read-only is in the
    container, or create fails; nothing happens on the host."""
    hostdir = host_target(tmp_path)
    link = {"masked-file": "/etc/masklink", "readonly-dir": "/rolink",
            "masked-fd": "/fdmask", "readonly-fd": "/fdro"}[case]
    target = {"masked-file": "/etc/secret", "readonly-dir": "../" * 12 + str(hostdir)[1:],
              "masked-fd": "/proc/self/fd/3", "readonly-fd": "/proc/self/fd/3"}[case]
    key = "maskedPaths" if case.startswith("masked") else "readonlyPaths"

    def edit(spec: dict[str, Any]) -> None:
        spec["linux"][key].append(link)
        spec["linux"]["rootfsPropagation"] = "rshared"

    probe = {"masked-file": "cat /etc/secret /etc/masklink; echo end",
             "readonly-dir": "touch /rolink/new && echo WROTE; ls /rolink",
             "masked-fd": "ls /fdmask", "readonly-fd": "ls /fdro"}[case]
    path, cid = bundle(["sh", "-c", probe], edit=edit, own_rootfs=True)
    rootfs = path / "rootfs"
    plant(rootfs, "/etc/secret", "image-secret\n")
    plant_dir(rootfs, str(hostdir))
    plant_symlink(rootfs, link, target)
    with shared_mountpoint(hostdir):
        result = runtime("run", "--bundle", str(path), cid, check=False)
        assert_host_untouched(hostdir, tmp_path)
    assert not mountpoints_under(runtime.root)
    if case == "masked-file":
        assert result.returncode == 0, result.stderr
        assert "image-secret" not in result.stdout
    elif case == "readonly-dir":
        assert result.returncode == 0, result.stderr
        assert "WROTE" not in result.stdout and "Read-only" in result.stderr
    elif result.returncode != 0:
        assert link in result.stderr, result.stderr


# -- 4. Nothing from the image imported or run by the runtime -------------------

PLANTED_MODULE = f"""import os as _os
try:
    _os.close(_os.open("{PLANTED}/py-" + __name__ + "-" + str(_os.getpid()),
                       _os.O_WRONLY | _os.O_CREAT, 0o644))
except OSError:
    pass
"""
# A source file of the runtime as the image has it: a traceback shown after the
# switch would read it, and its coding cookie would import a codec from the image.
PLANTED_SOURCE = "# -*- coding: koi8_r -*-\n" + PLANTED_MODULE
PLANTED_PTH = (f"import os; os.close(os.open('{PLANTED}/pth-' + str(os.getpid()), "
               "os.O_WRONLY | os.O_CREAT, 0o644))\n")
PLANTED_SCRIPT = f"#!/bin/sh\n: > {PLANTED}/exec-$(basename $0)-$$\n"
PLANTED_LIB = f"""#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {{
    char path[128];
    snprintf(path, sizeof path, "{PLANTED}/lib-%d", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
}}
"""
HOOK_KINDS = ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]


def runtime_python_paths() -> tuple[list[str], list[str]]:
    """The runtime's sys.path (its script's directory first) and encodings' path."""
    out = subprocess.run(
        [HOST_EXE, "-c", "import sys, json, encodings; "
         "print(json.dumps([sys.path[1:], list(encodings.__path__)]))"],
        capture_output=True, text=True, check=True, timeout=30, stdin=subprocess.DEVNULL,
        cwd="/").stdout
    paths, enc = json.loads(out)
    return [str(Path(sys.executable).parent)] + [p for p in paths if p], enc


def plant_python(rootfs: Path) -> int:
    """Every module the runtime's interpreter could import, at the paths where
    it would look for it, as the container sees them."""
    paths, enc_paths = runtime_python_paths()
    names = set(sys.stdlib_module_names) | {"sitecustomize", "usercustomize"}
    count = 0
    for directory in paths:
        if directory.endswith(".zip"):
            continue
        for name in names:
            plant(rootfs, f"{directory}/{name}.py", PLANTED_MODULE)
            count += 1
        if directory.endswith("site-packages"):
            plant(rootfs, f"{directory}/00-planted.pth", PLANTED_PTH)
    codecs = {p.stem for p in Path(encodings.__file__).parent.glob("*.py")}
    for directory in enc_paths:
        for name in codecs - {"__init__"}:
            plant(rootfs, f"{directory}/{name}.py", PLANTED_MODULE)
            count += 1
    for package_dir in isobox.__path__:
        for source in Path(package_dir).rglob("*.py"):
            plant(rootfs, str(source), PLANTED_SOURCE)
            count += 1
    return count


def plant_native(rootfs: Path, tmp_path: Path) -> None:
    """/etc/ld.so.preload naming a library of the image, a bogus ld.so.cache
    and a libseccomp in the image's library dirs: all write a marker if a
    dynamic program or dlopen() after the switch loads them."""
    lib = tmp_path / "planted.so"
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is not None:
        (tmp_path / "planted.c").write_text(PLANTED_LIB)
        subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "planted.c")],
                       check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        blob = lib.read_bytes()
    else:  # still a file the loader would choke on, loudly
        blob = b"not an ELF object\n"
    plant(rootfs, "/planted/libplanted.so", blob, 0o755)
    plant(rootfs, "/etc/ld.so.preload", "/planted/libplanted.so\n")
    plant(rootfs, "/etc/ld.so.cache", b"glibc-ld.so.cache1.1" + b"\0" * 64)
    for libdir in ("/lib", "/lib64", "/usr/lib", "/lib/x86_64-linux-gnu",
                   "/usr/lib/x86_64-linux-gnu"):
        plant(rootfs, f"{libdir}/libseccomp.so.2", blob, 0o755)


def test_runtime_runs_nothing_from_the_image(runtime, bundle, tmp_path):
    """The image plants a module at every path of the runtime's sys.path (the
    stdlib, encodings, site-packages with a .pth, sitecustomize, the isobox
    sources), an /etc/ld.so.preload, a libseccomp, a fake /bin/ps, and a copy
    of each hook at the hook's own path. A whole lifecycle (create, start,
    exec, ps, pause, kill, delete, run, failures after the switch) must run
    none of them: hooks run from the host, other than startContainer."""
    host_log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1" >> {host_log}\n')
    hook.chmod(0o755)

    def edit(spec: dict[str, Any]) -> None:
        spec["hooks"] = {kind: [{"path": str(hook), "args": ["hook", kind]}]
                         for kind in HOOK_KINDS}

    path, cid = bundle(["sleep", "300"], edit=edits(docker_caps, docker_seccomp, edit),
                       own_rootfs=True)
    rootfs = path / "rootfs"
    planted = plant_dir(rootfs, PLANTED, 0o1777)
    assert plant_python(rootfs) > 500
    plant_native(rootfs, tmp_path)
    plant(rootfs, str(hook), PLANTED_SCRIPT, 0o755)
    (rootfs / "bin" / "ps").unlink()
    plant(rootfs, "/bin/ps", PLANTED_SCRIPT, 0o755)

    runtime("create", "--bundle", str(path), cid)
    runtime("start", cid)
    assert runtime("exec", cid, "sh", "-c", "echo hi").stdout == "hi\n"
    assert runtime("exec", "--user", "65534:65534", "--cwd", "/tmp", cid,
                   "sh", "-c", "id -u").stdout == "65534\n"
    runtime("exec", "-d", cid, "sleep", "30")
    assert runtime("exec", cid, "/no/such/program", check=False).returncode != 0
    assert runtime("exec", "--cwd", "/no/such/dir", cid, "true", check=False).returncode != 0
    for args in (["state", cid], ["list"], ["ps", cid], ["ps", "--format", "json", cid],
                 ["events", "--stats", cid], ["pause", cid], ["resume", cid]):
        runtime(*args)
    runtime("kill", cid, "KILL")
    assert wait_for(lambda: runtime.state(cid)["status"] == "stopped")
    runtime("delete", cid)

    config = json.loads((path / "config.json").read_text())
    for args, code in ((["sh", "-c", "exit 3"], 3), (["/no/such/program"], None)):
        config["process"]["args"] = args
        (path / "config.json").write_text(json.dumps(config))
        # containerd's way: --log in JSON
        result = runtime("--log", str(tmp_path / "log.json"), "--log-format", "json",
                         "run", "--bundle", str(path), cid, check=False)
        assert result.returncode == code if code is not None else result.returncode != 0

    assert sorted(os.listdir(planted)) == [], "the runtime ran code from the image"
    ran = host_log.read_text().split()
    assert set(ran) == set(HOOK_KINDS), ran


def test_debug_failure_after_the_switch_imports_nothing(runtime, bundle, tmp_path):
    """A container that fails after pivot_root, under --debug (as containerd
    runs runtimes when debugging): the traceback of the failure must not be
    formatted from the image's copies of the runtime's sources."""
    path, cid = bundle(["/no/such/program"], own_rootfs=True)
    rootfs = path / "rootfs"
    planted = plant_dir(rootfs, PLANTED, 0o1777)
    plant_python(rootfs)
    result = runtime("--debug", "run", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0
    assert sorted(os.listdir(planted)) == [], "the runtime ran code from the image"


# -- 5. Host processes, kernel files, devices, mounts ---------------------------

def run_checks(runtime, bundle, checks: dict[str, str], edit) -> dict[str, tuple[int, str]]:
    """Each shell snippet run in one container: name -> (exit status, output)."""
    script = "".join(f'out=$( ( {snippet} ) 2>&1 ); rc=$?; '
                     f'printf "@@check {name}\\n%s\\n@@rc %s\\n" "$out" $rc\n'
                     for name, snippet in checks.items())
    path, cid = bundle(["sh", "-c", script], edit=edit)
    out = runtime("run", "--bundle", str(path), cid).stdout
    found = re.findall(r"^@@check (\S+)\n(.*?)^@@rc (\d+)$", out, re.M | re.S)
    results = {name: (int(rc), body) for name, body, rc in found}
    assert set(results) == set(checks), out
    return results


def test_host_is_hidden_from_a_docker_default_container(runtime, bundle):
    """With a pid namespace, Docker's default capabilities and seccomp profile
    and the default masked and read-only paths, container root tries to see
    host processes, read /proc/kcore and /proc/keys, write /proc/sys, mount,
    make a user namespace, mknod and read the host's disk, and find the
    runtime's state dir. Each attempt fails."""
    token = uuid.uuid4().hex
    disk = os.stat("/").st_dev
    root = str(runtime.root)
    checks = {
        "pids": "ls -d /proc/[0-9]*",
        "cmdlines": "cat /proc/[0-9]*/cmdline | tr '\\0\\n' '  '",
        "ps": "ps -o pid,args",
        "masked": f"for p in {' '.join(MASKED_PATHS)}; do "
                  '[ -e $p ] && echo "$p $(stat -c %F $p) $(ls -A $p | wc -l)"; done; true',
        "keys": "cat /proc/keys",
        "proc-sys": "cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname",
        "mount": "mount -t tmpfs none /tmp",
        "unshare": "unshare -U true",
        # /dev is a tmpfs without nodev: only the devices cgroup stands in the way
        "mknod": f"mknod /dev/disk b {os.major(disk)} {os.minor(disk)}; "
                 "head -c 512 /dev/disk | wc -c",
        "state-dir": f"ls -d {root}; grep -c -F {root} /proc/self/mountinfo",
        "control": "echo container-ok",
    }
    sentinel = subprocess.Popen([HOST_EXE, "-c", "import time; time.sleep(60)", token],
                                stdin=subprocess.DEVNULL)
    try:
        res = run_checks(runtime, bundle, checks, edits(docker_caps, docker_seccomp))
    finally:
        sentinel.kill()
        sentinel.wait()
    assert res["control"] == (0, "container-ok\n")
    pids = [int(p.rsplit("/", 1)[1]) for p in res["pids"][1].split()]
    assert 1 in pids and len(pids) < 10, pids
    assert token not in res["cmdlines"][1]
    ps_pids = [int(line.split()[0]) for line in res["ps"][1].splitlines()
               if line.split() and line.split()[0].isdigit()]
    assert 1 in ps_pids and max(ps_pids) < 10, res["ps"][1]
    masked = dict(line.split(" ", 1) for line in res["masked"][1].splitlines())
    assert "/proc/keys" in masked, res["masked"]
    for masked_path, kind in masked.items():
        assert kind in ("character special file 1", "directory 0"), (masked_path, kind)
    assert res["keys"] == (0, "\n")  # empty
    assert res["proc-sys"][0] != 0 and "Read-only file system" in res["proc-sys"][1]
    assert res["mount"][0] != 0 and re.search("denied|not permitted", res["mount"][1])
    assert res["unshare"][0] != 0 and "not permitted" in res["unshare"][1]
    assert "not permitted" in res["mknod"][1] and res["mknod"][1].split()[-1] == "0"
    assert "No such file" in res["state-dir"][1] and res["state-dir"][1].split()[-1] == "0"
