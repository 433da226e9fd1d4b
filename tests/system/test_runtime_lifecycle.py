"""isobox-runtime's runc command line, driven as containerd drives it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from isobox.linux import proc


def test_run_reports_exit_status_and_output(runtime, bundle):
    path, cid = bundle(["sh", "-c", "echo out; echo err >&2; exit 7"])
    result = runtime("run", "--bundle", str(path), cid, check=False)
    assert result.returncode == 7
    assert result.stdout == "out\n"
    assert "err" in result.stderr
    assert not (runtime.root / cid).exists()


def test_create_start_state_kill_delete(runtime, bundle, tmp_path):
    path, cid = bundle(["sleep", "300"])
    pid_file = tmp_path / "pid"
    runtime("create", "--bundle", str(path), "--pid-file", str(pid_file), cid)
    state = runtime.state(cid)
    assert state["status"] == "created"
    assert state["id"] == cid
    assert state["bundle"] == str(path)
    assert state["ociVersion"]
    pid = int(pid_file.read_text())
    assert state["pid"] == pid
    # create leaves the init waiting: it has not exec'd sleep yet
    assert "sleep" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")

    runtime("start", cid)
    assert runtime.state(cid)["status"] == "running"
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    second = runtime("start", cid, check=False)
    assert second.returncode != 0 and "running" in second.stderr

    refused = runtime("delete", cid, check=False)
    assert refused.returncode != 0 and "not stopped" in refused.stderr

    runtime("kill", cid, "KILL")
    deadline = time.monotonic() + 10
    while runtime.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.state(cid)["status"] == "stopped"
    runtime("delete", cid)
    missing = runtime("state", cid, check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_delete_of_created_container_kills_waiting_init(runtime, bundle):
    path, cid = bundle(["true"])
    runtime("create", "--bundle", str(path), cid)
    pid = runtime.state(cid)["pid"]
    runtime("delete", cid)
    assert not proc.is_alive(pid)


def test_delete_force_of_running_and_missing(runtime, bundle):
    path, cid = bundle(["sleep", "300"])
    runtime("run", "-d", "--bundle", str(path), cid)
    pid = runtime.state(cid)["pid"]
    runtime("delete", "--force", cid)
    assert not proc.is_alive(pid)
    runtime("delete", "--force", "no-such-container")


def test_duplicate_id_refused(runtime, bundle):
    path, cid = bundle(["sleep", "300"])
    runtime("create", "--bundle", str(path), cid)
    again = runtime("create", "--bundle", str(path), cid, check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    assert runtime.state(cid)["status"] == "created"
    runtime("delete", "--force", cid)


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "..", ""])
def test_invalid_id_refused(runtime, bundle, bad_id):
    path, _ = bundle(["true"])
    result = runtime("create", "--bundle", str(path), bad_id, check=False)
    assert result.returncode != 0 and "invalid container id" in result.stderr


def test_missing_command_fails_create_and_leaves_nothing(runtime, bundle):
    path, cid = bundle(["/no/such/program"])
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode == 1
    assert "no such file or directory" in result.stderr
    assert not (runtime.root / cid).exists()
    result = runtime("run", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0
    path2, cid2 = bundle(["nosuchcommand"])
    result = runtime("create", "--bundle", str(path2), cid2, check=False)
    assert "executable file not found in $PATH" in result.stderr
    assert not (runtime.root / cid2).exists()


def test_bad_config_is_a_clear_error(runtime, bundle):
    def edit(spec):
        spec["process"]["user"]["uid"] = "root"

    path, cid = bundle(["true"], edit=edit)
    result = runtime("create", "--bundle", str(path), cid, check=False)
    assert result.returncode != 0
    assert "process.user.uid" in result.stderr
    assert not (runtime.root / cid).exists()


def test_list_ps_pause_resume_events(runtime, bundle):
    path, cid = bundle(["sh", "-c", "sleep 300 & sleep 301"])
    runtime("run", "-d", "--bundle", str(path), cid)
    listing = json.loads(runtime("list", "--format", "json").stdout)
    assert any(row["id"] == cid and row["status"] == "running" for row in listing)
    assert cid in runtime("list", "-q").stdout.split()
    table = runtime("list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]

    deadline = time.monotonic() + 5
    pids = []
    while len(pids) < 2 and time.monotonic() < deadline:
        pids = json.loads(runtime("ps", "--format", "json", cid).stdout)
    assert len(pids) == 2
    ps = runtime("ps", cid).stdout
    assert "sleep 300" in ps and "sleep 301" in ps

    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    assert all(proc.state_letter(p) in ("D", "S") for p in pids)
    runtime("resume", cid)
    assert runtime.state(cid)["status"] == "running"

    event = json.loads(runtime("events", "--stats", cid).stdout)
    assert event["type"] == "stats" and event["id"] == cid
    assert event["data"]["pids"]["current"] == 2
    assert event["data"]["memory"]["usage"]["usage"] > 0

    runtime("kill", "--all", cid, "KILL")
    runtime("delete", "--force", cid)


def test_exec_runs_in_the_container(runtime, bundle, tmp_path):
    def edit(spec):
        spec["hostname"] = "exechost"

    path, cid = bundle(["sleep", "300"], edit=edit)
    runtime("run", "-d", "--bundle", str(path), cid)
    out = runtime("exec", cid, "sh", "-c", "hostname; echo $$; cat /proc/1/cmdline")
    lines = out.stdout.splitlines()
    assert lines[0] == "exechost"
    assert int(lines[1]) > 1  # a pid inside the container's pid namespace
    assert lines[2].startswith("sleep")
    failed = runtime("exec", cid, "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    missing = runtime("exec", cid, "nosuchprog", check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr

    spec = {"args": ["sh", "-c", "id -u; pwd; echo $FOO"], "cwd": "/tmp",
            "env": ["PATH=/bin", "FOO=bar"], "user": {"uid": 65534, "gid": 65534}}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    out = runtime("exec", "--process", str(tmp_path / "p.json"), cid)
    assert out.stdout.split() == ["65534", "/tmp", "bar"]

    pid_file = tmp_path / "exec.pid"
    runtime("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "200")
    exec_pid = int(pid_file.read_text())
    assert exec_pid in json.loads(runtime("ps", "--format", "json", cid).stdout)
    runtime("delete", "--force", cid)
    assert not proc.is_alive(exec_pid)


def test_exec_refused_in_stopped_container(runtime, bundle):
    path, cid = bundle(["true"])
    runtime("run", "-d", "--bundle", str(path), cid)
    deadline = time.monotonic() + 10
    while runtime.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    result = runtime("exec", cid, "true", check=False)
    assert result.returncode != 0 and "stopped" in result.stderr
    runtime("delete", cid)


def test_spec_and_features(runtime, tmp_path):
    runtime("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"]
    again = runtime("spec", "--bundle", str(tmp_path), check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    features = json.loads(runtime("features").stdout)
    assert "pid" in features["linux"]["namespaces"]
    assert "createContainer" in features["hooks"]


def test_json_log_on_failure(runtime, bundle, tmp_path):
    path, cid = bundle(["nosuchcommand"])
    log = tmp_path / "log.json"
    result = runtime("--log", str(log), "--log-format", "json", "create", "--bundle", str(path),
                     cid, check=False)
    assert result.returncode == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error"
    assert "executable file not found" in entries[-1]["msg"]
    assert not (runtime.root / cid).exists()
