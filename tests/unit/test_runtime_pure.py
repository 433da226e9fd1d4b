"""Pure parts of the runtime: parsing, validation, naming. No root needed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from isobox.errors import InvalidArgument
from isobox.linux import capabilities
from isobox.linux.mounts import MS_BIND, MS_NODEV, MS_RDONLY, MS_REC, MS_SLAVE, MountOptions
from isobox.oci.runtime_spec import decode_process, decode_spec, encode
from isobox.runtime.cgroup import cgroup_path, effective_resources
from isobox.runtime.query import format_list
from isobox.runtime.signals import parse_signal
from isobox.runtime.spec import default_spec
from isobox.runtime.state import Status, validate_id
from isobox.runtime.validate import namespace_map, validate_spec


def spec_bytes(**changes) -> bytes:
    spec = default_spec(args=["true"], terminal=False)
    spec.update(changes)
    return json.dumps(spec).encode()


def test_decode_keeps_oci_names_and_ignores_unknown_fields():
    raw = json.loads(spec_bytes())
    raw["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    raw["x-vendor-extension"] = {"anything": 1}
    spec = decode_spec(json.dumps(raw).encode())
    assert spec.linux.uid_mappings[0].host_id == 1000
    again = json.loads(encode(spec))
    assert again["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert "x-vendor-extension" not in again


@pytest.mark.parametrize("raw, where", [
    (b'{"ociVersion": 1}', "ociVersion"),
    (b'{"ociVersion": "1.0", "process": {"user": {"uid": "0"}}}', "process.user.uid"),
    (b'{"ociVersion": "1.0", "mounts": [{"source": "x"}]}', "destination"),
    (b"not json", "not valid JSON"),
])
def test_decode_errors_name_the_field(raw, where):
    with pytest.raises(InvalidArgument, match=where.replace("$", r"\$")):
        decode_spec(raw)


def test_decode_process():
    proc = decode_process(b'{"args": ["sh"], "cwd": "/", "user": {"uid": 5, "gid": 6}}')
    assert proc.user.uid == 5 and proc.args == ["sh"]


def test_mount_options_split():
    opts = MountOptions(["rbind", "ro", "nodev", "rslave", "mode=755", "size=1m", "tmpcopyup"])
    assert opts.flags == MS_BIND | MS_REC | MS_RDONLY | MS_NODEV
    assert opts.propagation == [MS_SLAVE | MS_REC]
    assert opts.data == "mode=755,size=1m"
    assert MountOptions(["ro", "rw"]).flags & MS_RDONLY == 0


@pytest.mark.parametrize("text, number", [
    ("KILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM), ("9", 9), ("hup", signal.SIGHUP),
    ("SIGRTMIN+3", signal.SIGRTMIN + 3), ("RTMAX-1", signal.SIGRTMAX - 1),
])
def test_parse_signal(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "0", "999", "SIGRTMIN+99"])
def test_parse_signal_rejects(text):
    with pytest.raises(InvalidArgument):
        parse_signal(text)


def test_capability_parsing():
    assert capabilities.parse(["CAP_CHOWN", "kill"], 40) == (1 << 0) | (1 << 5)
    assert capabilities.parse(["CAP_CHECKPOINT_RESTORE"], 39) == 0  # newer than the kernel
    with pytest.raises(ValueError, match="CAP_BOGUS"):
        capabilities.parse(["CAP_BOGUS"], 40)
    assert capabilities.names_of((1 << 0) | (1 << 5)) == ["CAP_CHOWN", "CAP_KILL"]


@pytest.mark.parametrize("given, expected", [
    (None, "/isobox/c1"), ("/a/b", "/a/b"), ("a/b", "/a/b"),
    ("system.slice:docker:c1", "/system.slice/docker-c1.scope"),
])
def test_cgroup_path(given, expected):
    assert cgroup_path("c1", given) == expected


def test_cgroup_path_rejects_climbing():
    with pytest.raises(InvalidArgument):
        cgroup_path("c1", "/a/../../etc")


def test_effective_resources_adds_runc_default_device_rules():
    raw = json.loads(spec_bytes())
    raw["linux"]["devices"] = [{"type": "c", "path": "/dev/x", "major": 10, "minor": 200}]
    spec = decode_spec(json.dumps(raw).encode())
    rules = effective_resources(spec).devices
    assert rules[0].allow is False
    assert any(r.allow and r.major == 1 and r.minor == 3 for r in rules)
    assert any(r.allow and r.major == 10 and r.minor == 200 for r in rules)


def test_effective_resources_writes_each_rule_in_force_once():
    raw = json.loads(spec_bytes())
    null = {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ptys = {"allow": True, "type": "c", "major": 136, "access": "wrm"}
    raw["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}, null, ptys]}
    raw["linux"]["devices"] = [{"type": "c", "path": "/dev/null", "major": 1, "minor": 3}]
    rules = effective_resources(decode_spec(json.dumps(raw).encode())).devices
    keys = [(r.allow, r.type, r.major, r.minor) for r in rules]
    # What the config already allows (an engine sending runc's list) is not
    # added again, whatever the order of the access letters.
    assert keys.count((True, "c", 1, 3)) == 1
    assert keys.count((True, "c", 136, None)) == 1
    assert (True, "c", 1, 5) in keys
    # A deny after an allow puts it out of force: then it is added again.
    raw["linux"]["resources"]["devices"].append({"allow": False, "type": "c", "major": 1,
                                                  "minor": 3, "access": "rwm"})
    rules = effective_resources(decode_spec(json.dumps(raw).encode())).devices
    keys = [(r.allow, r.type, r.major, r.minor) for r in rules]
    assert keys.count((True, "c", 1, 3)) == 2


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a b", "x\n"])
def test_container_ids(bad):
    with pytest.raises(InvalidArgument):
        validate_id(bad)
    validate_id("ok-id_1.2+3")


def test_status_predicates():
    assert Status.CREATED.can_start() and not Status.RUNNING.can_start()
    assert Status.PAUSED.can_kill() and not Status.STOPPED.can_kill()
    assert Status.STOPPED.can_delete() and not Status.RUNNING.can_delete()


def test_validate_spec(tmp_path):
    (tmp_path / "rootfs").mkdir()
    spec = decode_spec(spec_bytes())
    assert validate_spec(spec, str(tmp_path), 40) == str(tmp_path / "rootfs")
    raw = json.loads(spec_bytes())
    raw["linux"]["namespaces"] = [{"type": "pid"}, {"type": "pid"}]
    with pytest.raises(InvalidArgument, match="twice"):
        namespace_map(decode_spec(json.dumps(raw).encode()))
    raw["linux"]["namespaces"] = [{"type": "pid"}]
    with pytest.raises(InvalidArgument, match="mount namespace"):
        validate_spec(decode_spec(json.dumps(raw).encode()), str(tmp_path), 40)
    raw = json.loads(spec_bytes())
    raw["process"]["rlimits"] = [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]
    with pytest.raises(InvalidArgument, match="RLIMIT_BOGUS"):
        validate_spec(decode_spec(json.dumps(raw).encode()), str(tmp_path), 40)
    raw = json.loads(spec_bytes())
    raw["hooks"] = {"prestart": [{"path": "relative/hook"}]}
    with pytest.raises(InvalidArgument, match="not absolute"):
        validate_spec(decode_spec(json.dumps(raw).encode()), str(tmp_path), 40)
    with pytest.raises(InvalidArgument, match="rootfs"):
        validate_spec(decode_spec(spec_bytes()), str(tmp_path / "nope"), 40)


def test_format_list():
    rows = [{"id": "a", "pid": 1, "status": "running", "bundle": "/b", "created": "t",
             "owner": "root"}]
    table = format_list(rows, "table", False).splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert table[1].split() == ["a", "1", "running", "/b", "t", "root"]
    assert format_list(rows, "table", True) == "a\n"
    assert json.loads(format_list(rows, "json", False)) == rows


def test_default_spec_round_trips():
    spec = decode_spec(spec_bytes())
    assert json.loads(encode(spec))["process"]["args"] == ["true"]


def test_container_start_path_is_import_light():
    """The runtime imports neither click nor anything of the engine."""
    code = ("import sys, isobox.runtime.cli, isobox.runtime.create, isobox.runtime.exec, "
            "isobox.runtime.lifecycle; print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    for heavy in ("click", "httpx", "aiohttp", "asyncio", "isobox.cli", "isobox.daemon"):
        assert heavy not in loaded
