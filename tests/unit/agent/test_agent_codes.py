"""Exit codes and error lines as the task API reports them."""

from __future__ import annotations

import signal

import pytest

from isobox.agent.codes import classify, describe, exit_code, failure_code
from isobox.errors import CannotInvoke, CommandNotFound, InvalidArgument


def test_exit_code_of_wait_status():
    assert exit_code(0) == 0
    assert exit_code(3 << 8) == 3
    assert exit_code(signal.SIGTERM) == 143
    assert exit_code(signal.SIGKILL) == 137


@pytest.mark.parametrize(("message", "code"), [
    ("exec: 'nope': executable file not found in $PATH", 127),
    ("exec: '/x': no such file or directory", 127),
    ("exec: '/etc': is a directory", 126),
    ("exec: '/etc/passwd': permission denied", 126),
    ("cgroup busy", 125),
])
def test_classify_by_message(message, code):
    assert classify(message) == code


def test_classify_keeps_a_valid_default_only():
    assert classify("whatever", 126) == 126
    assert classify("whatever", 1) == 125


def test_failure_code():
    assert failure_code(CommandNotFound("x")) == 127
    assert failure_code(CannotInvoke("x")) == 126
    assert failure_code(InvalidArgument("x")) == 125
    assert failure_code(OSError(2, "No such file or directory")) == 125
    assert failure_code(ValueError("x")) == 125


def test_describe_is_one_line():
    assert describe(FileNotFoundError(2, "No such file or directory", "/x")) == \
        "No such file or directory: /x"
    assert describe(InvalidArgument("bad\n  thing")) == "bad thing"
    assert describe(KeyError()) == "KeyError"
