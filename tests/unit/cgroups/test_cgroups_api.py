"""The package surface: paths, version detection, hierarchy discovery, dispatch."""

from __future__ import annotations

from pathlib import Path

import pytest

import isobox.cgroups as cg
from isobox.cgroups import Hierarchy, V1Manager, V2Manager, detect_version, new_manager
from isobox.cgroups._base import parse_mountinfo
from isobox.errors import InvalidArgument, Unavailable

MOUNTINFO = """\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
34 31 0:31 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
35 31 0:32 / /sys/fs/cgroup/unified rw shared:12 - cgroup2 cgroup2 rw,nsdelegate
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw shared:13 - cgroup cgroup rw,net_cls,net_prio
37 24 0:30 /docker/abc /mnt/my\\040mem rw shared:10 - cgroup cgroup rw,memory
38 31 0:34 / /sys/fs/cgroup/cpuset rw shared:14 - cgroup cgroup rw,cpuset,clone_children
"""


def test_public_names() -> None:
    for name in ("detect_version", "new_manager", "Manager", "hierarchies", "Hierarchy"):
        assert name in cg.__all__
        assert hasattr(cg, name)


@pytest.mark.parametrize(("raw", "want"), [
    ("/isobox/abc", "/isobox/abc"),
    ("isobox/abc", "/isobox/abc"),
    ("//isobox/./abc/", "/isobox/abc"),
])
def test_normalize_path(raw: str, want: str) -> None:
    assert cg.normalize_path(raw) == want


@pytest.mark.parametrize("raw", ["/isobox/../etc", "..", "", "/", "a/\0b"])
def test_normalize_path_refuses(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        cg.normalize_path(raw)


def test_new_manager_refuses_dotdot(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory")
    with pytest.raises(InvalidArgument, match=r"\.\."):
        new_manager("/isobox/../../etc", root=str(tmp_path), version=2)


def test_parse_mountinfo() -> None:
    hs = parse_mountinfo(MOUNTINFO)
    by_name = {h.name: h for h in hs}
    assert by_name["cpu,cpuacct"] == Hierarchy("/sys/fs/cgroup/cpu,cpuacct", ["cpu", "cpuacct"])
    assert by_name["cpu,cpuacct"].controllers == ["cpu", "cpuacct"]
    assert by_name["name=systemd"].controllers == ["name=systemd"]
    assert by_name["cpuset"].controllers == ["cpuset"]
    assert by_name["net_cls,net_prio"].mountpoint == "/sys/fs/cgroup/net_cls,net_prio"
    # The memory hierarchy is mounted twice: the mount of its root wins.
    assert by_name["memory"].mountpoint == "/sys/fs/cgroup/memory"
    assert by_name[""] == Hierarchy("/sys/fs/cgroup/unified", [], 2)
    assert hs[-1].version == 2  # v1 first, then cgroup2
    assert all(h.version == 1 for h in hs[:-1])


def test_parse_mountinfo_unescapes_and_keeps_sub_root() -> None:
    text = "37 24 0:30 /docker/abc /mnt/my\\040mem rw shared:10 - cgroup cgroup rw,memory\n"
    (h,) = parse_mountinfo(text)
    assert h.mountpoint == "/mnt/my mem"
    assert h.root == "/docker/abc"


def test_hierarchies_reads_file(tmp_path: Path) -> None:
    f = tmp_path / "mountinfo"
    f.write_text(MOUNTINFO)
    assert [h.name for h in cg.hierarchies(str(f))][:2] == ["cpu,cpuacct", "memory"]
    with pytest.raises(Unavailable, match="mountinfo-missing"):
        cg.hierarchies(str(tmp_path / "mountinfo-missing"))


def test_detect_version(tmp_path: Path) -> None:
    assert detect_version(str(tmp_path)) == 1
    (tmp_path / "cgroup.controllers").write_text("cpu memory")
    assert detect_version(str(tmp_path)) == 2
    with pytest.raises(Unavailable):
        detect_version(str(tmp_path / "nothing"))


def test_new_manager_dispatch(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory")
    m2 = new_manager("x/y", root=str(tmp_path))
    assert isinstance(m2, V2Manager)
    assert (m2.version, m2.path) == (2, "/x/y")
    assert m2.host_paths() == {"": str(tmp_path / "x" / "y")}

    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    m1 = new_manager("/x/y", version=1, mountinfo=str(info))
    assert isinstance(m1, V1Manager)
    assert m1.version == 1
    paths = m1.host_paths()
    assert paths["cpu,cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/x/y"
    assert paths["name=systemd"] == "/sys/fs/cgroup/systemd/x/y"
    assert paths[""] == "/sys/fs/cgroup/unified/x/y"
    assert m1.controller_path("cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/x/y"


def test_new_manager_v1_without_hierarchies(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("35 31 0:32 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    with pytest.raises(Unavailable, match="no cgroup v1 hierarchy"):
        new_manager("/x", version=1, mountinfo=str(info))


def test_new_manager_bad_version() -> None:
    with pytest.raises(InvalidArgument, match="version 3"):
        new_manager("/x", version=3)


def test_import_is_light() -> None:
    import subprocess
    import sys
    code = ("import sys, isobox.cgroups; "
            "bad = [m for m in ('msgspec', 'isobox.oci.runtime_spec', 'json', 'asyncio') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == "[]"
