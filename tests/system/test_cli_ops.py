"""The operations verbs as a Docker user drives them: top, stats, cp, export,
diff, commit, port, update, volume, events, system df/prune.

The real ``isobox`` binary in a subprocess, one private ``--root`` per module
with busybox bootstrapped once; every test removes the containers it made
(the ``ctr`` fixture), and the leak check of ``tests/conftest.py`` verifies
that no mount (a stopped container's file system is mounted for ``cp``) or
cgroup stays behind. ``cp`` is checked against hostile symlinks made inside
the container (``/evil -> /``, links to host paths): the host stays untouched.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_containers_support import destroy_networks, network_leftovers

ISOBOX = str(Path(sys.executable).parent / "isobox")
FULL_ID = re.compile(r"sha256:[0-9a-f]{64}")

pytestmark = pytest.mark.skipif(shutil.which("busybox") is None,
                                reason="needs the host's busybox (busybox-static)")


class Isobox:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HOME": str(root.parent), "ISOBOX_CONFIG": str(root.parent / "cfg"),
                    "LANG": "C.UTF-8", "TZ": "UTC"}

    def argv(self, *args: str) -> list[str]:
        return [ISOBOX, "--root", str(self.root), *args]

    def raw(self, *args: str, input: bytes | None = None, check: bool = True,
            cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(self.argv(*args), env=self.env, capture_output=True,
                                input=input, timeout=timeout, cwd=cwd,
                                stdin=subprocess.DEVNULL if input is None else None)
        if check and result.returncode != 0:
            raise AssertionError(f"isobox {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.decode(errors='replace')}")
        return result

    def __call__(self, *args: str, check: bool = True, input: bytes | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        r = self.raw(*args, check=check, input=input, cwd=cwd)
        return subprocess.CompletedProcess(r.args, r.returncode,
                                           r.stdout.decode(errors="replace"),
                                           r.stderr.decode(errors="replace"))

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def cid(self, name: str) -> str:
        return self("inspect", "--format", "{{.Id}}", name).stdout.strip()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    """The module's root; its networks (containers join the default bridge)
    are destroyed at the end and checked gone from the host."""
    b = Isobox(tmp_path_factory.mktemp("cli-ops") / "root")
    b("image", "bootstrap", "busybox")
    try:
        yield b
    finally:
        for cid in b("ps", "-aq", "--no-trunc").stdout.split():
            b("rm", "-f", cid, check=False)
        destroy_networks(b.root)


@pytest.fixture
def ctr(box: Isobox) -> Iterator[Callable[..., str]]:
    """Run or create containers (``ctr("run", "-d", ...)``) that are removed
    after the test; returns the name."""
    made: list[str] = []

    def make(verb: str, *args: str, image: str = "busybox", cmd: tuple[str, ...] = (
            "sleep", "300")) -> str:
        name = f"ops-{uuid.uuid4().hex[:8]}"
        made.append(name)
        box(verb, "--name", name, *args, image, *cmd)
        return name

    yield make
    for name in made:
        box("rm", "-f", "-v", name, check=False)
    if made:
        assert network_leftovers(box.root) == []


def read_line(proc: subprocess.Popen[bytes], timeout: float = 15) -> str:
    """One line of a streaming command's output, or a failure after ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output in time"
    return proc.stdout.readline().decode()


def cells(line: str) -> list[str]:
    return re.split(r" {2,}", line.rstrip())


# ------------------------------------------------------------------ top and stats


def test_top_lists_the_container_processes(box: Isobox, ctr: Callable[..., str]) -> None:
    name = ctr("run", "-d", cmd=("sh", "-c", "sleep 301 & exec sleep 300"))
    deadline = time.monotonic() + 10
    while True:
        out = box("top", name).stdout.splitlines()
        if len(out) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert out[0].startswith("UID" + " " * 17 + "PID")  # Docker's tabwriter, minwidth 20
    commands = sorted(line.split(None, 7)[7] for line in out[1:])
    assert commands == ["sleep 300", "sleep 301"], out
    assert all(line.split()[0] == "root" for line in out[1:])
    custom = box("top", name, "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(line.split()[1] for line in custom[1:]) == ["sleep", "sleep"]
    host_pids = {int(line.split()[0]) for line in custom[1:]}
    assert os.getpid() not in host_pids

    box("stop", "-t", "1", name)
    stopped = box("top", name, check=False)
    assert stopped.returncode == 1
    assert "is not running" in stopped.stderr
    missing = box("top", "no-such-container", check=False)
    assert missing.returncode == 1
    assert "No such container: no-such-container" in missing.stderr
    assert box("top", check=False).returncode == 1  # usage error: Docker's status 1


def test_stats_no_stream_and_formats(box: Isobox, ctr: Callable[..., str]) -> None:
    running = ctr("run", "-d", "--memory", "32m")
    stopped = ctr("create")
    out = box("stats", "--no-stream", running).stdout.splitlines()
    assert cells(out[0]) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                             "NET I/O", "BLOCK I/O", "PIDS"]
    row = cells(out[1])
    assert row[1] == running and row[7] == "1"
    assert re.fullmatch(r"\d+\.\d\d%", row[2])
    assert re.fullmatch(r"[\d.]+(B|KiB|MiB) / 32MiB", row[3]), row[3]

    data = json.loads(box("stats", "--no-stream", "--format", "{{json .}}", running).stdout)
    assert set(data) == {"BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage",
                         "Name", "NetIO", "PIDs"}
    assert data["Container"] == running and data["ID"] == box.cid(running)[:12]

    every = box("stats", "--no-stream", "-a", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}")
    lines = every.stdout.splitlines()
    assert f"{stopped} 0B / 0B 0" in lines
    assert any(line.startswith(running + " ") for line in lines)
    only_running = box("stats", "--no-stream", "--format", "{{.Name}}").stdout.split()
    assert running in only_running and stopped not in only_running

    missing = box("stats", "--no-stream", "nope-nope", check=False)
    assert missing.returncode == 1 and "No such container" in missing.stderr


def test_stats_streams_until_interrupted(box: Isobox, ctr: Callable[..., str]) -> None:
    name = ctr("run", "-d")
    proc = box.popen("stats", "--format", "{{.Name}} {{.PIDs}}", name)
    try:
        first = read_line(proc)
        second = read_line(proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert first.strip() == second.strip() == f"{name} 1"


# ------------------------------------------------------------------ cp


def _host_tree(base: Path) -> Path:
    src = base / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    (src / "link").symlink_to("a.txt")
    os.chmod(src / "a.txt", 0o640)
    return src


def test_cp_into_and_out_of_a_running_container(box: Isobox, ctr: Callable[..., str],
                                                 tmp_path: Path) -> None:
    name = ctr("run", "-d")
    src = _host_tree(tmp_path)
    box("cp", str(src / "a.txt"), f"{name}:/tmp/")              # into a directory
    box("cp", str(src / "a.txt"), f"{name}:/tmp/renamed")       # a new file
    box("cp", str(src), f"{name}:/tmp/")                        # a directory into one
    box("cp", str(src), f"{name}:/tmp/newdir")                  # a directory, created
    box("exec", name, "mkdir", "/tmp/content")
    box("cp", f"{src}/.", f"{name}:/tmp/content")               # the content only
    listing = box("exec", name, "sh", "-c", "cd /tmp && find . | sort").stdout.split()
    for path in ("./a.txt", "./renamed", "./src/sub/b.txt", "./src/link", "./newdir/a.txt",
                 "./newdir/sub/b.txt", "./content/a.txt", "./content/sub/b.txt"):
        assert path in listing, path
    assert "./content/src" not in listing
    assert box("exec", name, "readlink", "/tmp/src/link").stdout.strip() == "a.txt"
    assert box("exec", name, "stat", "-c", "%a", "/tmp/a.txt").stdout.strip() == "640"

    out = tmp_path / "out"
    out.mkdir()
    box("cp", f"{name}:/etc/passwd", str(out))                  # a file into a directory
    box("cp", f"{name}:/tmp/src", str(out / "copied"))          # a directory, created
    box("cp", f"{name}:/tmp/src/.", str(out))                   # the content into one
    assert (out / "passwd").read_text().startswith("root:")
    assert (out / "copied" / "sub" / "b.txt").read_text() == "beta\n"
    assert os.readlink(out / "copied" / "link") == "a.txt"
    assert (out / "sub" / "b.txt").is_file() and (out / "a.txt").is_file()

    # "-": a tar stream on stdout, and one extracted from stdin
    raw = box.raw("cp", f"{name}:/tmp/src", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = tf.getnames()
    assert "src/sub/b.txt" in names and "src/a.txt" in names
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tf:
        data = b"from a tar\n"
        info = tarfile.TarInfo("untarred/file.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    box("cp", "-", f"{name}:/root", input=stream.getvalue())
    assert box("exec", name, "cat", "/root/untarred/file.txt").stdout == "from a tar\n"

    errors = [
        (("cp", f"{name}:/no/such", str(out)), "Could not find the file /no/such"),
        (("cp", str(tmp_path / "missing"), f"{name}:/tmp"), "no such file or directory"),
        (("cp", str(src), f"{name}:/tmp/a.txt"), "cannot copy directory"),
        (("cp", str(src / "a.txt"), f"{name}:/tmp/nodir/"), "no such directory"),
        (("cp", str(src / "a.txt") + "/", f"{name}:/tmp"), "not a directory"),
        (("cp", str(src / "a.txt"), f"{name}:/missing/parent/x"), "Could not find the file"),
        (("cp", "-", f"{name}:/etc/passwd"), "must be a directory"),
        (("cp", str(src), str(out)), "must specify at least one container source"),
        (("cp", f"{name}:/a", f"{name}:/b"), "copying between containers is not supported"),
        (("cp", str(src)), ""),
    ]
    for args, message in errors:
        result = box(*args, check=False, input=b"" if "-" in args else None)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_cp_with_a_stopped_container_mounts_nothing_lasting(
        box: Isobox, ctr: Callable[..., str], tmp_path: Path) -> None:
    name = ctr("create", "-v", "/vol", cmd=("cat", "/etc/greeting", "/vol/in-volume"))
    (tmp_path / "greeting").write_text("hi from the host\n")
    (tmp_path / "in-volume").write_text("volume content\n")
    box("cp", str(tmp_path / "greeting"), f"{name}:/etc/greeting")
    box("start", name)
    box("wait", name)
    box("cp", str(tmp_path / "in-volume"), f"{name}:/vol/")   # stopped: into its volume
    box("cp", f"{name}:/etc/greeting", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "hi from the host\n"
    logs = box("start", "-a", name).stdout
    assert logs == "hi from the host\nvolume content\n"
    cid = box.cid(name)
    assert not [p for p in (box.root / "containers" / cid).iterdir()
                if p.name.startswith("mnt-")]
    with open("/proc/self/mountinfo") as f:
        assert str(box.root / "containers" / cid) not in f.read()


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_never_follows_container_symlinks_to_the_host(
        box: Isobox, ctr: Callable[..., str], tmp_path: Path, state: str) -> None:
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "secret"
    secret.write_text("host secret\n")
    before = sorted(p.name for p in host.iterdir())
    name = ctr("run", "-d")
    box("exec", name, "sh", "-c", f"""
        ln -s / /evil
        ln -s {host} /tmp/hostdir
        ln -s {secret} /tmp/secret-link
        ln -s ../../../../../../../../{str(host).lstrip('/')} /tmp/climb
        mkdir -p /etc/dir && ln -s / /etc/dir/up""")
    if state == "stopped":
        box("stop", "-t", "1", name)
    payload = tmp_path / "payload"
    payload.write_text("payload\n")

    # Writes land inside the container, or fail: never on the host.
    box("cp", str(payload), f"{name}:/evil/via-evil")
    for dest in ("/tmp/hostdir/", "/tmp/climb/", "/tmp/hostdir/new", "/tmp/climb/new"):
        result = box("cp", str(payload), f"{name}:{dest}", check=False)
        assert result.returncode in (0, 1)
    assert box("cp", str(payload), f"{name}:/tmp/secret-link", check=False).returncode in (0, 1)
    assert sorted(p.name for p in host.iterdir()) == before
    assert secret.read_text() == "host secret\n"

    # Reads never return host files.
    for src in ("/tmp/hostdir/secret", "/tmp/climb/secret", "/evil" + str(secret)):
        result = box("cp", f"{name}:{src}", str(tmp_path / "leak"), check=False)
        assert result.returncode == 1 and "Could not find the file" in result.stderr
    result = box("cp", "-L", f"{name}:/tmp/secret-link", str(tmp_path / "leak"), check=False)
    assert not (tmp_path / "leak").exists()
    assert box.raw("cp", f"{name}:/etc/dir", "-").returncode == 0  # links copied as links

    # A hostile tar stream cannot climb out of the destination either.
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tf:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(host)
        tf.addfile(link)
        info = tarfile.TarInfo("escape/owned")
        tf.addfile(info, io.BytesIO(b""))
    result = box("cp", "-", f"{name}:/tmp", input=stream.getvalue(), check=False)
    assert result.returncode == 1
    dotdot = io.BytesIO()
    with tarfile.open(fileobj=dotdot, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("../../../../" + str(host).lstrip("/") + "/owned2"),
                   io.BytesIO(b""))
    assert box("cp", "-", f"{name}:/tmp", input=dotdot.getvalue(),
               check=False).returncode == 1
    assert sorted(p.name for p in host.iterdir()) == before

    if state == "stopped":
        box("start", name)
    assert box("exec", name, "cat", "/via-evil").stdout == "payload\n"


# ------------------------------------------------------------------ export, diff, commit


def test_export_streams_the_container_file_system(box: Isobox, ctr: Callable[..., str],
                                                  tmp_path: Path) -> None:
    name = ctr("run", "-d", "-v", "/data")
    box("exec", name, "sh", "-c", "echo new > /created; echo vol > /data/in-volume")
    target = tmp_path / "fs.tar"
    box("export", "-o", str(target), name)
    with tarfile.open(target) as tf:
        names = set(tf.getnames())
    assert {"bin/busybox", "etc/passwd", "created", "data"} <= names
    assert "data/in-volume" not in names                     # volumes are not exported
    assert not any(n.startswith("proc/") for n in names)
    streamed = box.raw("export", name).stdout
    with tarfile.open(fileobj=io.BytesIO(streamed)) as tf:
        assert "created" in tf.getnames()


def test_diff_reports_added_changed_and_deleted(box: Isobox, ctr: Callable[..., str]) -> None:
    name = ctr("run", "-d")
    assert box("diff", name).stdout == ""                    # the runtime's mount points hide
    box("exec", name, "sh", "-c", "rm /bin/ls; echo x >> /etc/passwd; mkdir /newdir; "
        "touch /newdir/f; rm -r /home && mkdir /home && touch /home/again")
    lines = box("diff", name).stdout.splitlines()
    for expected in ("C /bin", "D /bin/ls", "C /etc/passwd", "A /newdir", "A /newdir/f",
                     "D /home", "A /home/again"):
        assert expected in lines, (expected, lines)
    assert not any(line.endswith(("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"))
                   for line in lines)
    assert lines.index("C /bin") < lines.index("D /bin/ls")


def test_commit_makes_an_image_of_the_changes(box: Isobox, ctr: Callable[..., str]) -> None:
    name = ctr("run", "-d", "-e", "FROM_RUN=1")
    box("exec", name, "sh", "-c", "rm /bin/ls; echo kept > /kept; mkdir -p /opaque && "
        "touch /opaque/old; rm -r /opaque; mkdir /opaque; touch /opaque/new")
    tag = f"committed-{uuid.uuid4().hex[:6]}:v1"
    out = box("commit", "-m", "a message", "-a", "Ann <ann@example.com>", "-c", "ENV MODE=x",
              "-c", 'CMD ["cat", "/kept"]', name, tag).stdout.strip()
    assert FULL_ID.fullmatch(out)
    try:
        info = json.loads(box("image", "inspect", tag).stdout)[0]
        assert info["Id"] == out
        assert info["Comment"] == "a message" and info["Author"] == "Ann <ann@example.com>"
        assert "MODE=x" in info["Config"]["Env"] and "FROM_RUN=1" in info["Config"]["Env"]
        assert info["Config"]["Cmd"] == ["cat", "/kept"]
        base = json.loads(box("image", "inspect", "busybox").stdout)[0]
        assert len(info["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        assert box("run", "--rm", tag).stdout == "kept\n"
        check = box("run", "--rm", tag, "sh", "-c", "ls /bin/ls; ls /opaque").stdout
        assert check.strip() == "new"
        history = box("image", "history", "--no-trunc", "--format", "{{.CreatedBy}}|"
                      "{{.Comment}}", tag).stdout.splitlines()
        assert history[0] == "sleep 300|a message"
        # No change: no new layer (Docker's empty layer).
        again = ctr("run", "-d", image=tag, cmd=("sleep", "300"))
        same = box("commit", "--pause=false", again).stdout.strip()
        layers = json.loads(box("image", "inspect", same).stdout)[0]["RootFS"]["Layers"]
        assert layers == info["RootFS"]["Layers"]
        events = box("events", "--since", "5m", "--until", "0s", "--filter",
                     "event=commit", "--format", "{{.Actor.Attributes.imageRef}}").stdout
        assert tag in events
    finally:
        for c in box("ps", "-aq", "--filter", f"ancestor={tag}").stdout.split():
            box("rm", "-f", c, check=False)
        box("rmi", "-f", tag, check=False)
    assert box("commit", "no-such", check=False).returncode == 1


# ------------------------------------------------------------------ port and update


def _free_port(kind: socket.SocketKind, ip: str) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        port: int = s.getsockname()[1]
        return port


def test_port_reports_the_requested_bindings(box: Isobox, ctr: Callable[..., str]) -> None:
    # Real host ports (the container is on the default bridge): free ones.
    tcp, udp = _free_port(socket.SOCK_STREAM, "0.0.0.0"), _free_port(socket.SOCK_DGRAM,
                                                                      "127.0.0.1")
    name = ctr("run", "-d", "-p", f"{tcp}:80", "-p", f"127.0.0.1:{udp}:53/udp")
    assert box("port", name).stdout.splitlines() == [f"53/udp -> 127.0.0.1:{udp}",
                                                     f"80/tcp -> 0.0.0.0:{tcp}"]
    assert box("port", name, "80").stdout == f"0.0.0.0:{tcp}\n"
    assert box("port", name, "53/udp").stdout == f"127.0.0.1:{udp}\n"
    missing = box("port", name, "81", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Error: No public port '81/tcp' published for {name}"
    host_net = ctr("run", "-d", "--network", "none", "-p", "8081:80")
    assert box("port", host_net).stdout == ""


def _cgroup(kind: str, cid: str, file: str) -> str:
    return Path(f"/sys/fs/cgroup/{kind}/isobox/{cid}/{file}").read_text().strip()


def test_update_changes_limits_now_and_for_later(box: Isobox, ctr: Callable[..., str]) -> None:
    name = ctr("run", "-d", "--memory", "64m")
    cid = box.cid(name)
    assert box("update", "--memory", "96m", "--pids-limit", "40", "--cpus", "0.5",
               "--restart", "on-failure:3", name).stdout == f"{name}\n"
    assert _cgroup("memory", cid, "memory.limit_in_bytes") == str(96 << 20)
    assert _cgroup("pids", cid, "pids.max") == "40"
    assert _cgroup("cpu", cid, "cpu.cfs_quota_us") == "50000"
    host = json.loads(box("inspect", name).stdout)[0]["HostConfig"]
    assert host["Memory"] == 96 << 20 and host["PidsLimit"] == 40
    assert host["NanoCpus"] == 500_000_000
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    shim = json.loads((box.root / "containers" / cid / "shim.json").read_text())
    assert shim["restart"] == {"name": "on-failure", "max_retries": 3}

    conflict = box("update", "--memory", "1g", name, check=False)
    assert conflict.returncode == 1
    assert conflict.stderr.strip() == (
        f"Error response from daemon: Cannot update container {cid}: Memory limit should be "
        "smaller than already set memoryswap limit, update the memoryswap at the same time")
    assert box("update", "--memory", "1k", name, check=False).returncode == 1
    assert box("update", name, check=False).returncode == 1
    assert box("update", "--memory", "bogus", name, check=False).returncode == 1

    stopped = ctr("create")
    box("update", "--pids-limit", "25", stopped)
    box("start", stopped)
    assert _cgroup("pids", box.cid(stopped), "pids.max") == "25"
    auto = ctr("run", "-d", "--rm")
    refused = box("update", "--restart", "always", auto, check=False)
    assert refused.returncode == 1 and "AutoRemove" in refused.stderr


# ------------------------------------------------------------------ volumes


def test_volume_lifecycle(box: Isobox, ctr: Callable[..., str]) -> None:
    tag = uuid.uuid4().hex[:6]
    named, labelled = f"vol-{tag}", f"lab-{tag}"
    assert box("volume", "create", named).stdout == f"{named}\n"
    assert box("volume", "create", "--name", labelled, "-l", f"team={tag}").stdout.strip() \
        == labelled
    try:
        table = box("volume", "ls").stdout.splitlines()
        assert cells(table[0]) == ["DRIVER", "VOLUME NAME"]
        assert ["local", named] in [cells(line) for line in table[1:]]
        assert box("volume", "ls", "-q", "--filter", f"label=team={tag}").stdout \
            == f"{labelled}\n"
        assert box("volume", "ls", "-q", "--filter", f"name=vol-{tag}").stdout == f"{named}\n"
        assert box("volume", "ls", "--format", "{{.Name}}:{{.Driver}}:{{.Labels}}",
                   "--filter", f"name={labelled}").stdout == f"{labelled}:local:team={tag}\n"
        info = json.loads(box("volume", "inspect", labelled).stdout)[0]
        assert info["Labels"] == {"team": tag} and info["Driver"] == "local"
        assert box("volume", "inspect", "-f", "{{.Name}}", named).stdout == f"{named}\n"
        assert box("volume", "inspect", "nope-nope", check=False).returncode == 1

        user = ctr("run", "-d", "-v", f"{named}:/data", "-v", "/anon")
        dangling = box("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
        assert labelled in dangling and named not in dangling
        busy = box("volume", "rm", named, check=False)
        assert busy.returncode == 1
        assert f"remove {named}: volume is in use - [{box.cid(user)}]" in busy.stderr
        box("rm", "-f", user)
        # prune: anonymous volumes only, unless -a
        pruned = box("volume", "prune", "-f").stdout
        assert pruned.startswith("Deleted Volumes:\n") and named not in pruned
        assert "Total reclaimed space:" in pruned
        names = box("volume", "ls", "-q").stdout.split()
        assert named in names and labelled in names
        assert box("volume", "prune", "-a", "-f", "--filter", f"label=team={tag}").stdout \
            .splitlines()[:2] == ["Deleted Volumes:", labelled]
        assert box("volume", "rm", named).stdout == f"{named}\n"
        assert box("volume", "rm", named, check=False).returncode == 1
        assert box("volume", "rm", "-f", named).returncode == 0
    finally:
        box("volume", "rm", "-f", named, labelled, check=False)


# ------------------------------------------------------------------ events and system


def test_events_history_filters_and_stream(box: Isobox, ctr: Callable[..., str]) -> None:
    start = time.time() - 1
    name = ctr("run", "-d")
    cid = box.cid(name)
    since = f"{start:.3f}"
    lines = box("events", "--since", since, "--until", "0s",
                "--filter", f"container={name}").stdout.splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z container create "
                        f"{cid} \\(image=busybox, name={name}\\)", lines[0]), lines[0]
    assert [line.split()[2] for line in lines] == ["create", "start"]
    message = json.loads(box("events", "--since", since, "--until", "0s", "--format",
                             "{{json .}}", "-f", "event=start", "-f",
                             f"container={cid[:12]}").stdout)
    assert set(message) == {"status", "id", "from", "Type", "Action", "Actor", "scope",
                            "time", "timeNano"}
    assert message["Actor"] == {"ID": cid, "Attributes": {"image": "busybox", "name": name}}
    assert (message["status"], message["from"], message["scope"]) == ("start", "busybox",
                                                                      "local")
    assert message["time"] == message["timeNano"] // 10**9
    assert box("events", "--since", since, "--until", "0s", "-f", "type=volume", "-f",
               f"container={name}").stdout == ""
    assert box("events", "--filter", "bogus=1", "--until", "0s",
               check=False).returncode == 1

    # --since now: the stream starts with what happened since, however long
    # the command takes to start; then it follows new events.
    proc = box.popen("events", "--since", f"{time.time():.3f}", "--filter",
                     f"container={name}", "--format",
                     "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")
    try:
        box("pause", name)
        assert read_line(proc) == f"container pause {name}\n"
        time.sleep(0.5)
        box("unpause", name)
        assert read_line(proc) == f"container unpause {name}\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        box("unpause", name, check=False)


def test_system_df_and_prune(box: Isobox, ctr: Callable[..., str]) -> None:
    ctr("run", "-d")
    done = ctr("run", cmd=("sh", "-c", "echo data > /file"))
    out = box("system", "df").stdout.splitlines()
    assert cells(out[0]) == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    rows = {cells(line)[0]: cells(line)[1:] for line in out[1:]}
    assert set(rows) == {"Images", "Containers", "Local Volumes", "Build Cache"}
    total, active = int(rows["Containers"][0]), int(rows["Containers"][1])
    assert total >= 2 and active >= 1 and total > active
    assert re.fullmatch(r"[\d.]+k?B \(\d+%\)", rows["Containers"][3]), rows["Containers"]
    assert rows["Build Cache"] == ["0", "0", "0B", "0B"]
    as_json = [json.loads(line) for line in
               box("system", "df", "--format", "{{json .}}").stdout.splitlines()]
    assert [r["Type"] for r in as_json] == ["Images", "Containers", "Local Volumes",
                                            "Build Cache"]

    declined = box("system", "prune", input=b"n\n").stdout
    assert declined.startswith("WARNING! This will remove:\n  - all stopped containers\n")
    assert box("ps", "-aq", "--filter", f"name={done}").stdout != ""
    done_id = box.cid(done)
    pruned = box("system", "prune", "-f").stdout
    assert pruned.startswith("Deleted Containers:\n") and done_id in pruned.splitlines()
    assert "Total reclaimed space:" in pruned.splitlines()[-1]
    assert box("ps", "-aq", "--filter", f"name={done}").stdout == ""
    assert box("image", "inspect", "busybox").returncode == 0   # tagged: kept
