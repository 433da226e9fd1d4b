"""What the warm launcher prepares before its fork (``zygote._prepare``)."""

from __future__ import annotations

import os
import resource

from isobox.shim import zygote


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
