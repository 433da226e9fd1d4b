"""A private dockerd for tests that compare with Docker (its own data root,
exec root and socket: isobox.tools.private_dockerd), skipped with the reason
when it cannot run here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from isobox.tools.private_dockerd import PrivateDockerd


def running_dockerd(timeout: float = 60) -> Iterator[PrivateDockerd]:
    """For a fixture: ``yield from running_dockerd()``; stopped and removed after."""
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd or docker not installed (Debian: apt-get install docker.io)")
    # A short path: the unix sockets under it must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="isobox-dockerd-", dir="/tmp"))
    daemon = PrivateDockerd(base)
    try:
        why = daemon.start(("overlay2", "vfs"), timeout=timeout)
        if why is not None:
            pytest.skip(f"dockerd could not start:\n{why}")
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)
