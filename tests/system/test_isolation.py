"""The same commands in both isolations: what a user sees of a container must
not depend on ``--isolation`` except the kernel it runs on.

Each test runs with ``process`` and with ``vm`` (a utility VM per container,
QEMU under KVM where a probe boot works, else TCG: each VM start costs
seconds, so the VM cases are the few that matter). VM-only tests prove the
extra wall: a guest kernel of its own, no host process or host file visible,
and a VM killed from outside ends only its container.

One private root per module (busybox bootstrapped, the guest kernel set up
with ``isobox vm setup``); every test's containers are removed and checked
gone, and no QEMU of ours may outlive its container.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_containers_support import (
    Isobox,
    Terminal,
    clean_box,
    live_processes,
    make_box,
    until,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="needs qemu-system-x86 for VM isolation"),
]

BOTH = pytest.mark.parametrize("isolation", ["process", "vm"])


def qemu_processes(root: Path) -> list[int]:
    """QEMUs started for containers of ``root`` (their disks live under it)."""
    return [pid for pid, argv, _ in live_processes("comm")
            if "qemu-system" in " ".join(argv) and str(root) in " ".join(argv)]


@pytest.fixture(scope="module")
def module_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    for box in make_box(tmp_path_factory, "isolation"):
        setup = box("vm", "setup", timeout=900)
        made = setup.stdout.split("VM templates: ")[1].strip().split(", ")  # without, with a NIC
        assert len(made) == 2 and all((Path(t) / "state").is_file() for t in made), setup.stdout
        assert "qemu" not in setup.stderr  # QEMU's messages go to the template's log
        cid = box("create", "--isolation=vm", "--network", "none", "busybox", "true").stdout
        box("start", "-a", cid.strip())
        log = (box.root / "containers" / cid.strip() / "shim.log").read_text()
        assert "restored from template" in log and "made in" not in log  # setup's template
        box("rm", cid.strip())
        yield box


@pytest.fixture
def box(module_box: Isobox) -> Iterator[Isobox]:
    yield from clean_box(module_box)
    assert until(lambda: not qemu_processes(module_box.root), timeout=10), \
        f"QEMU left running: {qemu_processes(module_box.root)}"


@BOTH
def test_output_exit_codes_and_errors(box: Isobox, isolation: str) -> None:
    result = box("run", "--rm", f"--isolation={isolation}", "--network", "none", "busybox",
                 "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    box.fails("run", "--rm", f"--isolation={isolation}", "--network", "none", "busybox",
              "/no/such/program", code=127, match="no/such/program")


@BOTH
def test_environment_user_workdir_and_files(box: Isobox, isolation: str,
                                            tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the container's user 1000 writes into it
    (shared / "from-host").write_text("hello from the host\n")
    (tmp_path / "app.conf").write_text("setting=1\n")
    (tmp_path / "app.conf").chmod(0o666)
    (tmp_path / "sibling").write_text("not for the container\n")
    out = box("run", "--rm", f"--isolation={isolation}", "--network", "none",
              "-e", "GREETING=hi", "-w", "/tmp", "-u", "1000:1000", "-h", "boxy",
              "-v", f"{shared}:/shared", "-v", f"{tmp_path / 'app.conf'}:/etc/app.conf",
              "--tmpfs", "/scratch", "busybox", "sh", "-c",
              "echo $GREETING; pwd; id -u; id -g; hostname; cat /shared/from-host; "
              "echo made-inside > /shared/from-guest; cat /etc/app.conf; "
              "echo setting=2 >> /etc/app.conf; ls /etc | grep -c sibling; "
              "grep -c ' /scratch tmpfs' /proc/mounts").stdout.splitlines()
    assert out == ["hi", "/tmp", "1000", "1000", "boxy", "hello from the host", "setting=1",
                   "0", "1"]
    assert (shared / "from-guest").read_text() == "made-inside\n"
    assert (tmp_path / "app.conf").read_text() == "setting=1\nsetting=2\n"  # the same file
    assert (shared / "from-guest").stat().st_uid == 1000
    ro = box("run", "--rm", f"--isolation={isolation}", "--network", "none", "--read-only",
             "busybox", "sh", "-c", "touch /x 2>&1; echo rc=$?", check=False)
    assert "Read-only file system" in ro.stdout and "rc=1" in ro.stdout


@BOTH
def test_writable_layer_persists_and_the_file_verbs_see_it(box: Isobox, isolation: str,
                                                          tmp_path: Path) -> None:
    box("run", "--name", "keep", f"--isolation={isolation}", "--network", "none", "busybox",
        "sh", "-c", "echo run >> /etc/runs; rm -f /bin/ls; cat /etc/runs")
    assert box("start", "-a", "keep").stdout == "run\nrun\n"  # the same writable layer
    changes = box("diff", "keep").stdout.splitlines()
    assert "A /etc/runs" in changes and "D /bin/ls" in changes
    assert box("cp", "keep:/etc/runs", "-").returncode == 0
    (tmp_path / "into").write_text("copied in\n")
    box("cp", str(tmp_path / "into"), "keep:/etc/into")
    box("commit", "keep", f"kept-{isolation}:1")
    out = box("run", "--rm", f"--isolation={isolation}", "--network", "none",
              f"kept-{isolation}:1", "cat", "/etc/runs", "/etc/into").stdout
    assert out == "run\nrun\ncopied in\n"
    exported = tmp_path / "fs.tar"
    box("export", "-o", str(exported), "keep")
    import tarfile

    with tarfile.open(exported) as tar:
        names = set(tar.getnames())
    assert "etc/runs" in names and "bin/ls" not in names and "bin/sh" in names
    box("rmi", f"kept-{isolation}:1")


@BOTH
def test_cp_into_a_running_container_stays_in_its_root(box: Isobox, isolation: str,
                                                       tmp_path: Path) -> None:
    import io
    import tarfile

    cid = box("run", "-d", f"--isolation={isolation}", "--network", "none", "busybox", "sh",
              "-c", "ln -s / /tmp/up; ln -s /etc /etc-link; touch /ready; sleep 600"
              ).stdout.strip()
    assert until(lambda: box("exec", cid, "test", "-e", "/ready", check=False).returncode == 0,
                 timeout=60)
    (tmp_path / "f").write_text("file\n")
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    (tree / "x").write_text("x\n")
    box("cp", str(tmp_path / "f"), f"{cid}:/etc-link/f")  # a symlink, followed in the root
    box("cp", str(tmp_path / "tree"), f"{cid}:/opt")  # a directory, created
    box("cp", str(tmp_path / "f"), f"{cid}:/tmp/up/escaped")  # "/" is the container's
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo("from-tar")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"tar\n"))
    box("cp", "-", f"{cid}:/root", input=stream.getvalue())
    out = box("exec", cid, "cat", "/etc/f", "/opt/sub/x", "/escaped", "/root/from-tar").stdout
    assert out == "file\nx\nfile\ntar\n"
    assert not Path("/escaped").exists()
    box.fails("cp", str(tmp_path / "f"), f"{cid}:/no/such/dir/f", code=1, match="Could not find")
    box.fails("cp", "-", f"{cid}:/etc/passwd", code=1, match="must be a directory")


@BOTH
def test_detached_logs_exec_stop(box: Isobox, isolation: str) -> None:
    cid = box("run", "-d", f"--isolation={isolation}", "--network", "none", "busybox", "sh",
              "-c", "echo started; echo x > /marker; trap 'echo bye; exit 7' TERM; "
              "while true; do sleep 0.1; done").stdout.strip()
    assert until(lambda: "started" in box("logs", cid).stdout, timeout=60)
    assert box("exec", cid, "sh", "-c", "echo in-exec; exit 4", check=False).returncode == 4
    assert box("exec", cid, "echo", "again").stdout == "again\n"
    piped = box("exec", "-i", cid, "cat", input=b"through stdin\n")
    assert piped.stdout == "through stdin\n"
    box.fails("exec", cid, "no-such-command", code=127, match="no-such-command")
    assert "A /marker" in box("diff", cid).stdout.splitlines()  # read while it runs
    assert box("cp", f"{cid}:/marker", "-").returncode == 0
    top = box("top", cid).stdout.splitlines()
    assert "PID" in top[0].split() and any("while true" in row for row in top[1:])
    assert not any("isobox" in row or "python" in row for row in top)  # only its processes
    if isolation == "vm":
        box("update", "--memory", "64m", cid)  # the container's cgroup in the guest
        assert box("exec", cid, "cat", "/sys/fs/cgroup/memory.max").stdout.strip() == \
            str(64 << 20)
        box.fails("update", "--memory", "2g", "--memory-swap", "-1", cid, code=1,
                  match="does not fit its running VM")
    box("pause", cid)
    assert box.fmt(cid, "{{.State.Status}}") == "paused"
    box("unpause", cid)
    box("stop", "-t", "20", cid)
    assert box.fmt(cid, "{{.State.Status}} {{.State.ExitCode}}") == "exited 7"
    assert box("logs", cid).stdout == "started\nbye\n"


@BOTH
def test_terminal_and_restart_policy(box: Isobox, isolation: str) -> None:
    term = Terminal(box.argv("run", "--rm", "-it", f"--isolation={isolation}", "--network",
                             "none", "busybox", "sh"), box.env)
    term.expect(b"# ", timeout=90)
    term.send(b"echo $((6*7)); tty\r")
    term.expect(b"/dev/pts/0")
    term.send(b"exit 5\r")
    assert term.wait(timeout=60) == 5
    box("run", "-d", "--name", "flaky", f"--isolation={isolation}", "--network", "none",
        "--restart", "on-failure:2", "busybox", "sh", "-c", "echo try; exit 9")
    assert until(lambda: box.fmt("flaky", "{{.State.Status}}") == "exited"
                 and box.fmt("flaky", "{{.RestartCount}}") == "2", timeout=180)
    assert box("logs", "flaky").stdout == "try\ntry\ntry\n"
    assert box.fmt("flaky", "{{.State.ExitCode}}") == "9"


@BOTH
def test_containers_reach_each_other_by_name(box: Isobox, isolation: str) -> None:
    box("network", "create", "isonet")
    try:
        box("run", "-d", "--name", "web", f"--isolation={isolation}", "--network", "isonet",
            "-p", "127.0.0.1::8080", "busybox", "sh", "-c",
            "mkdir /www; echo served-by-$(uname -r) > /www/index.html; "
            "httpd -f -p 8080 -h /www")
        port = box("port", "web", "8080").stdout.strip().rpartition(":")[2]
        # the client in the other isolation: the same network for both
        other = "vm" if isolation == "process" else "process"
        fetched = box("run", "--rm", f"--isolation={other}", "--network", "isonet",
                      "busybox", "sh", "-c",
                      "for i in $(seq 60); do wget -qO- http://web:8080/ && exit 0; "
                      "sleep 0.5; done; exit 1")
        assert fetched.stdout.startswith("served-by-")
        import urllib.request

        body = until(lambda: _get(urllib.request, f"http://127.0.0.1:{port}/"), timeout=60)
        assert body == fetched.stdout
    finally:
        box("rm", "-f", "web", check=False)
        box("network", "rm", "isonet")


def _get(request: object, url: str) -> str | None:
    try:
        with request.urlopen(url, timeout=2) as r:  # type: ignore[attr-defined]
            return str(r.read().decode())
    except OSError:
        return None


# ---------------------------------------------------------------- the VM's own wall


def test_vm_runs_its_own_kernel_and_sees_nothing_of_the_host(box: Isobox) -> None:
    host_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    out = box("run", "--rm", "--isolation=hyperv", "--network", "none", "busybox", "sh",
              "-c", "cat /proc/sys/kernel/random/boot_id; uname -r; "
              "grep MemTotal /proc/meminfo; ps -o pid,comm | wc -l; "
              "cat /proc/mounts | grep -c virtio || true; ls /sys/class/net").stdout.split("\n")
    boot_id, release, memtotal, processes = out[0], out[1], out[2], int(out[3])
    assert boot_id != host_boot
    assert release != os.uname().release
    assert int(memtotal.split()[1]) < 1_000_000  # the VM's few hundred MB, not the host's
    assert processes <= 4  # header, sh, ps, wc
    assert "docker0" not in out and "eth0" not in out  # --network none: lo only
    info = box("info").stdout
    assert "DefaultIsolation: process" in info
    assert "Accelerator" in info


def test_killing_the_vm_ends_only_its_container(box: Isobox) -> None:
    victim = box("run", "-d", "--isolation=vm", "--network", "none", "busybox", "sleep",
                 "600").stdout.strip()
    bystander = box("run", "-d", "--isolation=vm", "--network", "none", "busybox", "sleep",
                    "600").stdout.strip()
    assert until(lambda: len(qemu_processes(box.root)) == 2, timeout=30)
    victim_qemu = [p for p in qemu_processes(box.root)
                   if victim in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(victim_qemu) == 1
    os.kill(victim_qemu[0], signal.SIGKILL)
    assert until(lambda: box.fmt(victim, "{{.State.Status}}") == "exited", timeout=30)
    assert box.fmt(victim, "{{.State.ExitCode}}") == "137"
    assert box.fmt(bystander, "{{.State.Status}}") == "running"
    assert box("exec", bystander, "echo", "alive").stdout == "alive\n"
    time.sleep(0.1)


def test_a_guest_kernel_panic_ends_only_that_container(box: Isobox) -> None:
    bystander = box("run", "-d", "--isolation=vm", "--network", "none", "busybox", "sleep",
                    "600").stdout.strip()
    result = box("run", "--name", "panics", "--isolation=vm", "--network", "none",
                 "--privileged", "busybox", "sh", "-c",
                 "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 30",
                 check=False, timeout=120)
    assert result.returncode == 255, (result.returncode, result.stderr)
    assert box.fmt("panics", "{{.State.Status}} {{.State.ExitCode}}") == "exited 255"
    console = (box.container_dir(box.fmt("panics", "{{.Id}}")) / "vm-console.log").read_text()
    assert "Kernel panic" in console or "sysrq" in console.lower()
    assert box.fmt(bystander, "{{.State.Status}}") == "running"


def test_the_agent_port_and_disks_are_out_of_reach(box: Isobox) -> None:
    out = box("run", "--rm", "--isolation=vm", "--network", "none", "busybox", "sh", "-c",
              "ls /dev; cat /sys/class/virtio-ports/*/name 2>/dev/null; "
              "mknod /tmp/port c $(cat /sys/class/virtio-ports/vport*/dev | head -1 | "
              "tr : ' ') && (echo hi > /tmp/port) 2>&1; echo done").stdout
    assert "vport" not in out.split("isobox.agent")[0]  # no port device in its /dev
    assert "vda" not in out and "sda" not in out  # booted: virtio disks; restored: SCSI
    assert out.rstrip().endswith("done")
    assert "Device or resource busy" in out or "Operation not permitted" in out \
        or "Permission denied" in out


def test_vm_containers_are_restored_from_one_template_and_each_is_unique(box: Isobox) -> None:
    ids = [box("run", "-d", "--isolation=vm", "busybox", "sleep", "600").stdout.strip()
           for _ in range(2)]
    for cid in ids:
        assert "restored from template" in (box.root / "containers" / cid / "shim.log").read_text()
    templates = list((box.root / "vm" / "templates").glob("tcg-*-n1-*")) + list(
        (box.root / "vm" / "templates").glob("kvm-*-n1-*"))  # the shape with a NIC
    assert len(templates) == 1 and (templates[0] / "state").is_file()
    seen = []
    for cid in ids:
        boot_id, noise, clock, mac = box(
            "exec", cid, "sh", "-c", "cat /proc/sys/kernel/random/boot_id; "
            "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' '; date +%s; "
            "cat /sys/class/net/eth0/address").stdout.split("\n")[:4]
        assert abs(int(clock) - time.time()) < 30  # the guest's clock set at the restore
        assert mac == box.fmt(cid, "{{.NetworkSettings.MacAddress}}")  # not the template's
        seen.append((boot_id, noise))
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]
    box("rm", "-f", *ids)
    # A template that cannot be restored is discarded: the container boots, the next remakes it.
    (templates[0] / "state").write_bytes(b"QEVM" + b"\0" * 64)
    out = box("run", "--rm", "--isolation=vm", "busybox", "echo", "booted").stdout
    assert out == "booted\n"
    assert not templates[0].exists()
    cid = box("run", "-d", "--isolation=vm", "busybox", "sleep", "600").stdout.strip()
    assert "restored from template" in (box.root / "containers" / cid / "shim.log").read_text()
    assert (templates[0] / "state").is_file()


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_the_docker_cli_drives_vm_containers_through_isoboxd(box: Isobox) -> None:
    from daemon_support import Daemon

    sockdir = Path(tempfile.mkdtemp(prefix="ibd-", dir="/tmp"))
    home = box.root.parent / "daemon-home"
    home.mkdir(exist_ok=True)
    daemon = Daemon(box.root, sockdir / "d.sock", home)
    daemon.start()
    try:
        run = daemon.docker("run", "--rm", "--isolation=hyperv", "--network", "none",
                            "busybox", "sh", "-c", "uname -r; exit 6", check=False, timeout=120)
        assert run.returncode == 6 and run.stdout.strip() != os.uname().release
        cid = daemon.docker("run", "-d", "--isolation=vm", "--network", "none", "busybox",
                            "sleep", "300", timeout=120).stdout.strip()
        assert daemon.docker("exec", cid, "sh", "-c", "echo from-exec; exit 3",
                             check=False).returncode == 3
        assert daemon.docker("exec", "-i", cid, "cat", input=b"piped\n").stdout == "piped\n"
        assert daemon.docker("inspect", "-f", "{{.HostConfig.Isolation}}", cid).stdout.strip() \
            in ("vm", "hyperv")
        daemon.docker("rm", "-f", cid)
    finally:
        daemon.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
