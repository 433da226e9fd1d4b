"""The same bundles under runc and isobox-runtime: the container must see the same world.

Each case starts from the config ``runc spec`` writes (terminal off, the
session's busybox rootfs), changes one area, runs a probe script under runc
(the reference) and under isobox-runtime, each with its own --root, and
compares what the probes print, section by section. A difference fails with
a unified diff of that section. Differences that are legitimate are
normalised away below, each with the reason.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.runc

RUNC = shutil.which("runc")

# One container run prints every probe, each after a "=== name" line.
PROBES = r"""
s() { printf '=== %s\n' "$1"; }
s id; id
s hostname; hostname
s domainname; cat /proc/sys/kernel/domainname
s status; grep -E 'Cap|NoNewPrivs|Seccomp' /proc/self/status
s init-status; grep -E 'Cap|NoNewPrivs|Seccomp' /proc/1/status
s mountinfo; cat /proc/self/mountinfo
s dev; ls -la /dev /dev/pts /dev/shm /dev/mqueue
s ulimit; ulimit -a
s cgroup; cat /proc/self/cgroup
s umask; umask
s pwd; pwd
s env; env | sort
s ns; ls -l /proc/self/ns | sed -n 's/.* \([a-z_]*\) -> .*/\1/p' | sort
s extra
"""


@pytest.fixture(scope="module")
def runc_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if RUNC is None:
        pytest.skip("runc is not installed: nothing to compare against")
    where = tmp_path_factory.mktemp("runc-spec")
    subprocess.run([RUNC, "spec", "--bundle", str(where)], check=True, timeout=30,
                   capture_output=True)
    spec: dict[str, Any] = json.loads((where / "config.json").read_text())
    return spec


def _without_ambient(spec: dict[str, Any]) -> None:
    """``runc spec`` asks for ambient capabilities that are not inheritable, which the
    kernel refuses (PR_CAP_AMBIENT_RAISE needs the cap in permitted and inheritable);
    runc ignores the failure, so its container has CapAmb 0 either way. isobox-runtime
    fails instead (see test_runc_spec_verbatim): the other cases leave the
    ambient set out so that they compare everything else."""
    spec["process"]["capabilities"].pop("ambient", None)


@pytest.fixture
def runc(runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """runc driven like the ``runtime`` fixture drives isobox-runtime, with its own --root."""
    assert RUNC is not None
    root = tmp_path_factory.mktemp("runc-state")
    rt = type(runtime)(root, binary=RUNC)
    yield rt
    for entry in list(root.iterdir()) if root.exists() else []:
        subprocess.run([RUNC, "--root", str(root), "delete", "--force", entry.name],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


Edit = Callable[[dict[str, Any]], None]


def _from_runc_spec(runc_spec: dict[str, Any], args: list[str], edit: Edit | None,
                    verbatim: bool = False) -> Edit:
    """An edit for the ``bundle`` factory: replace its config by runc's own, keeping
    the factory's rootfs, readonly flag and cgroupsPath (so the leak check sees it)."""

    def apply(spec: dict[str, Any]) -> None:
        root = spec["root"]
        cgroups_path = spec["linux"]["cgroupsPath"]
        spec.clear()
        spec.update(copy.deepcopy(runc_spec))
        spec["root"] = {"path": root["path"], "readonly": root["readonly"]}
        spec["linux"]["cgroupsPath"] = cgroups_path
        spec["process"]["terminal"] = False
        spec["process"]["args"] = args
        if verbatim:
            return
        _without_ambient(spec)
        if edit is not None:
            edit(spec)

    return apply


def _run_both(runtime, runc, bundle, runc_spec, *, extra: str = "", edit: Edit | None = None,
              own_rootfs: bool = False, verbatim: bool = False
              ) -> dict[str, tuple[int, str, str]]:
    args = ["sh", "-c", PROBES + extra]
    path, cid = bundle(args, edit=_from_runc_spec(runc_spec, args, edit, verbatim),
                       own_rootfs=own_rootfs)
    results = {}
    for name, rt in (("runc", runc), ("isobox", runtime)):
        try:
            r = rt("run", "--bundle", str(path), cid, check=False)
        finally:
            rt("delete", "--force", cid, check=False)
        results[name] = (r.returncode, r.stdout, r.stderr)
    return results


# -- normalising what the probes print ---------------------------------------

def _sections(out: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("=== "):
            current = line[4:]
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return {k: "\n".join(v) for k, v in found.items()}


# Per-mount flags that are the kernel's defaults or follow from others: kept as is.
# Super-block options worth comparing; the rest (inode counts, sizes in
# different units...) say nothing about the setup.
_SUPER_KEYS = ("mode", "size", "uid", "gid", "ptmxmode", "newinstance", "nr_inodes")


def _mountinfo(text: str) -> str:
    """(mountpoint, fstype, per-mount options [chosen super-block options]), one per line.

    Legitimate differences, normalised:
    - isobox-runtime also binds the container's cgroup of the cgroup2 hierarchy at
      /sys/fs/cgroup/unified on a hybrid host; runc 1.1 only mounts the v1
      hierarchies. Dropped.
    - With the "ro" option on the cgroup mount, isobox-runtime remounts the tmpfs
      at /sys/fs/cgroup read-only; runc 1.1 leaves it rw (the hierarchies under
      it are ro in both). Compared as ro.
    - runc applies readonlyPaths before maskedPaths, isobox-runtime the other way
      round; a path in both ends up masked and read-only either way. Sorted by
      mountpoint (stable, so mounts stacked on one mountpoint keep their order).
      For the same reason a path masked under a read-only one (/etc/group under
      /etc) shows twice in isobox-runtime's table: the mask, then its copy made
      by the recursive bind of /etc, which hides the first. Identical rows for one
      mountpoint are counted once.
    """
    rows = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 6:
            continue
        mountpoint, options = fields[4], fields[5]
        fstype, _source, *rest = right.split()
        if mountpoint == "/sys/fs/cgroup/unified" and fstype == "cgroup2":
            continue
        if mountpoint == "/sys/fs/cgroup" and fstype == "tmpfs":
            options = options.replace("rw,", "ro,", 1) if options.startswith("rw,") else options
        supers = rest[0].split(",") if rest else []
        kept = sorted(o for o in supers if o.split("=")[0] in _SUPER_KEYS)
        row = f"{mountpoint} {fstype} {options}"
        if kept:
            row += " [" + ",".join(kept) + "]"
        rows.append((mountpoint, row))
    unique = list(dict.fromkeys(row for _, row in sorted(rows, key=lambda r: r[0])))
    return "\n".join(unique)


_LS = re.compile(r"^(?P<mode>[-a-zA-Z][-rwxsStT]{9})\S*\s+\d+\s+(?P<owner>\S+)\s+(?P<group>\S+)\s+"
                 r"(?:(?P<major>\d+),\s*(?P<minor>\d+)|\d+)\s+\w{3}\s+\d+\s+[\d:]+\s+"
                 r"(?P<name>.+)$")


def _dev(text: str) -> str:
    """ls -la: type+mode, owner, group, major/minor, name (-> target); no times,
    sizes or link counts."""
    rows = []
    for line in text.splitlines():
        if line.startswith("total") or not line.strip():
            continue
        if line.endswith(":"):
            rows.append(line)
            continue
        m = _LS.match(line)
        if m is None:
            rows.append(f"?? {line}")
            continue
        name = m["name"]
        if name in (".", ".."):
            # the mount's own directory: only its mode says something
            rows.append(f"{m['mode']} {name}")
            continue
        dev = f" {m['major']},{m['minor']}" if m["major"] else ""
        rows.append(f"{m['mode']} {m['owner']}:{m['group']}{dev} {name}")
    return "\n".join(rows)


def _cgroup(text: str) -> str:
    """Which hierarchies the process is in; not its path in them."""
    return "\n".join(sorted(line.split(":")[1] for line in text.splitlines() if ":" in line))


NORMALISE: dict[str, Callable[[str], str]] = {
    "mountinfo": _mountinfo,
    "dev": _dev,
    "cgroup": _cgroup,
}


def _compare(results: dict[str, tuple[int, str, str]], skip: tuple[str, ...] = ()) -> None:
    (rc_a, out_a, err_a), (rc_b, out_b, err_b) = results["runc"], results["isobox"]
    problems = []
    if rc_a != rc_b:
        problems.append(f"exit status: runc {rc_a}, isobox {rc_b}\n"
                        f"runc stderr: {err_a.strip()}\nisobox stderr: {err_b.strip()}")
    a, b = _sections(out_a), _sections(out_b)
    if not a:
        problems.append(f"runc printed no probes (rc {rc_a}): {err_a.strip()}")
    for name in sorted(set(a) | set(b), key=lambda n: list(a).index(n) if n in a else 99):
        if name in skip:
            continue
        norm = NORMALISE.get(name, lambda s: s)
        left, right = norm(a.get(name, "<missing>")), norm(b.get(name, "<missing>"))
        if left != right:
            diff = "\n".join(difflib.unified_diff(left.splitlines(), right.splitlines(),
                                                  "runc", "isobox-runtime", lineterm="", n=2))
            problems.append(f"--- section {name!r} differs:\n{diff}")
    assert not problems, "runc and isobox-runtime disagree:\n\n" + "\n\n".join(problems)


# -- the cases -----------------------------------------------------------------

def _user(spec: dict[str, Any]) -> None:
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20, 65534],
                               "umask": 0o027}
    spec["process"]["cwd"] = "/tmp"


def _hostname(spec: dict[str, Any]) -> None:
    spec["hostname"] = "differential"


def _rlimits(spec: dict[str, Any]) -> None:
    spec["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 512},
        {"type": "RLIMIT_NPROC", "hard": 300, "soft": 200},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
        {"type": "RLIMIT_STACK", "hard": 16 * 1024 * 1024, "soft": 4 * 1024 * 1024},
        {"type": "RLIMIT_MEMLOCK", "hard": 65536, "soft": 65536},
        {"type": "RLIMIT_NICE", "hard": 0, "soft": 0},
    ]


def _caps_subset(spec: dict[str, Any]) -> None:
    subset = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SETUID"]
    spec["process"]["capabilities"] = {
        "bounding": [*subset, "CAP_SYS_ADMIN"], "effective": subset, "permitted": subset,
        "inheritable": ["CAP_CHOWN"],
    }


def _caps_nonroot_ambient(spec: dict[str, Any]) -> None:
    caps = ["CAP_NET_BIND_SERVICE", "CAP_KILL"]
    spec["process"]["user"] = {"uid": 1000, "gid": 1000}
    spec["process"]["capabilities"] = {k: list(caps) for k in
                                       ("bounding", "effective", "permitted", "inheritable",
                                        "ambient")}


def _nnp_off(spec: dict[str, Any]) -> None:
    spec["process"]["noNewPrivileges"] = False


def _cgroupns(spec: dict[str, Any]) -> None:
    spec["linux"]["namespaces"].append({"type": "cgroup"})


def _tmpfs(spec: dict[str, Any]) -> None:
    spec["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "noexec", "mode=1770", "size=1m",
                                       "uid=1000", "gid=1000"]})
    spec["mounts"].append({"destination": "/run/deep/er", "type": "tmpfs", "source": "tmpfs",
                           "options": ["ro", "mode=700"]})


def _masked(spec: dict[str, Any]) -> None:
    spec["linux"]["maskedPaths"] += ["/root", "/etc/group", "/no/such/path"]
    spec["linux"]["readonlyPaths"] += ["/etc", "/no/such/ro"]


TMPFS_PROBE = r"""
stat -c '%a %u %g' /scratch; touch /scratch/x && echo wrote; ls -ld /run/deep/er | cut -c1-10
touch /run/deep/er/x 2>/dev/null || echo ro-refused
"""
WRITE_PROBE = r"""
touch /probe 2>/dev/null && echo root-writable && rm /probe || echo root-readonly
mkdir -p /tmp/d 2>/dev/null && echo tmp-writable && rmdir /tmp/d || echo tmp-readonly
"""
MASK_PROBE = r"""
ls -A /root; echo "group:[$(cat /etc/group)]"; cat /etc/passwd | head -1
touch /etc/x 2>/dev/null && echo etc-writable || echo etc-readonly
touch /tmp/x 2>/dev/null && echo tmp-writable && rm /tmp/x
cat /proc/kcore 2>&1 | wc -c; ls /sys/firmware | wc -l
echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo proc-sys-readonly
"""
CAPS_PROBE = r"""
chown 1:1 /tmp 2>/dev/null && echo chown-ok || echo chown-refused
"""


CASES: dict[str, tuple[Edit | None, str, bool]] = {
    # name: (edit, extra probe, own writable rootfs)
    "default": (None, WRITE_PROBE, False),
    "user_groups_umask": (_user, "touch /tmp/f$$ && stat -c '%a' /tmp/f$$ && rm /tmp/f$$",
                          True),
    "writable_rootfs": (None, WRITE_PROBE, True),
    "hostname": (_hostname, "", False),
    "rlimits": (_rlimits, "", False),
    "caps_subset": (_caps_subset, CAPS_PROBE, True),
    "caps_nonroot_ambient": (_caps_nonroot_ambient, "", False),
    "no_new_privileges_off": (_nnp_off, "", False),
    # In a cgroup namespace the process sees itself at the root of each hierarchy.
    "cgroup_namespace": (_cgroupns, "cat /proc/self/cgroup; ls /sys/fs/cgroup/pids", False),
    "tmpfs_options": (_tmpfs, TMPFS_PROBE, True),
    "masked_and_readonly_paths": (_masked, MASK_PROBE, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_view(runtime, runc, bundle, runc_spec, case):
    edit, extra, own = CASES[case]
    _compare(_run_both(runtime, runc, bundle, runc_spec, extra=extra, edit=edit, own_rootfs=own))


def test_runc_spec_verbatim(runtime, runc, bundle, runc_spec):
    """The config exactly as ``runc spec`` writes it (terminal off)."""
    _compare(_run_both(runtime, runc, bundle, runc_spec, extra=WRITE_PROBE, verbatim=True))


def test_readonly_bind_mount(runtime, runc, bundle, runc_spec, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file").write_text("from the host\n")

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/mnt/host", "type": "bind", "source": str(shared),
                               "options": ["rbind", "ro"]})
        spec["mounts"].append({"destination": "/mnt/file", "type": "bind",
                               "source": str(shared / "file"), "options": ["bind", "ro",
                                                                          "nosuid"]})

    probe = r"""
cat /mnt/host/file /mnt/file; touch /mnt/host/x 2>/dev/null && echo bind-writable || echo bind-ro
"""
    results = _run_both(runtime, runc, bundle, runc_spec, extra=probe, edit=edit)
    _compare(results)
    assert "bind-ro" in results["isobox"][1]
    assert not (shared / "x").exists()


# -- exit statuses ----------------------------------------------------------------

def _status_of(rt, bundle_path: Path, cid: str) -> subprocess.CompletedProcess[str]:
    try:
        return rt("run", "--bundle", str(bundle_path), cid, check=False)
    finally:
        rt("delete", "--force", cid, check=False)


def test_exit_status(runtime, runc, bundle, runc_spec):
    args = ["sh", "-c", "exit 42"]
    path, cid = bundle(args, edit=_from_runc_spec(runc_spec, args, None))
    codes = {name: _status_of(rt, path, cid).returncode
             for name, rt in (("runc", runc), ("isobox", runtime))}
    assert codes == {"runc": 42, "isobox": 42}


def _killed_status(rt, bundle_path: Path, cid: str, tmp: Path) -> int:
    """Run in the foreground, SIGKILL the init from outside, return run's exit status."""
    with tempfile.TemporaryFile(dir=tmp) as out:
        p = subprocess.Popen([rt.binary, "--root", str(rt.root), "run", "--bundle",
                              str(bundle_path), cid], stdout=out, stderr=out,
                             stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = rt("state", cid, check=False)
                if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
                    break
                time.sleep(0.02)
            rt("kill", cid, "KILL")
            return p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            rt("delete", "--force", cid, check=False)


def test_killed_by_signal(runtime, runc, bundle, runc_spec, tmp_path):
    args = ["sleep", "300"]
    path, cid = bundle(args, edit=_from_runc_spec(runc_spec, args, None))
    codes = {name: _killed_status(rt, path, cid, tmp_path)
             for name, rt in (("runc", runc), ("isobox", runtime))}
    assert codes == {"runc": 137, "isobox": 137}


# program: the words both runtimes' messages must share (None: they differ, recorded only)
UNRUNNABLE = {
    "nosuchcommand": "executable file not found in $PATH",
    "/no/such/program": "no such file or directory",
    # runc says "permission denied" (execve's EACCES); isobox-runtime "is a directory".
    "/etc": None,
}


@pytest.mark.parametrize("program", list(UNRUNNABLE))
def test_unrunnable_command(runtime, runc, bundle, runc_spec, program, request):
    args = [program]
    path, cid = bundle(args, edit=_from_runc_spec(runc_spec, args, None))
    results = {name: _status_of(rt, path, cid) for name, rt in (("runc", runc),
                                                                ("isobox", runtime))}
    summary = {name: (r.returncode, r.stderr.strip()) for name, r in results.items()}
    # Shown with -rA, and in a junit report's properties.
    print(json.dumps(summary, indent=1))
    for name, (code, message) in summary.items():
        request.node.user_properties += [(f"{name}_exit", code), (f"{name}_message", message)]
    assert results["runc"].returncode != 0, summary
    assert results["isobox"].returncode != 0, summary
    assert results["isobox"].returncode == results["runc"].returncode, summary
    words = UNRUNNABLE[program]
    if words is not None:
        assert words in results["runc"].stderr and words in results["isobox"].stderr, summary
        assert program in results["isobox"].stderr
    assert not (runtime.root / cid).exists()


def test_domainname(runtime, runc, bundle, runc_spec):
    """runc 1.1 ignores the config's domainname (newer runc sets it); isobox-runtime sets
    it, as the runtime spec says. Everything else must agree."""
    def edit(spec: dict[str, Any]) -> None:
        spec["hostname"] = "host"
        spec["domainname"] = "example.test"

    results = _run_both(runtime, runc, bundle, runc_spec, edit=edit)
    runc_view = _sections(results["runc"][1]).get("domainname")
    isobox_view = _sections(results["isobox"][1]).get("domainname")
    assert isobox_view == "example.test"
    assert runc_view in ("(none)", "example.test")
    _compare(results, skip=("domainname",))


def test_raising_a_hard_rlimit_is_refused_by_both(runtime, runc, bundle, runc_spec):
    """RLIMIT_NICE above the host's hard limit needs CAP_SYS_RESOURCE, which the
    container does not keep: both runtimes refuse to start it."""
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NICE", "hard": 5, "soft": 5}]

    args = ["true"]
    path, cid = bundle(args, edit=_from_runc_spec(runc_spec, args, edit))
    results = {name: _status_of(rt, path, cid) for name, rt in (("runc", runc),
                                                                ("isobox", runtime))}
    summary = {name: (r.returncode, r.stderr.strip()) for name, r in results.items()}
    assert results["runc"].returncode != 0, summary
    assert results["isobox"].returncode == results["runc"].returncode, summary


# -- reliability ------------------------------------------------------------------



def test_repeated_create_delete_never_fails(runtime, runc, bundle, runc_spec):
    """Create and delete 30 times: isobox-runtime must never fail (runc, the
    control, is run a few times alongside).

    isobox-runtime has a race between its two setup processes: stage 1 forks
    stage 2 and only then sends "pid" on the channel they share, while stage 2
    may already have sent "prestart"; the parent insists on "pid" first
    (src/isobox/runtime/init.py stage1, src/isobox/runtime/create.py _spawn)
    and fails the create, about 2% of the time on an idle 2-core machine. A
    race cannot be a strict xfail: the test passes when it does not strike,
    xfails when only that failure occurs, and fails on any other.
    """
    args = ["true"]
    path, cid = bundle(args, edit=_from_runc_spec(runc_spec, args, None))
    failures: dict[str, list[str]] = {"runc": [], "isobox": []}
    for i in range(30):
        for name, rt in (("runc", runc), ("isobox", runtime)):
            if name == "runc" and i % 6:
                continue
            one = f"{cid}-{i}"
            try:
                r = rt("create", "--bundle", str(path), one, check=False)
                if r.returncode != 0:
                    failures[name].append(r.stderr.strip())
            finally:
                rt("delete", "--force", one, check=False)
    assert not failures["runc"], failures
    assert not failures["isobox"], failures
