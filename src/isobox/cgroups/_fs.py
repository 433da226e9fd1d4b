"""Reading and writing cgroupfs interface files, with errors translated.

Every write names the file and the value in its message, so that a refused
limit reads as one line: ``cannot write '-5' to .../pids.max: Invalid argument``.
"""

from __future__ import annotations

import errno
import os
import time

from isobox.errors import Conflict, InvalidArgument, IsoboxError, NotFound, Unavailable

#: What cgroup v2 (and runc's stats) use for "no limit".
UNLIMITED = 2**64 - 1

_INVALID = {errno.EINVAL, errno.ERANGE, errno.EOVERFLOW, errno.EBUSY}


def write(dirpath: str, name: str, value: str) -> None:
    """Write ``value`` to the interface file ``dirpath/name`` in one write()."""
    path = os.path.join(dirpath, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as exc:
        raise write_error(exc, path, value) from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise write_error(exc, path, value) from exc
    finally:
        os.close(fd)


def write_error(exc: OSError, path: str, value: str) -> IsoboxError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOENT:
        return Unavailable(f"cannot write {value!r} to {path}: the file does not exist "
                           "(not supported by this kernel, or the controller is not enabled)")
    msg = f"cannot write {value!r} to {path}: {reason}"
    if exc.errno in _INVALID:
        return InvalidArgument(msg)
    return Unavailable(msg)


def read(dirpath: str, name: str) -> str:
    """The stripped contents of ``dirpath/name``; Unavailable when unreadable."""
    path = os.path.join(dirpath, name)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except FileNotFoundError as exc:
        raise Unavailable(f"cannot read {path}: the file does not exist") from exc
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc


def read_opt(dirpath: str, name: str) -> str | None:
    """Like read(), but None when the file does not exist."""
    try:
        with open(os.path.join(dirpath, name), encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return read(dirpath, name)  # raises Unavailable with the reason


def to_int(text: str) -> int:
    """An integer from a cgroup file; "max" is UNLIMITED."""
    if text == "max":
        return UNLIMITED
    return int(text)


def read_int(dirpath: str, name: str) -> int | None:
    """The integer in a one-value file, or None when the file is missing or odd."""
    text = read_opt(dirpath, name)
    if text is None:
        return None
    try:
        return to_int(text)
    except ValueError:
        return None


def read_keyed(dirpath: str, name: str) -> dict[str, int] | None:
    """A flat-keyed file ("key value" per line) such as memory.stat or cpu.stat."""
    text = read_opt(dirpath, name)
    if text is None:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = to_int(parts[1])
            except ValueError:
                continue
    return out


def exists(dirpath: str, name: str) -> bool:
    return os.path.exists(os.path.join(dirpath, name))


def procs(dirpath: str) -> set[int]:
    """Every pid in cgroup.procs of ``dirpath`` and of each cgroup below it."""
    found: set[int] = set()
    for sub, _dirs, _files in os.walk(dirpath):
        text = read_opt(sub, "cgroup.procs")
        if text:
            found.update(int(p) for p in text.split() if p.isdigit())
    return found


def attach(dirpath: str, pid: int) -> None:
    """Move ``pid`` into the cgroup at ``dirpath``."""
    path = os.path.join(dirpath, "cgroup.procs")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise write_error(exc, path, str(pid)) from exc
    try:
        os.write(fd, str(pid).encode())
    except ProcessLookupError as exc:
        raise NotFound(f"cannot move process {pid} into {dirpath}: no such process") from exc
    except OSError as exc:
        raise write_error(exc, path, str(pid)) from exc
    finally:
        os.close(fd)


def enter(dirpath: str, name: str) -> None:
    """Move the calling thread (``tasks``, ``cgroup.threads``) or process
    (``cgroup.procs``) into the cgroup at ``dirpath``: pid 0 names the writer."""
    path = os.path.join(dirpath, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _enter_error(exc, dirpath) from exc
    try:
        os.write(fd, b"0")
    except OSError as exc:
        raise _enter_error(exc, dirpath) from exc
    finally:
        os.close(fd)


def _enter_error(exc: OSError, dirpath: str) -> IsoboxError:
    if exc.errno == errno.ENOENT:
        return NotFound(f"cannot join cgroup {dirpath}: it does not exist")
    msg = f"cannot join cgroup {dirpath}: {os.strerror(exc.errno or 0)}"
    return InvalidArgument(msg) if exc.errno in _INVALID else Unavailable(msg)


def makedirs(path: str) -> list[str]:
    """mkdir -p; returns the directories it created, outermost first."""
    missing: list[str] = []
    cur = path
    while not os.path.isdir(cur):
        missing.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    created: list[str] = []
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        except OSError as exc:
            raise Unavailable(f"cannot create cgroup {d}: {os.strerror(exc.errno or 0)}") from exc
        created.append(d)
    return created


def _rmdir(path: str, deadline: float) -> None:
    delay = 0.005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            raise Conflict(f"cannot remove cgroup {path}: {os.strerror(exc.errno or 0)}"
                           + (" (processes still inside)" if exc.errno == errno.EBUSY else "")
                           ) from exc


def remove_tree(path: str, timeout: float) -> None:
    """rmdir ``path`` and every cgroup below it, leaf first, retrying EBUSY until timeout."""
    try:
        os.rmdir(path)  # the usual case: a leaf whose tasks are gone
        return
    except FileNotFoundError:
        return
    except OSError:
        pass  # children, or tasks still exiting: walk and retry below
    deadline = time.monotonic() + timeout
    for sub, _dirs, _files in os.walk(path, topdown=False):
        _rmdir(sub, deadline)


def remove_if_empty(path: str) -> None:
    """rmdir an intermediate cgroup we created; leave it when it is still in use."""
    try:
        os.rmdir(path)
    except OSError:
        pass
