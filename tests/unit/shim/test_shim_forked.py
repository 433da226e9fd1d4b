"""What the monitor runs in a fork of itself (``runtimes.in_child``) and what
the warm launcher prepares before its fork (``zygote._prepare``)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from isobox.errors import CommandNotFound, IsoboxError, NotRunning
from isobox.shim import zygote
from isobox.shim.runtimes import in_child


def test_in_child_runs_in_another_process(tmp_path: Path) -> None:
    out = tmp_path / "pid"
    in_child(lambda: out.write_text(str(os.getpid())))
    assert int(out.read_text()) not in (0, os.getpid())


def test_in_child_raises_the_childs_error_kind() -> None:
    def not_running() -> None:
        raise NotRunning("container is not running")

    with pytest.raises(NotRunning, match="container is not running"):
        in_child(not_running)

    def missing() -> None:
        raise CommandNotFound("exec: nope: not found")

    with pytest.raises(CommandNotFound) as info:
        in_child(missing)
    assert info.value.exit_code == 127


def test_in_child_os_errors_become_isobox_errors(tmp_path: Path) -> None:
    def fails() -> None:
        os.rmdir(tmp_path / "absent")

    with pytest.raises(IsoboxError, match="No such file or directory") as info:
        in_child(fails)
    assert type(info.value) is IsoboxError


def test_in_child_other_exceptions_are_isobox_errors() -> None:
    def bad() -> None:
        raise ValueError("broken")

    with pytest.raises(IsoboxError, match="broken"):
        in_child(bad)


def test_in_child_a_dead_child_is_an_error() -> None:
    with pytest.raises(IsoboxError, match="died"):
        in_child(lambda: os._exit(3))


def test_prepare_sets_env_and_umask_and_returns_differing_rlimits() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the zygote's environment and umask change: do it in a fork
        code = 1
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            same = f"{resource.RLIMIT_NOFILE}:{soft}:{hard}"
            other = f"{resource.RLIMIT_CORE}:0:{resource.getrlimit(resource.RLIMIT_CORE)[1]}"
            resource.setrlimit(resource.RLIMIT_CORE,
                               (4096, resource.getrlimit(resource.RLIMIT_CORE)[1]))
            os.environ["EXTRA"] = "1"
            limits = zygote._prepare({"path": "/x:/y", "umask": "27",
                                      "rlimits": f"{same},{other},bad"})
            mask = os.umask(0)
            ok = (dict(os.environ) == {"PATH": "/x:/y"} and mask == 0o27 and
                  limits == [(resource.RLIMIT_CORE, 0,
                              resource.getrlimit(resource.RLIMIT_CORE)[1])])
            os.write(w, repr((dict(os.environ), oct(mask), limits)).encode())
            code = 0 if ok else 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        seen = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen
