"""The guest agent run on the host: a subprocess speaking the task API over a
socketpair (``--fd``), with busybox containers from the built-in runtime;
its storage with loop devices standing in for virtio disks, and its network
in a namespace of its own with a veth standing in for the NIC."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from isobox.agent.paths import Paths
from isobox.agent.requests import parse_storage
from isobox.agent.storage import Storage
from isobox.errors import NotFound
from isobox.linux import proc
from isobox.taskapi import frames

TIMEOUT = 30.0


class AgentSession:
    """One agent process and the host's end of its connection."""

    def __init__(self, tmp_path: Path, prefix: list[str] | None = None) -> None:
        self.state = tmp_path / "state"
        self.log = tmp_path / "agent.log"
        self.sock, theirs = socket.socketpair()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "isobox.agent", "--fd",
                 str(theirs.fileno()), "--state-dir", str(self.state)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        theirs.close()
        self.decoder = frames.Decoder()
        self.next_id = 0
        self.responses: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.output: dict[int, dict[int, bytearray]] = {}
        self.eof: set[int] = set()
        self.pids: list[int] = []
        ready = self.wait_for(lambda: self.events)
        assert ready[0] == {"event": "ready", "kernel": os.uname().release}

    # -- frames ----------------------------------------------------------

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError(f"the agent closed the connection; its log:\n{self.log.read_text()}")
        for kind, stream, payload in self.decoder.feed(data):
            if kind == frames.RESPONSE:
                msg = json.loads(payload)
                self.responses[msg["id"]] = msg
            elif kind == frames.EVENT:
                event = json.loads(payload)
                if event.get("event") == "exit":
                    # The stream's output is all sent, and ended, before its exit event.
                    assert event["stream"] in self.eof, event
                self.events.append(event)
            elif kind in (frames.STDOUT, frames.STDERR):
                assert stream not in self.eof, "output after OUTPUT_EOF"
                self.output.setdefault(stream, {}).setdefault(kind, bytearray()).extend(payload)
            elif kind == frames.OUTPUT_EOF:
                self.eof.add(stream)
            else:
                raise AssertionError(f"unexpected frame kind {kind}")

    def wait_for(self, condition: Any, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; agent log:\n{self.log.read_text()}")
            try:
                self._receive(left)
            except TimeoutError:
                pass
        return result

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        self.sock.sendall(frames.encode(kind, stream, payload))

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        self.sock.sendall(frames.encode_json(frames.REQUEST, {"id": rid, "op": op, **fields}))
        reply = self.wait_for(lambda: self.responses.pop(rid, None))
        if reply.get("ok") and "pid" in reply:
            self.pids.append(reply["pid"])
        return reply

    def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self.request(op, **fields)
        assert reply["ok"], reply
        return reply

    def exit_code(self, stream: int) -> int:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events if e.get("event") == "exit"
                         and e["stream"] == stream), None)
        return int(self.wait_for(find)["exit_code"])

    def stdout(self, stream: int) -> bytearray:
        return self.output.get(stream, {}).get(frames.STDOUT, bytearray())

    def stderr(self, stream: int) -> bytearray:
        return self.output.get(stream, {}).get(frames.STDERR, bytearray())

    # -- the end ---------------------------------------------------------

    def shutdown(self) -> None:
        try:
            if self.proc.poll() is None:
                self.ok("shutdown")
                assert self.proc.wait(TIMEOUT) == 0
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for pid in self.pids:
            assert not proc.is_alive(pid), f"process {pid} outlived the agent"


@pytest.fixture
def agent(tmp_path: Path):
    session = AgentSession(tmp_path)
    yield session
    session.shutdown()
    runtime = session.state / "runtime"
    assert not runtime.exists() or not list(runtime.iterdir()), "runtime state left behind"
    bundles = session.state / "bundles"
    assert not bundles.exists() or not list(bundles.iterdir()), "bundles left behind"


@pytest.fixture
def config(bundle):
    def make(args: list[str], tty: bool = False) -> tuple[str, dict[str, Any]]:
        path, cid = bundle(args, terminal=tty)
        return cid, json.loads((path / "config.json").read_text())
    return make


def process(*args: str) -> dict[str, Any]:
    return {"args": list(args), "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"]}


def test_hello_and_a_run_with_output_and_exit_code(agent, config):
    reply = agent.ok("hello")
    assert reply["version"] == 1 and reply["kernel"] == os.uname().release
    agent.ok("sync")  # no upper disk: a plain sync
    cid, spec = config(["sh", "-c", "echo out; echo err >&2; exit 3"])
    agent.ok("create", stream=1, container_id=cid, config=spec)
    assert (agent.state / "bundles" / cid / "config.json").exists()
    agent.ok("start", stream=1)
    assert agent.exit_code(1) == 3
    assert agent.stdout(1) == b"out\n"
    assert agent.stderr(1) == b"err\n"
    # Deleted before the exit event: no runtime state, no bundle.
    assert not (agent.state / "runtime" / cid).exists()
    assert not (agent.state / "bundles" / cid).exists()
    # The guest runs one container at a time: the next may come now.
    cid2, spec2 = config(["true"])
    agent.ok("create", stream=2, container_id=cid2, config=spec2)
    agent.ok("start", stream=2)
    assert agent.exit_code(2) == 0


def test_stdin_is_relayed_until_eof(agent, config):
    cid, spec = config(["cat"])
    agent.ok("create", stream=1, container_id=cid, config=spec, open_stdin=True)
    agent.ok("start", stream=1)
    agent.send(frames.STDIN, 1, b"hello\n")
    agent.send(frames.STDIN, 1, b"world\n")
    agent.wait_for(lambda: agent.stdout(1) == b"hello\nworld\n")
    agent.send(frames.STDIN_EOF, 1)
    assert agent.exit_code(1) == 0
    assert agent.stdout(1) == b"hello\nworld\n"


def test_tty_with_console_size_and_resize(agent, config):
    cid, spec = config(["sh", "-c", "tty; stty size; read line; stty size"], tty=True)
    agent.ok("create", stream=1, container_id=cid, config=spec, tty=True, open_stdin=True,
             console={"height": 30, "width": 100})
    agent.ok("start", stream=1)
    agent.wait_for(lambda: b"30 100" in agent.stdout(1))
    assert re.search(rb"/dev/pts/\d+", agent.stdout(1))
    agent.ok("resize", stream=1, height=40, width=120)
    agent.send(frames.STDIN, 1, b"go\r")
    assert agent.exit_code(1) == 0
    assert b"40 120" in agent.stdout(1)
    assert agent.stderr(1) == b""  # a tty has one output
    # A stream without a terminal cannot be resized.
    cid2, spec2 = config(["sleep", "300"])
    agent.ok("create", stream=2, container_id=cid2, config=spec2)
    reply = agent.request("resize", stream=2, height=1, width=1)
    assert not reply["ok"] and "terminal" in reply["error"]
    agent.ok("signal", stream=2, signal=signal.SIGKILL, all=True)
    assert agent.exit_code(2) == 137


def test_exec_signals_and_stats(agent, config):
    cid, spec = config(["sleep", "300"])
    init_pid = agent.ok("create", stream=1, container_id=cid, config=spec)["pid"]
    agent.ok("start", stream=1)

    agent.ok("exec", stream=2, process=process("sh", "-c", "echo in here; echo $$ >&2; exit 4"))
    assert agent.exit_code(2) == 4
    assert agent.stdout(2) == b"in here\n"
    assert agent.stderr(2).strip().isdigit()  # a pid of the container's namespace

    missing = agent.request("exec", stream=3, process=process("no-such-program"))
    assert not missing["ok"] and missing["exit_code"] == 127
    assert "not found" in missing["error"]
    not_executable = agent.request("exec", stream=3, process=process("/etc/passwd"))
    assert not not_executable["ok"] and not_executable["exit_code"] == 126

    agent.ok("exec", stream=4, process=process("sh", "-c", "tty; stty size"), tty=True,
             console={"height": 20, "width": 70})
    assert agent.exit_code(4) == 0
    assert re.match(rb"/dev/pts/\d+\r\n20 70\r\n$", agent.stdout(4)), agent.stdout(4)

    agent.ok("exec", stream=5, process=process("cat"), open_stdin=True)
    agent.send(frames.STDIN, 5, b"to exec\n")
    agent.send(frames.STDIN_EOF, 5)
    assert agent.exit_code(5) == 0
    assert agent.stdout(5) == b"to exec\n"

    stats = agent.ok("stats")
    assert stats["pids"] >= 1 and stats["memory_usage"] > 0 and stats["cpu_usage_ns"] > 0
    assert stats["memory_limit"] > stats["memory_usage"]

    sleeper = agent.ok("exec", stream=6, process=process("sleep", "300"))["pid"]
    agent.ok("signal", stream=6, signal=signal.SIGTERM, all=False)
    assert agent.exit_code(6) == 143
    assert not proc.is_alive(sleeper)
    gone = agent.request("signal", stream=6, signal=signal.SIGTERM)
    assert not gone["ok"]

    agent.ok("signal", stream=1, signal=signal.SIGKILL, all=False)
    assert agent.exit_code(1) == 137
    assert not proc.is_alive(init_pid)
    late = agent.request("exec", stream=7, process=process("true"))
    assert not late["ok"] and "no container" in late["error"]


def test_bad_requests_are_answered_and_the_agent_carries_on(agent, config):
    agent.sock.sendall(frames.encode(frames.REQUEST, 0, b"not json"))
    agent.wait_for(lambda: agent.responses.get(0))
    assert agent.responses.pop(0)["ok"] is False
    agent.sock.sendall(frames.encode_json(frames.REQUEST, {"op": "hello"}))  # no id
    assert agent.wait_for(lambda: agent.responses.pop(0, None))["ok"] is True
    for op, fields, words in [
        ("frobnicate", {}, "unknown op"),
        ("create", {"stream": 1, "config": {"process": {}}}, "container_id"),
        ("create", {"stream": 1, "container_id": "../escape", "config": {"process": {}}},
         "invalid container id"),
        ("create", {"stream": 1, "container_id": "x", "config": {"process": {"args": 5}}},
         "config.json"),
        ("start", {"stream": 9}, "no process on stream 9"),
        ("signal", {"stream": 1, "signal": 99}, "signal"),
        ("stats", {}, "no container"),
        ("exec", {"stream": 2, "process": {"args": ["true"]}}, "no container"),
        ("storage", {"layers": [{"serial": "x", "fstype": "ntfs"}]}, "fstype"),
        ("network", {"interfaces": [{"mac": "bad"}]}, "mac"),
    ]:
        reply = agent.request(op, **fields)
        assert not reply["ok"] and reply["exit_code"] == 125, (op, reply)
        assert words in reply["error"], (op, reply)
        assert "\n" not in reply["error"]
    assert not list((agent.state / "bundles").iterdir())
    cid, spec = config(["sleep", "300"])
    agent.ok("create", stream=1, container_id=cid, config=spec)
    busy = agent.request("create", stream=2, container_id=cid + "b", config=spec)
    assert not busy["ok"] and "already runs" in busy["error"]
    taken = agent.request("exec", stream=1, process=process("true"))
    assert not taken["ok"] and "in use" in taken["error"]
    missing = agent.request("create", stream=3, container_id="other",
                            config={**spec, "process": {**spec["process"], "args": ["nope"]}})
    assert not missing["ok"]
    assert agent.ok("hello")["version"] == 1
    # Shut down with the container still created: it is killed and deleted.


def test_a_slow_host_does_not_make_the_agent_buffer(agent, config):
    size = 64 << 20
    cid, spec = config(["sh", "-c", f"head -c {size} /dev/zero"])
    agent.ok("create", stream=1, container_id=cid, config=spec)
    agent.ok("start", stream=1)
    time.sleep(1.5)  # not reading: the socket fills, then the agent stops reading the pipe
    rss = _rss_kib(agent.proc.pid)
    agent.wait_for(lambda: len(agent.stdout(1)) >= size or None, timeout=120)
    assert agent.exit_code(1) == 0
    assert len(agent.stdout(1)) == size
    assert rss < 40 * 1024, f"agent RSS {rss} KiB while the host was not reading"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_the_host_going_away_stops_everything(tmp_path, config):
    session = AgentSession(tmp_path)
    cid, spec = config(["sleep", "300"])
    pid = session.ok("create", stream=1, container_id=cid, config=spec)["pid"]
    session.ok("start", stream=1)
    exec_pid = session.ok("exec", stream=2, process=process("sleep", "300"))["pid"]
    session.sock.close()
    assert session.proc.wait(TIMEOUT) == 0
    assert not proc.is_alive(pid) and not proc.is_alive(exec_pid)
    assert not list((session.state / "runtime").iterdir())


def test_sigterm_to_the_agent_stops_everything(tmp_path, config):
    session = AgentSession(tmp_path)
    cid, spec = config(["sleep", "300"])
    pid = session.ok("create", stream=1, container_id=cid, config=spec)["pid"]
    session.ok("start", stream=1)
    session.proc.send_signal(signal.SIGTERM)
    assert session.proc.wait(TIMEOUT) == 0
    assert not proc.is_alive(pid)
    session.close()


# -- storage: loop devices as the virtio disks --------------------------


def _image(tmp_path: Path, name: str, fstype: str, files: dict[str, str] | None) -> Path:
    tree = tmp_path / f"{name}-tree"
    tree.mkdir()
    for rel, text in (files or {}).items():
        (tree / rel).write_text(text)
    image = tmp_path / f"{name}.img"
    if fstype == "erofs":
        subprocess.run(["mkfs.erofs", "--quiet", str(image), str(tree)], check=True,
                       capture_output=True)
    else:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "16M"], check=True,
                       capture_output=True)
    return image


@pytest.fixture
def loop_disks(tmp_path):
    """serial -> image attached as a loop device, under a fake /sys and /dev."""
    attached: list[str] = []
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    dev_root.mkdir()

    def attach(serial: str, image: Path) -> None:
        loop = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                              capture_output=True, text=True).stdout.strip()
        attached.append(loop)
        name = f"vd{chr(ord('a') + len(attached) - 1)}"
        (sys_root / "block" / name).mkdir(parents=True)
        (sys_root / "block" / name / "serial").write_text(serial + "\n")
        (dev_root / name).symlink_to(loop)

    yield attach, str(sys_root), str(dev_root)
    for loop in attached:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_storage_mounts_layers_upper_and_keeps_the_upper_disk(tmp_path, loop_disks):
    attach, sys_root, dev_root = loop_disks
    attach("layer-bottom", _image(tmp_path, "l0", "ext4", {"a": "bottom", "b": "bottom"}))
    attach("layer-top", _image(tmp_path, "l1", "erofs", {"b": "top"}))
    attach("upper", _image(tmp_path, "up", "ext4", None))
    paths = Paths(str(tmp_path / "state"))
    request = parse_storage({"layers": [{"serial": "layer-bottom", "fstype": "ext4"},
                                        {"serial": "layer-top", "fstype": "erofs"}],
                             "upper": {"serial": "upper", "fstype": "ext4"}})
    storage = Storage(paths, sys_root, dev_root)
    rootfs = Path(storage.setup(request))
    try:
        assert rootfs == tmp_path / "state" / "rootfs"
        assert (rootfs / "a").read_text() == "bottom"
        assert (rootfs / "b").read_text() == "top"
        (rootfs / "c").write_text("written")
        with pytest.raises(OSError):
            (Path(paths.layer(1)) / "x").write_text("layers are read-only")
        storage.sync()
    finally:
        storage.teardown()
    assert not os.path.ismount(rootfs) and not os.path.ismount(paths.upper)
    again = Storage(paths, sys_root, dev_root)  # the next boot: the upper disk is reused
    rootfs = Path(again.setup(request))
    try:
        assert (rootfs / "c").read_text() == "written"
    finally:
        again.teardown()


def test_storage_without_disks_is_an_empty_writable_root(tmp_path):
    storage = Storage(Paths(str(tmp_path / "state")), str(tmp_path / "sys"))
    rootfs = Path(storage.setup(parse_storage({})))
    try:
        assert list(rootfs.iterdir()) == []
        (rootfs / "f").write_text("tmpfs")
    finally:
        storage.teardown()
    assert not os.path.ismount(rootfs)


def test_storage_that_fails_half_way_mounts_nothing(tmp_path, loop_disks, monkeypatch):
    attach, sys_root, dev_root = loop_disks
    attach("layer", _image(tmp_path, "l0", "ext4", {"a": "x"}))
    attach("not-ext4", _image(tmp_path, "up", "erofs", {"b": "y"}))
    monkeypatch.setattr("isobox.agent.storage.DISK_WAIT", 0.1)
    paths = Paths(str(tmp_path / "state"))
    storage = Storage(paths, sys_root, dev_root)
    absent = parse_storage({"layers": [{"serial": "layer", "fstype": "ext4"},
                                       {"serial": "absent", "fstype": "ext4"}]})
    with pytest.raises(NotFound, match="absent"):
        storage.setup(absent)
    bad_upper = parse_storage({"layers": [{"serial": "layer", "fstype": "ext4"}],
                               "upper": {"serial": "not-ext4", "fstype": "ext4"}})
    with pytest.raises(OSError):
        storage.setup(bad_upper)  # the layer was mounted, then unmounted again
    assert storage.mounted == []
    assert not [m for m in proc.mountinfo() if m.mountpoint.startswith(str(tmp_path))]


# -- network: a namespace of its own, a veth as the NIC -----------------


def test_network_in_a_namespace(tmp_path):
    mac = "02:00:00:00:00:aa"
    # The agent in new network, mount and UTS namespaces, with sysfs showing them.
    setup = (f"mount --make-rprivate / && mount -t sysfs sysfs /sys && "
             f"ip link add veth-x address {mac} type veth peer name veth-y && exec \"$@\"")
    session = AgentSession(tmp_path, ["unshare", "--net", "--mount", "--uts", "sh", "-c",
                                      setup, "agent"])
    try:
        session.ok("network", interfaces=[{"mac": mac, "name": "eth0",
                                           "address": "10.99.0.5/24", "gateway": "10.99.0.1",
                                           "mtu": 1400}], hostname="guest-1")
        pid = str(session.proc.pid)

        def inside(*argv: str) -> str:
            return subprocess.run(["nsenter", "-t", pid, "-n", "-u", *argv], check=True,
                                  capture_output=True, text=True).stdout

        links = {link["ifname"]: link for link in json.loads(inside("ip", "-j", "addr"))}
        assert links["eth0"]["mtu"] == 1400 and links["eth0"]["address"] == mac
        assert "UP" in links["eth0"]["flags"] and "UP" in links["lo"]["flags"]
        assert [(a["local"], a["prefixlen"]) for a in links["eth0"]["addr_info"]
                if a["family"] == "inet"] == [("10.99.0.5", 24)]
        assert "default via 10.99.0.1 dev eth0" in inside("ip", "route")
        assert inside("hostname").strip() == "guest-1"
        # Again: the address is replaced, not added twice.
        session.ok("network", interfaces=[{"mac": mac, "name": "eth0",
                                           "address": "10.99.0.6/24"}])
        links = {link["ifname"]: link for link in json.loads(inside("ip", "-j", "addr"))}
        assert [a["local"] for a in links["eth0"]["addr_info"] if a["family"] == "inet"] == [
            "10.99.0.6"]
    finally:
        session.shutdown()


# -- PID 1: the agent as init of a pid namespace ------------------------


def test_as_pid_1_it_reaps_orphans_and_powers_off(tmp_path, config):
    session = AgentSession(tmp_path, ["unshare", "--pid", "--fork", "--mount-proc"])
    agent_pid = int(Path(f"/proc/{session.proc.pid}/task/{session.proc.pid}/children")
                    .read_text().split()[0])
    assert Path(f"/proc/{agent_pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
        b"-m", b"isobox.agent"]
    # No pid namespace of its own: the container's orphans come to the agent.
    cid, spec = config(["sh", "-c", "sleep 300 & sleep 300 & echo started"])
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                   if ns["type"] != "pid"]
    session.ok("create", stream=1, container_id=cid, config=spec)
    session.ok("start", stream=1)
    assert session.exit_code(1) == 0
    assert session.stdout(1) == b"started\n"
    # Its sleeps were killed by the runtime's delete; the agent reaped them.
    deadline = time.monotonic() + TIMEOUT
    while _children(agent_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children(agent_pid) == []
    assert session.ok("hello")["version"] == 1
    session.ok("shutdown")
    session.proc.wait(TIMEOUT)  # the power-off ends the namespace's init
    session.pids = []  # numbers of the agent's namespace, not the host's
    session.close()


def _children(pid: int) -> list[str]:
    """Every process (zombies too) whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(entry.name)
    return found
