"""Docker's restart policies and back-off."""

from __future__ import annotations

import pytest

from isobox.errors import InvalidArgument
from isobox.shim.config import RestartPolicy
from isobox.shim.restart import Backoff, should_restart


@pytest.mark.parametrize(("name", "retries", "code", "count", "stopped", "expected"), [
    ("no", 0, 1, 0, False, False),
    ("always", 0, 0, 5, False, True),
    ("always", 0, 1, 0, True, False),
    ("unless-stopped", 0, 0, 0, False, True),
    ("unless-stopped", 0, 0, 0, True, False),
    ("on-failure", 0, 0, 0, False, False),
    ("on-failure", 0, 1, 100, False, True),  # 0: no limit
    ("on-failure", 2, 1, 0, False, True),
    ("on-failure", 2, 1, 1, False, True),
    ("on-failure", 2, 1, 2, False, False),
    ("on-failure", 2, 137, 0, True, False),
])
def test_should_restart(name, retries, code, count, stopped, expected):
    assert should_restart(RestartPolicy(name, retries), code, count, stopped) is expected


def test_policy_validation():
    assert RestartPolicy("").name == "no"
    with pytest.raises(InvalidArgument):
        RestartPolicy("sometimes")
    with pytest.raises(InvalidArgument):
        RestartPolicy("on-failure", -1)


def test_backoff_doubles_caps_and_resets():
    b = Backoff()
    delays = [b.next(0.5) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert b.next(10.0) == 0.1  # a run of 10 s resets
    assert b.next(1.0) == 0.2
