"""The Python the guest runs: the host's interpreter, the standard library
modules the agent imports, and the ``isobox`` modules and dependencies it
imports, found by importing them in a subprocess (``pyscan``) rather than by
a hand-kept list that would go stale."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import isobox
from isobox.errors import IsoboxError, Unavailable

#: Where the guest finds isobox and its dependencies: on ``-I``'s sys.path.
GUEST_LIB = "/usr/lib/python3.11"
#: Imported only on some paths (errors, ``-m``); shipped whatever the scan sees.
EXTRA_MODULES = ("runpy", "traceback", "linecache", "tokenize", "encodings.ascii",
                 "encodings.latin_1", "encodings.utf_8", "ctypes", "json", "subprocess",
                 "signal", "select", "selectors", "socket", "fcntl", "termios", "tty", "pty",
                 "threading", "logging")
#: Host customisations the guest does not want.
EXCLUDED_MODULES = ("__main__", "sitecustomize", "usercustomize", "_distutils_hack")
_SCAN_TIMEOUT = 120.0


@dataclass(frozen=True)
class GuestFile:
    host: str
    guest: str
    pyc: str  #: a compiled file to ship at the guest's cache path; "" if none


def source_root() -> str:
    """The directory that holds the ``isobox`` package on the host."""
    return os.path.dirname(os.path.dirname(os.path.abspath(isobox.__file__)))


def dependency_dirs() -> list[str]:
    """Where isobox's own dependencies are installed (the venv's site-packages)."""
    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def scan(interpreter: str, roots: Sequence[str], workdir: str) -> list[GuestFile]:
    """Every module file the ``roots`` need when run by ``interpreter``, with
    unchecked-hash bytecode compiled into ``workdir``."""
    job = {"src": source_root(), "site": dependency_dirs(), "roots": list(roots),
           "extra": list(EXTRA_MODULES), "exclude": list(EXCLUDED_MODULES),
           "guest_lib": GUEST_LIB, "out": workdir}
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyscan.py")
    try:
        res = subprocess.run([interpreter, "-I", script], input=json.dumps(job).encode(),
                             capture_output=True, timeout=_SCAN_TIMEOUT,
                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    except FileNotFoundError:
        raise Unavailable(f"guest interpreter {interpreter} not found") from None
    try:
        report = json.loads(res.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (res.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise IsoboxError(f"scanning the guest's Python modules failed: {detail}") from None
    if "error" in report:
        raise Unavailable(f"the guest agent does not import: {report['error']}")
    return [GuestFile(host, guest, pyc) for host, guest, pyc in report["files"]]


def pyc_path(guest_source: str) -> str:
    return importlib.util.cache_from_source(guest_source)


def package_data() -> Iterator[tuple[str, str]]:
    """(host, guest) of isobox's data files (the seccomp profile and such)."""
    src = source_root()
    for top, dirs, names in os.walk(os.path.join(src, "isobox")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if not name.endswith((".py", ".pyc", ".pyi")):
                host = os.path.join(top, name)
                yield host, os.path.join(GUEST_LIB, os.path.relpath(host, src))


def source_signature() -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every isobox file and dependency directory:
    what decides which Python files the guest gets and what they hold."""
    found = []
    for top, dirs, names in os.walk(os.path.join(source_root(), "isobox")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            st = os.stat(os.path.join(top, name))
            found.append((os.path.join(top, name), st.st_size, st.st_mtime_ns))
    for directory in dependency_dirs():
        st = os.stat(directory)
        found.append((directory, st.st_size, st.st_mtime_ns))
    return found
