"""Container commands as a Docker user drives them, end to end with the real
``isobox`` binary: ids and names, run options turned into the container's
real environment (checked from inside it), runtimes and isolation, exit codes
and one-line errors, and ``ps``/``inspect`` output in Docker's shapes.

One private root per module with busybox bootstrapped once; every test's
containers are removed with ``rm -f`` and then checked gone (no mount under
the root, no monitor process, no runtime state, no cgroup). The monitor's
own duties (tty, attach, restarts, OOM, crashes) are in
``test_cli_containers_monitor.py``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_containers_support import (
    FULL_ID,
    PS_HEADER,
    Isobox,
    clean_box,
    make_box,
    table,
    until,
)

pytestmark = pytest.mark.skipif(shutil.which("busybox") is None,
                                reason="needs the host's busybox (apt-get install "
                                       "busybox-static)")

DOCKER_DEFAULT_CAPS = 0xA80425FB  # CHOWN ... AUDIT_WRITE: Docker's 14 default capabilities


@pytest.fixture(scope="module")
def module_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    yield from make_box(tmp_path_factory, "cli-containers")


@pytest.fixture
def box(module_box: Isobox) -> Iterator[Isobox]:
    yield from clean_box(module_box)


def status_of(text: str, field: str) -> int:
    """A hex field of /proc/self/status (CapEff...) or a decimal one."""
    value = re.search(rf"^{field}:\s*(\S+)", text, re.M)
    assert value is not None, text
    return int(value.group(1), 16 if field.startswith("Cap") else 10)


# ---------------------------------------------------------------- ids and names


def test_ids_are_64_hex_and_unique_prefixes_resolve(box: Isobox) -> None:
    ids = [box("create", "busybox", "true").stdout.strip() for _ in range(2)]
    assert all(FULL_ID.fullmatch(cid) for cid in ids)
    assert not ids[0][:12].isdigit()
    for cid in ids:
        assert box.fmt(cid[:12], "{{.Id}}") == cid
        short = next(cid[:n] for n in range(1, 13)
                     if not any(o.startswith(cid[:n]) for o in ids if o != cid))
        assert box.fmt(short, "{{.Id}}") == cid
    # a prefix shared by two containers is ambiguous: make one
    while len({cid[0] for cid in ids}) == len(ids):
        ids.append(box("create", "busybox", "true").stdout.strip())
    shared = next(c[0] for c in ids if sum(o[0] == c[0] for o in ids) > 1)
    box.fails("rm", shared, code=1, match="multiple containers")
    box.fails("inspect", "0" * 64, code=1, match="No such object")


def test_names_follow_dockers_rules(box: Isobox) -> None:
    cid = box("create", "--name", "web.1_a-b", "busybox", "true").stdout.strip()
    assert box.fmt("web.1_a-b", "{{.Name}}") == "/web.1_a-b"
    assert box.fmt("/web.1_a-b", "{{.Id}}") == cid
    for bad in ("a", "-x", "x/y", "_x", "na me"):
        box.fails("create", "--name", bad, "busybox", code=125,
                  match=f"Invalid container name ({bad})")
    box.fails("create", "--name", "web.1_a-b", "busybox", code=125, match="already in use")
    auto = box.fmt(box("create", "busybox").stdout.strip(), "{{.Name}}")
    assert re.fullmatch(r"/[a-z]+_[a-z]+\d*", auto), auto
    box("rename", "web.1_a-b", "renamed")
    assert box.fmt(cid, "{{.Name}}") == "/renamed"
    box.fails("rename", "renamed", auto.lstrip("/"), code=1, match="already in use")


def test_two_creates_racing_for_a_name_one_wins(box: Isobox) -> None:
    for round_ in range(3):
        name = f"race{round_}"
        procs = [box.popen("create", "--name", name, "busybox", "true",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        results = [(p.wait(60), p.stdout.read().decode(), p.stderr.read().decode())
                   for p in procs if p.stdout and p.stderr]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 125], results
        winner = next(out.strip() for code, out, _ in results if code == 0)
        loser = next(err for code, _, err in results if code != 0)
        assert loser.count("\n") == 1 and f'name "/{name}" is already in use' in loser
        assert winner[:12] in loser or winner in loser
        assert box.fmt(name, "{{.Id}}") == winner
    assert len(box.ids()) == 3


# ---------------------------------------------------------------- options into the spec


def test_environment_user_workdir_hostname(box: Isobox, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=yes\nBOTH=file\n")
    out = box("run", "--rm", "-e", "A=1", "--env-file", str(env_file), "-e", "BOTH=flag",
              "-w", "/tmp/work", "-u", "nobody", "-h", "box1", "--add-host", "db:10.1.2.3",
              "busybox", "sh", "-c",
              "echo $A $FROM_FILE $BOTH; pwd; id; hostname; grep db /etc/hosts; "
              "echo $PATH; echo $HOME").stdout.splitlines()
    assert out[0] == "1 yes flag"
    assert out[1] == "/tmp/work"
    assert out[2].startswith("uid=65534(nobody) gid=65534(nogroup)")
    assert out[3] == "box1"
    assert out[4].split() == ["10.1.2.3", "db"]
    assert out[5] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert out[6] == "/home"  # nobody's home in the image's /etc/passwd
    assert box("run", "--rm", "-u", "1234:5678", "busybox", "id").stdout.startswith(
        "uid=1234 gid=5678")
    assert box("run", "--rm", "-u", "nobody:root", "busybox", "id").stdout.startswith(
        "uid=65534(nobody) gid=0(root)")
    box.fails("run", "--rm", "-u", "nosuchuser", "busybox", "true", code=125,
              match="nosuchuser")
    assert box("run", "--rm", "--entrypoint", "/bin/echo", "busybox", "a", "b").stdout \
        == "a b\n"
    hostname = box("run", "--name", "hn", "busybox", "hostname").stdout.strip()
    assert hostname == box.fmt("hn", "{{.Id}}")[:12]


def test_mounts_volumes_and_tmpfs(box: Isobox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from host\n")
    script = ("cat /mnt/ro/f; touch /mnt/ro/x 2>/dev/null || echo ro-refused; "
              "echo w > /mnt/rw/new; head -1 /etc/passwd; mount | grep -E ' /(t1|t2) '")
    out = box("run", "--rm", "-v", f"{src}:/mnt/ro:ro", "--mount",
              f"type=bind,source={src},target=/mnt/rw", "-v", "etcvol:/etc",
              "--tmpfs", "/t1:size=1m", "--mount", "type=tmpfs,destination=/t2",
              "busybox", "sh", "-c", script).stdout.splitlines()
    assert out[:3] == ["from host", "ro-refused", "root:x:0:0:root:/root:/bin/sh"]
    assert "tmpfs on /t1 type tmpfs" in out[3] and "size=1024k" in out[3]
    assert "tmpfs on /t2 type tmpfs" in out[4]
    assert (src / "new").read_text() == "w\n"
    # the new named volume was filled from the image's /etc, and keeps it
    data = box.root / "volumes" / "etcvol" / "_data"
    assert (data / "passwd").read_text().startswith("root:")
    assert box("run", "--rm", "-v", "etcvol:/data", "busybox", "cat", "/data/group").stdout \
        .startswith("root:")
    # an existing volume is not refilled: a file removed stays removed
    box("run", "--rm", "-v", "etcvol:/etc", "busybox", "rm", "/etc/group")
    assert not (data / "group").exists()
    box.fails("run", "--rm", "--mount", f"type=bind,source={tmp_path}/none,target=/x",
              "busybox", "true", code=125, match="does not exist")
    out = box("run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "sh", "-c",
              "touch /x 2>&1; touch /scratch/y && echo scratch-ok", check=False).stdout
    assert "Read-only file system" in out and "scratch-ok" in out


def test_security_defaults_and_options(box: Isobox) -> None:
    script = ("cat /proc/self/status; stat -c '%F %t:%T' /proc/keys; "
              "echo x 2>&1 > /proc/sys/kernel/domainname; echo firmware $(ls /sys/firmware)")
    out = box("run", "--rm", "busybox", "sh", "-c", script, check=False).stdout
    assert status_of(out, "CapEff") == DOCKER_DEFAULT_CAPS
    assert status_of(out, "CapBnd") == DOCKER_DEFAULT_CAPS
    assert status_of(out, "Seccomp") == 2 and status_of(out, "NoNewPrivs") == 0
    assert "character special file 1:3" in out  # a masked path: /dev/null over /proc/keys
    assert "\nfirmware\n" in out  # a masked directory: an empty tmpfs
    err = box("run", "--rm", "busybox", "sh", "-c", "echo x > /proc/sys/kernel/domainname",
              check=False).stderr
    assert "Read-only file system" in err  # /proc/sys is read-only

    out = box("run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "busybox",
              "cat", "/proc/self/status").stdout
    assert status_of(out, "CapEff") == 1 << 12  # CAP_NET_ADMIN alone
    out = box("run", "--rm", "--cap-drop", "CHOWN", "busybox", "cat",
              "/proc/self/status").stdout
    assert status_of(out, "CapEff") == DOCKER_DEFAULT_CAPS & ~1
    out = box("run", "--rm", "--security-opt", "seccomp=unconfined", "--security-opt",
              "no-new-privileges", "busybox", "cat", "/proc/self/status").stdout
    assert status_of(out, "Seccomp") == 0 and status_of(out, "NoNewPrivs") == 1
    with open("/proc/self/status") as f:
        host_bounding = status_of(f.read(), "CapBnd")
    out = box("run", "--rm", "--privileged", "busybox", "sh", "-c",
              "cat /proc/self/status; ls /dev | wc -l").stdout
    assert status_of(out, "CapEff") == host_bounding
    assert status_of(out, "Seccomp") == 0
    assert int(out.split()[-1]) > 20  # the host's devices
    box.fails("run", "--rm", "--cap-add", "NOT_A_CAP", "busybox", "true", code=125,
              match="NOT_A_CAP")
    box.fails("run", "--rm", "--security-opt", "seccomp=/no/such.json", "busybox", "true",
              code=125)


def test_devices_ulimits_and_resources(box: Isobox) -> None:
    out = box("run", "--rm", "--device", "/dev/zero:/dev/z", "--ulimit", "nofile=123:456",
              "--shm-size", "8m", "busybox", "sh", "-c",
              "stat -c '%F %t:%T' /dev/z; head -c 3 /dev/z | wc -c; ulimit -n; ulimit -Hn; "
              "df -k /dev/shm | tail -1").stdout.splitlines()
    assert out[:4] == ["character special file 1:5", "3", "123", "456"]
    assert out[4].split()[1] == "8192"
    box.fails("run", "--rm", "--device", "/dev/no-such-device", "busybox", "true",
              code=125, match="/dev/no-such-device")
    cid = box("run", "-d", "--memory", "32m", "--cpus", "0.5", "--pids-limit", "50",
              "busybox", "sleep", "60").stdout.strip()
    cg = Path("/sys/fs/cgroup")
    if (cg / "memory" / "isobox" / cid).is_dir():  # cgroup v1 (these machines)
        assert (cg / "memory/isobox" / cid / "memory.limit_in_bytes").read_text() \
            == f"{32 << 20}\n"
        assert (cg / "cpu/isobox" / cid / "cpu.cfs_quota_us").read_text() == "50000\n"
        assert (cg / "cpu/isobox" / cid / "cpu.cfs_period_us").read_text() == "100000\n"
        assert (cg / "pids/isobox" / cid / "pids.max").read_text() == "50\n"
    else:  # cgroup v2
        assert (cg / "isobox" / cid / "memory.max").read_text() == f"{32 << 20}\n"
        assert (cg / "isobox" / cid / "cpu.max").read_text() == "50000 100000\n"
        assert (cg / "isobox" / cid / "pids.max").read_text() == "50\n"
    host = box.inspect(cid)["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (32 << 20, 5 * 10**8, 50)


def test_init_runs_or_is_refused_clearly(box: Isobox) -> None:
    result = box("run", "--rm", "--init", "busybox", "sh", "-c", "cat /proc/1/cmdline",
                 check=False)
    if result.returncode == 0:
        assert "init" in result.stdout.replace("\0", " ")  # an init is pid 1, not sh
    else:
        assert result.returncode == 125
        assert len(result.stderr.strip().splitlines()) == 1
        assert "--init" in result.stderr


def test_restart_stop_signal_labels_in_inspect(box: Isobox) -> None:
    cid = box("create", "--restart", "on-failure:3", "--stop-signal", "SIGUSR1",
              "--stop-timeout", "7", "--label", "a=b", "--label", "c", "--log-opt",
              "max-size=1m", "busybox", "true").stdout.strip()
    info = box.inspect(cid)
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                   "MaximumRetryCount": 3}
    assert info["Config"]["StopSignal"] == "SIGUSR1" and info["Config"]["StopTimeout"] == 7
    assert info["Config"]["Labels"] == {"a": "b", "c": ""}
    assert info["HostConfig"]["LogConfig"] == {"Type": "json-file",
                                               "Config": {"max-size": "1m"}}
    assert info["Config"]["Cmd"] == ["true"] and "PATH=" in info["Config"]["Env"][0]
    assert info["State"]["Status"] == "created" and info["Path"] == "true"
    for policy in ("no", "always", "unless-stopped", "on-failure"):
        box("create", "--restart", policy, "busybox", "true")
    box.fails("create", "--restart", "sometimes", "busybox", code=125, match="--restart")
    box.fails("create", "--restart", "always:3", "busybox", code=125, match="restart")


def test_stop_signal_and_stop_timeout(box: Isobox) -> None:
    trap = "trap 'echo got USR1; exit 5' USR1; while true; do sleep 0.1; done"
    box("run", "-d", "--name", "sig", "--stop-signal", "USR1", "busybox", "sh", "-c", trap)
    time.sleep(0.5)  # the trap is set
    box("stop", "sig")
    assert box.fmt("sig", "{{.State.ExitCode}}") == "5"
    assert box("logs", "sig").stdout == "got USR1\n"
    # ignores SIGTERM: killed once --stop-timeout runs out
    box("run", "-d", "--name", "stubborn", "--stop-timeout", "1", "busybox", "sh", "-c",
        "trap '' TERM; while true; do sleep 0.1; done")
    started = time.monotonic()
    box("stop", "stubborn")
    assert 0.9 < time.monotonic() - started < 8
    assert box.fmt("stubborn", "{{.State.ExitCode}}") == "137"


def test_log_opts_rotate_the_json_file(box: Isobox) -> None:
    cid = box("run", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox", "sh",
              "-c", "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done").stdout
    cid = box.ids()[0]
    files = sorted(p.name for p in box.container_dir(cid).glob("*-json.log*"))
    assert files == [f"{cid}-json.log", f"{cid}-json.log.1"]
    assert all((box.container_dir(cid) / f).stat().st_size <= 1100 for f in files)
    logs = box("logs", cid).stdout.splitlines()
    assert logs[-1] == "line-299" and "line-0" not in logs
    assert box("logs", "--tail", "2", cid).stdout == "line-298\nline-299\n"
    stamped = box("logs", "-t", "--tail", "1", cid).stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line-299\n", stamped)


def test_rm_detach_and_stdin(box: Isobox) -> None:
    assert box("run", "--rm", "busybox", "echo", "gone").stdout == "gone\n"
    cid = box("run", "--rm", "-d", "busybox", "sh", "-c", "sleep 0.3").stdout.strip()
    assert FULL_ID.fullmatch(cid)
    # removed once it exits (here: by the next listing, there being no daemon)
    assert until(lambda: cid not in box.ids(), 15)
    assert not box.container_dir(cid).exists()
    assert box("run", "--rm", "-i", "busybox", "cat", input=b"piped\n").stdout == "piped\n"
    # without -i the container's stdin is empty
    assert box("run", "--rm", "busybox", "cat", input=b"ignored\n").stdout == ""


def test_sig_proxy(box: Isobox) -> None:
    script = "trap 'echo term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"
    proc = box.popen("run", "--name", "proxied", "busybox", "sh", "-c", script,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 7
    assert proc.stdout.read() == b"term\n"
    proc = box.popen("run", "--sig-proxy=false", "--name", "unproxied", "busybox", "sh", "-c",
                     script, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert box.fmt("unproxied", "{{.State.Status}}") == "running"


# ---------------------------------------------------------------- runtimes and isolation


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed")
def test_runtime_runc(box: Isobox) -> None:
    out = box("run", "--runtime", "runc", "--name", "withrunc", "busybox", "sh", "-c",
              "echo hi; grep CapEff /proc/self/status").stdout.splitlines()
    assert out[0] == "hi" and int(out[1].split()[1], 16) == DOCKER_DEFAULT_CAPS
    assert box.fmt("withrunc", "{{.HostConfig.Runtime}}") == "runc"
    assert "runc" in (box.container_dir(box.ids()[0]) / "shim.json").read_text()
    box("run", "-d", "--runtime", "runc", "--name", "runc-d", "busybox", "sleep", "60")
    assert box("exec", "runc-d", "echo", "in").stdout == "in\n"
    box("stop", "-t", "1", "runc-d")
    assert box.names()["runc-d"].startswith("Exited (137)")


def test_isolation_and_runtime_errors(box: Isobox) -> None:
    for isolation in ("vm", "hyperv"):  # this root has no guest kernel set up
        line = box.fails("run", "--rm", "--isolation", isolation, "busybox", "true",
                         code=125)
        assert "VM isolation" in line and "isobox vm setup" in line
    box.fails("run", "--rm", "--isolation", "vm", "--runtime", "runc", "busybox", "true",
              code=125, match="cannot run a VM-isolated container")
    box.fails("run", "--rm", "--isolation", "vm", "--network", "host", "busybox", "true",
              code=125, match="host")
    box.fails("run", "--rm", "--isolation", "bogus", "busybox", "true", code=125,
              match="isolation")
    box.fails("run", "--rm", "--runtime", "nosuch", "busybox", "true", code=125,
              match="nosuch")
    assert box("run", "--rm", "--isolation", "process", "busybox", "true").returncode == 0
    assert box.ids() == []


# ---------------------------------------------------------------- exit codes and errors


def test_exit_codes(box: Isobox) -> None:
    box.fails("run", "--rm", "busybox", "/etc/passwd", code=126, match="/etc/passwd")
    box.fails("run", "--rm", "busybox", "/etc", code=126)
    box.fails("run", "--rm", "busybox", "nosuchcommand", code=127, match="nosuchcommand")
    box.fails("run", "--rm", "busybox", "/no/such/path", code=127)
    assert box("run", "--rm", "busybox", "sh", "-c", "exit 3", check=False).returncode == 3
    box.fails("run", "--rm", "--pull", "never", "nosuch/image", "true", code=125,
              match="No such image")
    box.fails("run", "--rm", "--bogus-flag", "busybox", code=125, match="--bogus-flag")
    box.fails("run", "--rm", "--memory", "lots", "busybox", code=125, match="--memory")
    box.fails("run", "--rm", "--cpus", "x", "busybox", code=125, match="--cpus")
    box.fails("run", code=1, match="IMAGE")
    box.fails("ps", "--bogus", code=125, match="--bogus")
    box.fails("stop", "nosuch", code=1, match="No such container: nosuch")
    box.fails("logs", "nosuch", code=1, match="No such container")
    box.fails("start", "nosuch", code=1, match="No such container")
    assert box.ids() == []  # failed runs leave nothing
    cid = box("create", "busybox", "nosuchcommand").stdout.strip()
    box.fails("start", cid, code=1, match="nosuchcommand")
    assert box.fmt(cid, "{{.State.Status}} {{.State.ExitCode}}") in ("created 127",
                                                                     "exited 127")


# ---------------------------------------------------------------- ps and inspect output


def test_ps_table_status_words_and_formats(box: Isobox) -> None:
    box("create", "--name", "c-created", "--label", "tier=web", "busybox", "echo", "a b")
    box("run", "--name", "c-exited", "busybox", "sh", "-c", "exit 3", check=False)
    box("run", "-d", "--name", "c-up", "busybox", "sh", "-c",
        "while true; do sleep 1; done")
    rows = table(box("ps").stdout)
    assert rows[0] == PS_HEADER
    assert len(rows) == 2
    cid_up = box.fmt("c-up", "{{.Id}}")
    up = rows[1]
    assert up[0] == cid_up[:12] and up[1] == "busybox"
    assert up[2] == '"sh -c \'while true; …"'  # Docker's quoting and 20-rune ellipsis
    assert re.fullmatch(r"(Less than a second|\d+ seconds?) ago", up[3])
    assert re.fullmatch(r"Up (Less than a second|\d+ seconds?)", up[4])
    assert up[-1] == "c-up"
    all_rows = {r[-1]: r for r in table(box("ps", "-a").stdout)[1:]}
    assert set(all_rows) == {"c-created", "c-exited", "c-up"}
    assert all_rows["c-created"][2] == "\"echo 'a b'\"" and all_rows["c-created"][4] == \
        "Created"
    assert re.fullmatch(r"Exited \(3\) (Less than a second|\d+ seconds?) ago",
                        all_rows["c-exited"][4])
    assert box("ps", "-q").stdout == cid_up[:12] + "\n"
    assert box("ps", "-q", "--no-trunc").stdout == cid_up + "\n"
    assert box("ps", "-a", "--no-trunc", "--format", "{{.Command}}", "--filter",
               "name=c-up").stdout == '"sh -c \'while true; do sleep 1; done\'"\n'
    custom = box("ps", "-a", "--format", "table {{.Names}}\t{{.State}}").stdout
    assert table(custom)[0] == ["NAMES", "STATE"]
    assert {tuple(r) for r in table(custom)[1:]} == {
        ("c-created", "created"), ("c-exited", "exited"), ("c-up", "running")}
    assert box("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}").stdout \
        == "c-exited\n"
    assert box("ps", "-a", "--filter", "label=tier=web", "--format", "{{.Names}}").stdout \
        == "c-created\n"
    assert box("ps", "-l", "--format", "{{.Names}}").stdout == "c-up\n"
    assert box("ps", "-a", "-n", "2", "--format", "{{.Names}}").stdout.split() == [
        "c-up", "c-exited"]
    lines = box("ps", "-a", "--format", "{{json .}}").stdout.splitlines()
    assert len(lines) == 3 and '"Names":"c-up"' in lines[0].replace(" ", "")
    box.fails("ps", "--filter", "bogus=1", code=1, match="bogus")
    # inspect: Docker's shape and Go templates
    info = box.inspect("c-up")
    assert info["Id"] == cid_up and info["Name"] == "/c-up"
    assert info["State"]["Running"] is True and info["State"]["Pid"] > 0
    assert info["Path"] == "sh" and info["Args"][0] == "-c"
    assert info["Config"]["Hostname"] == cid_up[:12]
    assert info["LogPath"].endswith(f"{cid_up}-json.log")
    assert box("inspect", "-f", "{{.State.Status}} {{.Config.Image}} {{json .Config.Cmd}}",
               "c-up", "c-exited").stdout.splitlines() == [
        'running busybox ["sh","-c","while true; do sleep 1; done"]',
        'exited busybox ["sh","-c","exit 3"]']
    result = box("inspect", "c-up", "nosuch", check=False)
    assert result.returncode == 1 and "No such object: nosuch" in result.stderr


def test_lifecycle_verbs(box: Isobox) -> None:
    box("run", "-d", "--name", "life", "busybox", "sh", "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    assert box("exec", "life", "sh", "-c", "echo in; exit 4", check=False).returncode == 4
    box("pause", "life")
    assert box.names()["life"].endswith("(Paused)")
    box.fails("exec", "life", "true", code=125, match="paused")
    box("unpause", "life")
    box("kill", "-s", "USR1", "life")  # no handler: pid 1 ignores it
    assert box.fmt("life", "{{.State.Status}}") == "running"
    box("restart", "-t", "2", "life")
    assert box.fmt("life", "{{.State.Status}}") == "running"
    box.fails("rm", "life", code=1, match="cannot remove a running container")
    box("kill", "life")
    assert box("wait", "life").stdout == "137\n"
    box.fails("kill", "life", code=1, match="is not running")
    box("start", "life")
    assert box.fmt("life", "{{.State.Status}}") == "running"
    box("stop", "-t", "2", "life")
    assert box.names()["life"].startswith("Exited (0)")
    assert box("container", "prune", "-f").stdout.startswith("Deleted Containers:")
    assert box.ids() == []
