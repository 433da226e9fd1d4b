"""isoboxd driven by the real docker CLI and by docker-py (one daemon for the
module, on a private root with busybox); containers use ``--network none``."""

from __future__ import annotations

import json
import os
import pty
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_support import Daemon, needs_docker, running_daemon

pytestmark = needs_docker

NONE = ("--network", "none")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("isoboxd")) as d:
        yield d


@pytest.fixture(autouse=True)
def clean(daemon: Daemon) -> Iterator[None]:
    yield
    daemon.remove_all()


def test_version_negotiation_and_ping(daemon: Daemon) -> None:
    out = daemon.docker("version", "--format", "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}")
    assert out.stdout.split() == ["1.50", "1.41"]
    with daemon.http() as http:
        for method in ("GET", "HEAD"):
            r = http.request(method, "/_ping")
            assert r.status_code == 200
            assert r.headers["API-Version"] == "1.50"
            assert r.headers["OSType"] == "linux"
            assert r.headers["Docker-Experimental"] == "false"
        assert http.get("/v1.41/_ping").text == "OK"
        r = http.get("/v1.40/version")
        assert r.status_code == 400 and "too old" in r.json()["message"]
        r = http.get("/v1.99/version")
        assert r.status_code == 400 and "too new" in r.json()["message"]
        assert http.get("/v1.44/info").json()["ContainersRunning"] >= 0


def test_errors_keep_the_daemon_serving(daemon: Daemon) -> None:
    with daemon.http() as http:
        r = http.get("/containers/nope/json")
        assert r.status_code == 404
        assert r.json() == {"message": "No such container: nope"}
        r = http.post("/containers/create", content=b"{not json")
        assert r.status_code == 400 and "invalid JSON" in r.json()["message"]
        r = http.post("/containers/create", json={"Image": "busybox",
                                                  "HostConfig": {"Memory": "lots"}})
        assert r.status_code == 400 and "Memory" in r.json()["message"]
        r = http.post("/containers/create", json={"Image": "no-such-image"})
        assert r.status_code == 404 and "No such image" in r.json()["message"]
        r = http.post("/containers/create", content=b"[" * (9 << 20),
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = http.get("/images/no-such/json")
        assert r.status_code == 404
        assert http.get("/no/such/endpoint").status_code == 404
        assert http.get("/_ping").status_code == 200
    result = daemon.docker("inspect", "nope", check=False)
    assert result.returncode == 1 and "No such object: nope" in result.stderr


def test_run_rm_output_and_exit_code(daemon: Daemon) -> None:
    result = daemon.docker("run", "--rm", *NONE, "busybox", "sh", "-c",
                           "echo out; echo err >&2; exit 3", check=False)
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert daemon.docker("ps", "-aq").stdout == ""
    missing = daemon.docker("run", "--rm", *NONE, "busybox", "no-such-cmd", check=False)
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr


def test_run_with_env_workdir_user_and_stdin(daemon: Daemon) -> None:
    result = daemon.docker("run", "--rm", *NONE, "-e", "GREETING=hi", "-w", "/tmp", "-u",
                           "1000:1000", "busybox", "sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"')
    assert result.stdout == "hi /tmp 1000\n"
    piped = daemon.docker("run", "--rm", "-i", *NONE, "busybox", "tr", "a-z", "A-Z",
                          input=b"shout\n")
    assert piped.stdout == "SHOUT\n"


def test_detached_lifecycle(daemon: Daemon) -> None:
    cid = daemon.docker("run", "-d", "--name", "ticker", *NONE, "busybox", "sh", "-c",
                        "echo started; echo oops >&2; while true; do sleep 1; done"
                        ).stdout.strip()
    assert len(cid) == 64
    ps = daemon.docker("ps", "--format", "{{.Names}} {{.Status}}").stdout.splitlines()
    assert len(ps) == 1 and ps[0].startswith("ticker Up")
    time.sleep(0.3)
    logs = daemon.docker("logs", "ticker")
    assert (logs.stdout, logs.stderr) == ("started\n", "oops\n")
    stamped = daemon.docker("logs", "-t", "--tail", "2", "ticker").stdout
    assert stamped.endswith(" started\n") and stamped[:4].isdigit()
    state = json.loads(daemon.docker("inspect", "ticker").stdout)[0]
    assert state["Id"] == cid and state["State"]["Running"] is True
    assert state["Name"] == "/ticker"
    daemon.docker("pause", "ticker")
    assert daemon.docker("inspect", "-f", "{{.State.Status}}", "ticker").stdout == "paused\n"
    daemon.docker("unpause", "ticker")
    daemon.docker("rename", "ticker", "tocker")
    top = daemon.docker("top", "tocker").stdout
    assert "while true" in top
    daemon.docker("stop", "-t", "1", "tocker")
    assert daemon.docker("inspect", "-f", "{{.State.Status}}", "tocker").stdout == "exited\n"
    assert daemon.docker("wait", "tocker").stdout.strip() in ("137", "143")
    daemon.docker("start", "tocker")
    daemon.docker("kill", "tocker")
    assert daemon.docker("wait", "tocker").stdout == "137\n"
    assert daemon.docker("ps", "-q").stdout == ""
    assert daemon.docker("ps", "-aq", "--filter", "name=tocker").stdout.strip() == cid[:12]
    daemon.docker("rm", "tocker")
    assert daemon.docker("ps", "-aq").stdout == ""


def test_logs_follow_ends_with_the_container(daemon: Daemon) -> None:
    daemon.docker("run", "-d", "--name", "counter", *NONE, "busybox", "sh", "-c",
                  "for i in 1 2 3; do echo $i; sleep 0.2; done")
    result = daemon.docker("logs", "-f", "counter", timeout=30)
    assert result.stdout == "1\n2\n3\n"


def test_exec(daemon: Daemon) -> None:
    daemon.docker("run", "-d", "--name", "box", *NONE, "busybox", "sleep", "60")
    result = daemon.docker("exec", "box", "sh", "-c", "echo in; echo err >&2; exit 5",
                           check=False)
    assert (result.returncode, result.stdout, result.stderr) == (5, "in\n", "err\n")
    assert daemon.docker("exec", "-i", "box", "cat", input=b"piped\n").stdout == "piped\n"
    env = daemon.docker("exec", "-e", "X=1", "-w", "/etc", "box", "sh", "-c", "echo $X $PWD")
    assert env.stdout == "1 /etc\n"
    daemon.docker("exec", "-d", "box", "touch", "/tmp/detached")
    time.sleep(0.3)
    daemon.docker("exec", "box", "test", "-f", "/tmp/detached")
    stopped = daemon.docker("exec", "nope", "true", check=False)
    assert stopped.returncode == 1 and "No such container" in stopped.stderr


def _pty_session(daemon: Daemon, argv: list[str], lines: list[bytes]) -> tuple[bytes, int]:
    import shutil

    pid, fd = pty.fork()
    if pid == 0:  # the child: the docker CLI on a terminal
        os.execve(shutil.which("docker") or "docker", ["docker", *argv], daemon.env)
    out = b""

    def read_for(seconds: float) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return

    read_for(1.5)
    for line in lines:
        os.write(fd, line)
        read_for(1.0)
    read_for(2.0)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


def test_interactive_tty(daemon: Daemon) -> None:
    out, code = _pty_session(daemon, ["run", "-it", "--rm", *NONE, "busybox", "sh"],
                             [b"echo $((6*7)); tty\r", b"exit 4\r"])
    assert code == 4, out
    assert b"42\r\n/dev/pts/0" in out
    daemon.docker("run", "-d", "--name", "ttybox", *NONE, "busybox", "sleep", "60")
    out, code = _pty_session(daemon, ["exec", "-it", "ttybox", "sh"],
                             [b"echo $((7*6)); tty\r", b"exit 3\r"])
    assert code == 3, out
    assert b"42\r\n/dev/pts/" in out


def test_cp_both_ways(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("run", "-d", "--name", "files", *NONE, "busybox", "sleep", "60")
    (tmp_path / "in.txt").write_text("to the container\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a").write_text("a\n")
    daemon.docker("cp", str(tmp_path / "in.txt"), "files:/tmp/")
    daemon.docker("cp", str(tmp_path / "dir"), "files:/tmp/newdir")
    assert daemon.docker("exec", "files", "cat", "/tmp/in.txt", "/tmp/newdir/a").stdout == \
        "to the container\na\n"
    daemon.docker("exec", "files", "sh", "-c", "mkdir -p /srv/out && echo back > /srv/out/f")
    daemon.docker("cp", "files:/srv/out", str(tmp_path / "copied"))
    assert (tmp_path / "copied" / "f").read_text() == "back\n"
    daemon.docker("cp", "files:/etc/hostname", str(tmp_path / "hn"))
    assert (tmp_path / "hn").read_text().strip()
    missing = daemon.docker("cp", "files:/no/such", str(tmp_path / "x"), check=False)
    assert missing.returncode == 1 and "Could not find the file" in missing.stderr
    changes = daemon.docker("diff", "files").stdout.splitlines()
    assert "A /tmp/in.txt" in changes


def test_volumes(daemon: Daemon) -> None:
    assert daemon.docker("volume", "create", "data").stdout == "data\n"
    assert "data" in daemon.docker("volume", "ls", "-q").stdout.split()
    daemon.docker("run", "--rm", *NONE, "-v", "data:/data", "busybox", "sh", "-c",
                  "echo kept > /data/f")
    out = daemon.docker("run", "--rm", *NONE, "-v", "data:/data", "busybox", "cat", "/data/f")
    assert out.stdout == "kept\n"
    info = json.loads(daemon.docker("volume", "inspect", "data").stdout)[0]
    assert info["Name"] == "data" and info["Driver"] == "local"
    daemon.docker("volume", "rm", "data")
    assert daemon.docker("volume", "inspect", "data", check=False).returncode == 1


def test_networks(daemon: Daemon) -> None:
    names = daemon.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert {"bridge", "host", "none"} <= set(names)
    net = json.loads(daemon.docker("network", "inspect", "bridge").stdout)[0]
    assert net["Name"] == "bridge" and net["Driver"] == "bridge"
    missing = daemon.docker("network", "inspect", "no-such-net", check=False)
    assert missing.returncode == 1


def test_stats_no_stream(daemon: Daemon) -> None:
    daemon.docker("run", "-d", "--name", "busy", *NONE, "busybox", "sleep", "60")
    out = daemon.docker("stats", "--no-stream", "--format",
                        "{{.Name}} {{.PIDs}} {{.MemUsage}}", "busy")
    name, pids, usage = out.stdout.split(" ", 2)
    assert name == "busy" and int(pids) >= 1 and "/" in usage


def test_images_save_load_tag_rmi(daemon: Daemon, tmp_path: Path) -> None:
    images = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "busybox:latest" in images
    daemon.docker("tag", "busybox", "mine/bb:1")
    assert daemon.docker("image", "inspect", "-f", "{{.RepoTags}}", "mine/bb:1").stdout \
        .strip() == "[busybox:latest mine/bb:1]"
    archive = tmp_path / "bb.tar"
    daemon.docker("save", "-o", str(archive), "mine/bb:1")
    assert archive.stat().st_size > 100_000
    assert daemon.docker("rmi", "mine/bb:1").stdout == "Untagged: mine/bb:1\n"
    loaded = daemon.docker("load", "-i", str(archive))
    assert "Loaded image: mine/bb:1" in loaded.stdout
    history = daemon.docker("history", "--format", "{{.CreatedBy}}", "mine/bb:1").stdout
    assert "bootstrap busybox" in history
    daemon.docker("rmi", "mine/bb:1")
    search = daemon.docker("search", "busybox", check=False)
    assert search.returncode == 1 and "search is not available" in search.stderr


def test_events(daemon: Daemon) -> None:
    since = str(int(time.time()) - 1)
    daemon.docker("run", "--rm", "--name", "evented", *NONE, "busybox", "true")
    out = daemon.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                        "--filter", "container=evented", "--format", "{{.Action}}")
    actions = out.stdout.split()
    assert actions[0] == "create" and "start" in actions and actions[-1] == "destroy"


def test_system_df_and_prune(daemon: Daemon) -> None:
    daemon.docker("create", "--name", "idle", *NONE, "busybox", "true")
    df = daemon.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}").stdout
    assert "Images 1" in df and "Containers 1" in df
    pruned = daemon.docker("container", "prune", "-f").stdout
    assert "Deleted Containers:" in pruned
    assert daemon.docker("ps", "-aq").stdout == ""


def test_docker_py(daemon: Daemon) -> None:
    import docker

    client = docker.DockerClient(base_url=f"unix://{daemon.sock}")
    try:
        assert client.ping() is True
        out = client.containers.run("busybox", ["echo", "from docker-py"], remove=True,
                                    network_mode="none")
        assert out == b"from docker-py\n"
        box = client.containers.run("busybox", ["sh", "-c", "echo logged; sleep 60"],
                                    detach=True, network_mode="none", name="pybox")
        assert [c.name for c in client.containers.list()] == ["pybox"]
        result = box.exec_run(["sh", "-c", "echo hi; exit 2"])
        assert (result.exit_code, result.output) == (2, b"hi\n")
        time.sleep(0.3)
        assert box.logs() == b"logged\n"
        tags = [t for image in client.images.list() for t in image.tags]
        assert "busybox:latest" in tags
        box.remove(force=True)
        assert client.containers.list(all=True) == []
    finally:
        client.close()
