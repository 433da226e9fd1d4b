"""shim.json checks and the exit codes of create failures."""

from __future__ import annotations

import json

import pytest

from isobox.errors import CannotInvoke, CommandNotFound, InvalidArgument, IsoboxError
from isobox.shim.config import ShimConfig, error_for, exit_code_for, rfc3339


def minimal(**kw):
    raw = {"id": "c1", "runtime_root": "/run/x"}
    raw.update(kw)
    return raw


def test_defaults(tmp_path):
    cfg = ShimConfig(str(tmp_path), minimal())
    assert cfg.bundle == str(tmp_path / "bundle")
    assert cfg.rootfs == str(tmp_path / "bundle" / "rootfs")
    assert cfg.log_path == str(tmp_path / "c1-json.log")
    assert cfg.runtime == "isobox-runtime"
    assert (cfg.tty, cfg.open_stdin, cfg.stdin_once) == (False, False, False)
    assert (cfg.stop_signal, cfg.stop_timeout, cfg.log_max_file) == (15, 10, 1)
    assert cfg.restart.name == "no" and cfg.rootfs_mounts == []


def test_load_full(tmp_path):
    raw = minimal(tty=True, restart={"name": "on-failure", "max_retries": 3},
                  rootfs_mounts=[{"type": "overlay", "source": "overlay",
                                  "options": ["lowerdir=/a", "upperdir=/b", "workdir=/c"]}],
                  runtime="/usr/sbin/runc", log_max_size=1000, log_max_file=3)
    (tmp_path / "shim.json").write_text(json.dumps(raw))
    cfg = ShimConfig.load(str(tmp_path))
    assert cfg.tty and cfg.restart.max_retries == 3 and cfg.runtime == "/usr/sbin/runc"
    assert cfg.rootfs_mounts[0].options[0] == "lowerdir=/a"


@pytest.mark.parametrize("raw", [
    {"runtime_root": "/x"},
    minimal(id=""),
    minimal(tty="yes"),
    minimal(stop_timeout=True),
    minimal(runtime="runc"),
    minimal(restart={"name": "sometimes"}),
    minimal(rootfs_mounts=[{"type": "tmpfs"}]),
    minimal(rootfs_mounts=[{"type": "bind", "source": "/x", "options": [1]}]),
])
def test_invalid(tmp_path, raw):
    with pytest.raises(InvalidArgument):
        ShimConfig(str(tmp_path), raw)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        ShimConfig.load(str(tmp_path))
    (tmp_path / "shim.json").write_text("{nope")
    with pytest.raises(InvalidArgument):
        ShimConfig.load(str(tmp_path))


@pytest.mark.parametrize(("message", "code"), [
    ("exec: 'nosuch': executable file not found in $PATH", 127),
    ('runc create failed: unable to start container process: exec: "/x": stat /x: '
     "no such file or directory", 127),
    ("exec: '/etc': is a directory", 126),
    ("exec: '/etc/passwd': permission denied", 126),
    ("cgroup: device or resource busy", 125),
])
def test_exit_code_for(message, code):
    assert exit_code_for(message) == code


def test_error_for():
    assert type(error_for("x", 127)) is CommandNotFound
    assert type(error_for("x", 126)) is CannotInvoke
    assert type(error_for("x", 125)) is IsoboxError
    assert error_for("x", 127).exit_code == 127


def test_rfc3339():
    assert rfc3339(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339(1_795_000_000_000_000_001) == "2026-11-18T11:06:40.000000001Z"
