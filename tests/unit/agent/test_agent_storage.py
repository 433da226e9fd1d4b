"""The guest's disks and mounts as data: serial lookup on a fake sysfs, and the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from isobox.agent import storage
from isobox.agent.paths import Paths
from isobox.agent.requests import parse_storage
from isobox.errors import InvalidArgument, NotFound


def fake_sys(root: Path, disks: dict[str, bytes]) -> Path:
    for name, serial in disks.items():
        d = root / "block" / name
        d.mkdir(parents=True)
        if serial:
            (d / "serial").write_bytes(serial)
    return root


def test_find_disk_by_serial(tmp_path):
    sys_root = fake_sys(tmp_path / "sys", {"vda": b"layer-a\n", "vdb": b"upper\n",
                                           "sda": b"upper\n", "vdc": b""})
    assert storage.find_disk("upper", str(sys_root), "/dev") == "/dev/vdb"
    assert storage.find_disk("layer-a", str(sys_root), "/x") == "/x/vda"
    assert storage.find_disk("layer", str(sys_root)) is None
    assert storage.find_disk("upper", str(tmp_path / "nothing")) is None


def test_a_hotplugged_scsi_disk_is_found_by_its_vpd_serial(tmp_path):
    sys_root = fake_sys(tmp_path, {"vda": b"l0\n", "sda": b"", "sdb": b""})
    for name, serial in (("sda", b"l1"), ("sdb", b"upper")):
        device = sys_root / "block" / name / "device"
        device.mkdir()
        (device / "vpd_pg80").write_bytes(b"\x00\x80\x00" + bytes([len(serial)]) + serial)
    assert storage.find_disk("upper", str(sys_root)) == "/dev/sdb"
    assert storage.find_disk("l1", str(sys_root)) == "/dev/sda"
    assert storage.find_disk("l0", str(sys_root)) == "/dev/vda"
    assert storage.find_disk("l2", str(sys_root)) is None


def test_a_long_serial_matches_what_the_device_kept(tmp_path):
    digest = "0123456789abcdef0123456789abcdef"
    sys_root = fake_sys(tmp_path, {"vda": digest[:20].encode() + b"\n"})
    assert storage.find_disk(digest, str(sys_root)) == "/dev/vda"


def test_wait_for_a_missing_disk_gives_up(tmp_path):
    with pytest.raises(NotFound, match="nope"):
        storage.wait_for_disk("nope", str(tmp_path), timeout=0.05)


def test_overlay_lists_the_top_layer_first():
    assert storage.overlay_options(["/l/0", "/l/1", "/l/2"], "/u/diff", "/u/work") == \
        "lowerdir=/l/2:/l/1:/l/0,upperdir=/u/diff,workdir=/u/work"
    with pytest.raises(InvalidArgument):
        storage.overlay_options(["/a:b"], "/u", "/w")
    with pytest.raises(InvalidArgument, match="too many layers"):
        storage.overlay_options([f"/run/isobox/layers/{i}" for i in range(300)], "/u", "/w")


def test_plan_with_layers_upper_disk_and_shares():
    paths = Paths("/run/isobox")
    req = parse_storage({"layers": [{"serial": "l0", "fstype": "erofs"},
                                    {"serial": "l1", "fstype": "ext4"}],
                         "upper": {"serial": "up", "fstype": "ext4"},
                         "shares": [{"tag": "v0", "readonly": True}, {"tag": "v1"}]})
    plan = storage.plan(req, paths, {"l0": "/dev/vda", "l1": "/dev/vdb", "up": "/dev/vdc"})
    rows = [(m.source, m.target, m.fstype, m.flags, m.data, m.subdirs) for m in plan]
    ninep = "trans=virtio,version=9p2000.L,msize=262144"
    assert rows == [
        ("/dev/vda", "/run/isobox/layers/0", "erofs", storage.MS_RDONLY, "", ()),
        ("/dev/vdb", "/run/isobox/layers/1", "ext4", storage.MS_RDONLY, "", ()),
        ("/dev/vdc", "/run/isobox/upper", "ext4", 0, "", ("diff", "work")),
        ("overlay", "/run/isobox/rootfs", "overlay", 0,
         "lowerdir=/run/isobox/layers/1:/run/isobox/layers/0,"
         "upperdir=/run/isobox/upper/diff,workdir=/run/isobox/upper/work", ()),
        ("v0", "/run/isobox/shares/v0", "9p", storage.MS_RDONLY, ninep, ()),
        ("v1", "/run/isobox/shares/v1", "9p", 0, ninep, ()),
    ]


def test_plan_without_layers_or_upper_disk():
    paths = Paths("/st")
    plan = storage.plan(parse_storage({}), paths, {})
    rows = [(m.source, m.target, m.fstype, m.flags, m.data, m.subdirs) for m in plan]
    assert rows == [
        ("tmpfs", "/st/layers/empty", "tmpfs", storage.MS_RDONLY, "mode=0755", ()),
        ("tmpfs", "/st/upper", "tmpfs", 0, "mode=0755", ("diff", "work")),
        ("overlay", "/st/rootfs", "overlay", 0,
         "lowerdir=/st/layers/empty,upperdir=/st/upper/diff,workdir=/st/upper/work", ()),
    ]


def test_storage_is_set_up_once_per_boot(tmp_path, monkeypatch):
    applied = []
    monkeypatch.setattr(storage, "apply", lambda mounts: applied.append(mounts) or
                        [m.target for m in mounts])
    st = storage.Storage(Paths(str(tmp_path)), sys_root=str(fake_sys(tmp_path / "sys", {})))
    assert st.setup(parse_storage({})) == str(tmp_path / "rootfs")
    assert st.setup(parse_storage({})) == str(tmp_path / "rootfs")
    assert len(applied) == 1
    assert not st.upper_disk
