"""Each part of config.json that the runtime must honour, checked from inside."""

from __future__ import annotations

import array
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest


def run_output(runtime, bundle, script: str, edit=None, own_rootfs: bool = False) -> str:
    path, cid = bundle(["sh", "-c", script], edit=edit, own_rootfs=own_rootfs)
    result = runtime("run", "--bundle", str(path), cid, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_user_groups_umask_cwd_env(runtime, bundle):
    def edit(spec):
        spec["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7],
                                   "umask": 0o027}
        spec["process"]["cwd"] = "/tmp"
        spec["process"]["env"].append("GREETING=hi there")

    out = run_output(runtime, bundle, "id -u; id -g; id -G; umask; pwd; echo $GREETING; "
                     "echo $HOME", edit)
    uid, gid, groups, umask, cwd, greeting, home = out.splitlines()
    assert (uid, gid) == ("1000", "1001")
    assert set(groups.split()) == {"1001", "5", "7"}
    assert umask == "0027"
    assert cwd == "/tmp"
    assert greeting == "hi there"
    assert home == "/"


def test_home_from_passwd(runtime, bundle):
    assert run_output(runtime, bundle, "echo $HOME").strip() == "/root"


def test_capabilities_and_no_new_privs(runtime, bundle):
    def edit(spec):
        caps = ["CAP_CHOWN", "CAP_KILL"]
        spec["process"]["capabilities"] = {"bounding": caps, "effective": caps,
                                           "permitted": caps, "inheritable": ["CAP_KILL"],
                                           "ambient": ["CAP_KILL"]}
        spec["process"]["noNewPrivileges"] = True

    status = dict(line.split(":\t", 1) for line in
                  run_output(runtime, bundle, "cat /proc/self/status", edit).splitlines()
                  if ":\t" in line)
    chown, kill = 1 << 0, 1 << 5
    assert int(status["CapBnd"], 16) == chown | kill
    assert int(status["CapEff"], 16) == chown | kill
    assert int(status["CapInh"], 16) == kill
    assert int(status["CapAmb"], 16) == kill
    assert status["NoNewPrivs"].strip() == "1"


def test_capability_names_are_validated(runtime, bundle):
    def edit(spec):
        spec["process"]["capabilities"]["bounding"] = ["CAP_NOT_A_THING"]

    path, cid = bundle(["true"], edit=edit)
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0 and "CAP_NOT_A_THING" in result.stderr


def test_rlimits_and_oom_score(runtime, bundle):
    def edit(spec):
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
                                      {"type": "RLIMIT_NPROC", "soft": 1000, "hard": 1000}]
        spec["process"]["oomScoreAdj"] = 500

    out = run_output(runtime, bundle, "ulimit -n; ulimit -Hn; ulimit -u; "
                     "cat /proc/self/oom_score_adj", edit)
    assert out.split() == ["123", "456", "1000", "500"]


def test_hostname_domainname_sysctl(runtime, bundle):
    def edit(spec):
        spec["hostname"] = "boxhost"
        spec["domainname"] = "example.test"
        spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "2048"}
        spec["linux"]["readonlyPaths"].remove("/proc/sys")

    out = run_output(runtime, bundle, "hostname; cat /proc/sys/kernel/domainname; "
                     "cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/shmmni", edit)
    assert out.split() == ["boxhost", "example.test", "1", "2048"]
    assert Path("/proc/sys/kernel/shmmni").read_text().strip() != "2048"


def test_sysctl_outside_a_namespace_is_refused(runtime, bundle):
    def edit(spec):
        spec["linux"]["sysctl"] = {"kernel.panic": "1"}

    path, cid = bundle(["true"], edit=edit)
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0 and "kernel.panic" in result.stderr


def test_hostname_without_uts_namespace_is_refused(runtime, bundle):
    def edit(spec):
        spec["hostname"] = "x"
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                       if n["type"] != "uts"]

    path, cid = bundle(["true"], edit=edit)
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0 and "UTS" in result.stderr


def test_mounts_bind_ro_tmpfs_and_propagation(runtime, bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from host\n")
    single = tmp_path / "single.txt"
    single.write_text("one file\n")

    def edit(spec):
        spec["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(shared),
             "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/deep/nested/file.txt", "type": "bind", "source": str(single),
             "options": ["bind"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "size=1m", "mode=1777"]},
        ]

    out = run_output(runtime, bundle,
                     "cat /data/hello; (echo x > /data/new) 2>/dev/null && echo writable; "
                     "cat /deep/nested/file.txt; echo scratch > /scratch/f && cat /scratch/f; "
                     "grep -E ' /(data|scratch) ' /proc/self/mountinfo", edit)
    lines = out.splitlines()
    assert lines[0] == "from host"
    assert "writable" not in lines
    assert "one file" in lines and "scratch" in lines
    data = next(line for line in lines if " /data " in line)
    assert " ro," in data or " ro " in data
    scratch = next(line for line in lines if " /scratch " in line)
    assert "tmpfs" in scratch and "size=1024k" in scratch and "nosuid" in scratch
    assert not (shared / "new").exists()


def test_readonly_root_masked_and_readonly_paths(runtime, bundle):
    out = run_output(runtime, bundle,
                     "touch /x 2>/dev/null && echo rootwritable; "
                     "cat /proc/kcore 2>/dev/null | wc -c; ls /sys/firmware | wc -l; "
                     "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo syswritable; "
                     "echo done")
    lines = out.split()
    assert "rootwritable" not in lines and "syswritable" not in lines
    assert lines[:2] == ["0", "0"]
    assert lines[-1] == "done"


def test_devices_and_dev_symlinks(runtime, bundle):
    def edit(spec):
        spec["linux"]["devices"] = [{"type": "c", "path": "/dev/fuse-like", "major": 1,
                                     "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 0}]

    out = run_output(runtime, bundle,
                     "for f in null zero full random urandom tty fuse-like; do "
                     "ls -l /dev/$f | cut -c1-10; done; for l in fd stdin ptmx; do readlink /dev/$l; done; "
                     "echo x > /dev/fuse-like && echo wrote", edit)
    lines = out.splitlines()
    assert lines[:6] == ["crw-rw-rw-"] * 6
    assert lines[6] == "crw-r-----"
    assert lines[7:10] == ["/proc/self/fd", "/proc/self/fd/0", "pts/ptmx"]
    assert lines[10] == "wrote"


def test_devices_cgroup_denies_host_disk(runtime, bundle):
    disk = os.stat("/dev/vda") if os.path.exists("/dev/vda") else None
    if disk is None:
        pytest.skip("no /dev/vda on this host")
    major, minor = os.major(disk.st_rdev), os.minor(disk.st_rdev)
    def edit(spec):
        for kind in ("bounding", "effective", "permitted"):
            spec["process"]["capabilities"][kind].append("CAP_MKNOD")

    out = run_output(runtime, bundle, f"mknod /tmp/disk b {major} {minor} && "
                     "(head -c 1 /tmp/disk >/dev/null 2>&1 && echo readable || echo denied)",
                     edit, own_rootfs=True)
    assert out.strip() == "denied"


def test_cgroup_limits_visible_inside(runtime, bundle):
    def edit(spec):
        spec["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
        spec["linux"]["resources"]["pids"] = {"limit": 42}
        spec["linux"]["resources"]["cpu"] = {"shares": 512, "quota": 50000, "period": 100000}

    out = run_output(runtime, bundle,
                     "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
                     "/sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us; "
                     "grep memory /proc/self/cgroup", edit)
    assert out.split()[:4] == [str(64 * 1024 * 1024), "42", "512", "50000"]
    assert out.split()[4].endswith(":memory:/")  # a private cgroup namespace


def test_cgroups_path_places_the_container(runtime, bundle):
    path, cid = bundle(["sleep", "300"])
    spec = json.loads((path / "config.json").read_text())
    runtime("run", "-d", "--bundle", str(path), cid)
    pid = runtime.state(cid)["pid"]
    own = spec["linux"]["cgroupsPath"]
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    assert f":memory:{own}" in cgroup
    runtime("delete", "--force", cid)
    assert not Path(f"/sys/fs/cgroup/memory{own}").exists()


def _cgroup_of(pid: int) -> dict[str, str]:
    """/proc/<pid>/cgroup as {hierarchy name ("memory", "name=systemd", "" for v2): path}."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        out[names] = path
    return out


def test_init_and_exec_are_in_the_cgroup_of_every_hierarchy(runtime, bundle, tmp_path):
    # The runtime's children join by themselves (v1: pid 0 into tasks; cgroup2:
    # cloned into it): check each hierarchy, cgroup2 included, for both paths.
    from isobox.cgroups import hierarchies

    path, cid = bundle(["sleep", "300"])
    own = json.loads((path / "config.json").read_text())["linux"]["cgroupsPath"]
    runtime("run", "-d", "--bundle", str(path), cid)
    init = runtime.state(cid)["pid"]
    pid_file = tmp_path / "exec.pid"
    runtime("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "200")
    joined = int(pid_file.read_text())
    found = hierarchies()
    assert found
    for pid in (init, joined):
        where = _cgroup_of(pid)
        for h in found:
            assert where[h.name] == own, (pid, h.name, where)
    runtime("delete", "--force", cid)
    for h in found:
        assert not Path(h.mountpoint + own).exists(), h.mountpoint


def test_failure_to_join_the_cgroup_is_clean(runtime, bundle):
    # A cgroup below a threaded cgroup2 one is "domain invalid": no process can
    # join it, by clone3 or by cgroup.procs. create must fail with the kernel's
    # reason and leave no cgroup (in any hierarchy) and no state behind.
    from isobox.cgroups import hierarchies

    found = hierarchies()
    v2 = [h for h in found if h.version == 2]
    if not v2:
        pytest.skip("no cgroup2 hierarchy on this host")
    parent = f"/isobox-test-threaded-{os.getpid()}"
    threaded = Path(v2[0].mountpoint + parent)
    threaded.mkdir()
    try:
        (threaded / "cgroup.type").write_text("threaded")
        path, cid = bundle(["true"], edit=lambda spec: spec["linux"].update(
            cgroupsPath=f"{parent}/c1"))
        result = runtime("create", "--bundle", str(path), cid, check=False)
        assert result.returncode != 0
        assert "cannot join cgroup" in result.stderr, result.stderr
        assert not (runtime.root / cid).exists()
        for h in found:
            assert not Path(f"{h.mountpoint}{parent}/c1").exists(), h.mountpoint
            if h.version == 1:  # the runtime made the parent there: gone too
                assert not Path(h.mountpoint + parent).exists(), h.mountpoint
    finally:
        threaded.rmdir()


def test_network_namespace_has_loopback_up(runtime, bundle):
    out = run_output(runtime, bundle, "ip -o link | cut -d: -f2; ip -o addr show lo | "
                     "grep -c 127.0.0.1")
    names = [word.strip() for word in out.splitlines()[:-1]]
    assert names == ["lo"]
    assert out.splitlines()[-1] == "1"


def test_join_namespace_by_path(runtime, bundle):
    name = f"isobox-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "addr", "add", "127.0.0.9/8",
                        "dev", "lo"], check=True)

        def edit(spec):
            for ns in spec["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = f"/run/netns/{name}"

        out = run_output(runtime, bundle, "ip -o addr show lo | grep -c 127.0.0.9", edit)
        assert out.strip() == "1"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_user_namespace_mappings(runtime, bundle, busybox_rootfs):
    # The mapped root (host uid 100000) must be able to reach the rootfs, as with runc.
    top = Path(tempfile.mkdtemp(prefix="isobox-userns-"))
    top.chmod(0o755)
    rootfs = top / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)

    def edit(spec):
        spec["root"] = {"path": str(rootfs), "readonly": True}
        spec["linux"]["namespaces"].append({"type": "user"})
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        spec["process"]["user"] = {"uid": 0, "gid": 0}

    path, cid = bundle(["sh", "-c", "id -u; cat /proc/self/uid_map; sleep 300"], edit=edit)
    runtime("run", "-d", "--bundle", str(path), cid)
    pid = runtime.state(cid)["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == "100000"  # root inside is 100000 on the host
    try:
        out = runtime("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map")
        assert out.stdout.split() == ["0", "0", "100000", "65536"]
    finally:
        runtime("delete", "--force", cid)
        shutil.rmtree(top)


def test_hooks_run_in_order_with_state(runtime, bundle, tmp_path):
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    # The hook runs on the host (prestart, createRuntime, poststart, poststop)
    # or with the host path in the container's mount namespace (createContainer).
    hook.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\n")
    hook.chmod(0o755)
    start_hook = "/bin/sh"

    def edit(spec):
        def h(kind):
            return [{"path": str(hook), "args": ["hook", kind]}]
        spec["hooks"] = {
            "prestart": h("prestart"), "createRuntime": h("createRuntime"),
            "createContainer": h("createContainer"),
            "startContainer": [{"path": start_hook,
                                "args": ["sh", "-c", "cat > /dev/null; echo started > /tmp/s"]}],
            "poststart": h("poststart"), "poststop": h("poststop"),
        }
        spec["root"]["readonly"] = False

    path, cid = bundle(["sh", "-c", "cat /tmp/s"], edit=edit, own_rootfs=True)
    result = runtime("run", "--bundle", str(path), cid, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"
    entries = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [kind for kind, _ in entries] == ["prestart", "createRuntime", "createContainer",
                                             "poststart", "poststop"]
    states = {kind: json.loads(state) for kind, state in entries}
    assert states["prestart"]["status"] == "creating"
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    assert states["prestart"]["id"] == cid
    assert states["prestart"]["pid"] > 0 and states["prestart"]["bundle"] == str(path)


def test_failing_prestart_hook_fails_create_cleanly(runtime, bundle):
    def edit(spec):
        spec["hooks"] = {"prestart": [{"path": "/bin/false"}]}

    path, cid = bundle(["true"], edit=edit)
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0 and "prestart" in result.stderr
    assert not (runtime.root / cid).exists()


def test_hook_timeout(runtime, bundle):
    def edit(spec):
        spec["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"],
                                            "timeout": 1}]}

    path, cid = bundle(["true"], edit=edit)
    result = runtime("create", "--bundle", str(path), cid, check=False, timeout=20)
    assert result.returncode != 0 and "timed out" in result.stderr


def test_seccomp_from_config(runtime, bundle):
    def edit(spec):
        spec["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1}],
        }

    out = run_output(runtime, bundle, "mkdir /tmp/d 2>&1; grep Seccomp: /proc/self/status",
                     edit, own_rootfs=True)
    assert "Operation not permitted" in out
    assert "Seccomp:\t2" in out


def test_terminal_through_console_socket(runtime, bundle, tmp_path):
    sock_path = tmp_path / "console.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    received: dict[str, object] = {}

    def accept() -> None:
        conn, _ = server.accept()
        fds = array.array("i")
        _msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: fds.itemsize])
        received["fd"] = fds[0]
        conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def edit(spec):
        spec["process"]["consoleSize"] = {"height": 33, "width": 111}

    path, cid = bundle(["sh", "-c", "tty; stty size; test -t 0 && echo interactive"],
                       edit=edit, terminal=True)
    runtime("create", "--bundle", str(path), "--console-socket", str(sock_path), cid)
    thread.join(10)
    server.close()
    master = int(received["fd"])  # type: ignore[call-overload]
    runtime("start", cid)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    text = output.decode().replace("\r", "")
    assert text.splitlines()[0].startswith("/dev/pts/")
    assert "33 111" in text and "interactive" in text
    runtime("delete", "--force", cid)


def test_terminal_requires_console_socket_when_detached(runtime, bundle):
    path, cid = bundle(["sh"], terminal=True)
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0 and "console-socket" in result.stderr


def test_preserve_fds(runtime, bundle, tmp_path):
    path, cid = bundle(["sh", "-c", "cat <&3"])
    data = tmp_path / "fd3"
    data.write_text("through fd 3\n")
    fd = os.open(data, os.O_RDONLY)
    try:
        os.dup2(fd, 3) if fd != 3 else None
        result = runtime("run", "--preserve-fds", "1", "--bundle", str(path), cid,
                         pass_fds=(3,), check=False)
    finally:
        os.close(fd)
    assert result.stdout == "through fd 3\n", result.stderr


def test_no_pivot(runtime, bundle):
    path, cid = bundle(["sh", "-c", "ls / | wc -l; cat /proc/1/cmdline"])
    result = runtime("run", "--no-pivot", "--bundle", str(path), cid)
    assert result.stdout.split()[0] != "0"
