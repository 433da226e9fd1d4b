"""Fixtures shared by every test: a private runtime root, busybox bundles,
and a leak check around each system test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isobox.linux import proc
from isobox.tools.busybox_bundle import make_bundle, make_rootfs

BIN = Path(sys.executable).parent
RUNTIME = str(BIN / "isobox-runtime")
SESSION = uuid.uuid4().hex[:8]
CGROUP_PARENT = f"/isobox-test-{SESSION}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="system tests need root")
        for item in items:
            if "tests/system" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(make_rootfs(str(tmp_path_factory.mktemp("busybox") / "rootfs")))


@pytest.fixture(scope="session")
def runtime_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-state")


class Runtime:
    """Drives the isobox-runtime binary, as containerd would."""

    def __init__(self, root: Path, binary: str = RUNTIME) -> None:
        self.root = root
        self.binary = binary

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: bytes | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a detached container inherits our stdio and would
        # hold a pipe open long after the runtime exits (as with runc).
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc_ = subprocess.run(
                [self.binary, "--root", str(self.root), *args], stdout=out, stderr=err,
                timeout=timeout, input=input, stdin=subprocess.DEVNULL if input is None else None,
                **kw)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(proc_.args, proc_.returncode,
                                                 out.read().decode(errors="replace"),
                                                 err.read().decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)


@pytest.fixture
def runtime(runtime_root: Path) -> Iterator[Runtime]:
    rt = Runtime(runtime_root)
    yield rt
    for entry in list(runtime_root.iterdir()) if runtime_root.exists() else []:
        subprocess.run([RUNTIME, "--root", str(runtime_root), "delete", "--force", entry.name],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


class BundleFactory:
    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.count = 0

    def __call__(self, args: list[str], *, edit: Callable[[dict[str, Any]], None] | None = None,
                 terminal: bool = False, own_rootfs: bool = False) -> tuple[Path, str]:
        """A bundle and a fresh container id. Shares the session's busybox rootfs
        read-only unless own_rootfs."""
        self.count += 1
        cid = f"t{SESSION}-{self.count}"
        path = self.base / cid
        path.mkdir()
        rootfs = path / "rootfs"
        if own_rootfs:
            shutil.copytree(self.rootfs, rootfs, symlinks=True)
        spec = make_bundle(str(path), args, terminal=terminal,
                           rootfs=str(rootfs if own_rootfs else self.rootfs))
        spec["root"]["readonly"] = not own_rootfs
        spec["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{cid}"
        if edit is not None:
            edit(spec)
        (path / "config.json").write_text(json.dumps(spec, indent=2))
        return path, cid


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> BundleFactory:
    return BundleFactory(tmp_path, busybox_rootfs)


def _cgroup_dirs() -> set[str]:
    found = set()
    base = Path("/sys/fs/cgroup")
    for hierarchy in base.iterdir() if base.exists() else []:
        parent = hierarchy / CGROUP_PARENT.lstrip("/")
        if parent.is_dir():
            found |= {str(p) for p in parent.rglob("*") if p.is_dir()}
    return found


def _host_mounts() -> set[str]:
    return {m.mountpoint for m in proc.mountinfo()}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """System tests must leave no mount, cgroup or process behind."""
    if "tests/system" not in str(request.node.fspath):
        yield
        return
    # Only places this test run owns: other jobs on the machine mount and
    # unmount elsewhere at the same time (the security tests check their own
    # escape targets explicitly).
    owned = (str(request.config._tmp_path_factory.getbasetemp()),  # type: ignore[attr-defined]
             "/run/isobox", "/var/lib/isobox")
    mounts_before = _host_mounts()
    yield
    leaked_mounts = {m for m in _host_mounts() - mounts_before if m.startswith(owned)}
    leaked_cgroups = _cgroup_dirs()
    for path in sorted(leaked_cgroups, key=len, reverse=True):
        try:
            os.rmdir(path)
        except OSError:
            pass
    assert not leaked_mounts, f"mounts left on the host: {leaked_mounts}"
    assert not leaked_cgroups, f"cgroups left behind: {leaked_cgroups}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = Path("/sys/fs/cgroup")
    if not base.exists():
        return
    for hierarchy in base.iterdir():
        parent = hierarchy / CGROUP_PARENT.lstrip("/")
        if parent.is_dir():
            for path in sorted(parent.rglob("*"), key=lambda p: len(str(p)), reverse=True):
                try:
                    path.rmdir()
                except OSError:
                    pass
            try:
                parent.rmdir()
            except OSError:
                pass
