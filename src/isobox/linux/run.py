"""The one subprocess helper: argv lists only, explicit env, stdin closed by
default, a timeout, and the command logged at debug."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from isobox.linux.lazylog import get_logger

log = get_logger(__name__)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        input: bytes | None = None, timeout: float | None = 60.0,
        check: bool = True, capture: bool = True, cwd: str | None = None,
        pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[bytes]:
    log.debug("run %s", list(argv))
    return subprocess.run(
        list(argv), env=dict(env) if env is not None else None, input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        timeout=timeout, check=check, cwd=cwd, pass_fds=tuple(pass_fds),
    )
