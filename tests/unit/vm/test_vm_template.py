"""VM templates as data: which VMs have a shape, what the key follows, and
that a template and its restores get the same devices (a restore fails
otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isobox.vm import qemu, template
from isobox.vm.settings import VmSettings


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    made = {}
    for name in ("vmlinux", "init.cpio", "qemu-system-x86_64"):
        path = tmp_path / name
        path.write_bytes(name.encode())
        made[name] = str(path)
    monkeypatch.setattr(qemu.shutil, "which", lambda name: made["qemu-system-x86_64"])
    return made


def settings(files: dict[str, str], tmp_path: Path, **change: object) -> VmSettings:
    raw: dict[str, object] = {
        "kernel": files["vmlinux"], "initrd": files["init.cpio"], "accel": "tcg",
        "memory_mb": 256, "cpus": 1, "templates": str(tmp_path / "templates"),
        "console_log": str(tmp_path / "c1" / "console.log"),
        "disks": [{"path": "/d/l0.erofs", "serial": "l0"},
                  {"path": "/d/upper.ext4", "serial": "upper", "readonly": False,
                   "fstype": "ext4", "role": "upper"}],
        "shares": [{"tag": "files", "path": str(tmp_path / "c1" / "guest-files"),
                    "readonly": True}],
        "nics": [{"tap": "ibt0", "mac": "02:42:ac:11:00:02", "address": "172.17.0.2/16"}],
    }
    raw.update(change)
    return VmSettings(raw)


def test_shapes(files: dict[str, str], tmp_path: Path) -> None:
    shape = template.shape_of(settings(files, tmp_path))
    assert shape is not None and shape.nic and shape.share_tag == "files"
    assert shape.name() == "tcg-m256-c1-n1-s1"
    assert template.shape_of(settings(files, tmp_path, nics=[])).name() == "tcg-m256-c1-n0-s1"
    assert template.shape_of(settings(files, tmp_path, templates=None)) is None
    two_nics = [{"tap": f"ibt{i}", "mac": f"02:42:ac:11:00:0{i}", "address": f"10.{i}.0.2/16"}
                for i in (1, 2)]
    assert template.shape_of(settings(files, tmp_path, nics=two_nics)) is None
    two_shares = [{"tag": t, "path": "/x"} for t in ("files", "s1")]
    assert template.shape_of(settings(files, tmp_path, shares=two_shares)) is None


def test_the_key_follows_the_files_and_the_size_not_the_container(
        files: dict[str, str], tmp_path: Path) -> None:
    base = template.shape_of(settings(files, tmp_path))
    assert base is not None
    other_container = template.shape_of(settings(files, tmp_path, disks=[], nics=[
        {"tap": "ibt9", "mac": "02:42:ac:11:00:09", "address": "172.17.0.9/16"}]))
    assert other_container is not None and other_container.key() == base.key()
    bigger = template.shape_of(settings(files, tmp_path, memory_mb=512))
    assert bigger is not None and bigger.key() != base.key()
    before = base.key()
    os.utime(files["init.cpio"], ns=(1, 1))  # a rebuilt agent image
    assert base.key() != before


def devices(argv: list[str]) -> list[str]:
    """Each -device, without the tap backend (the one thing a restore adds)."""
    found = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    return [",".join(p for p in d.split(",") if not p.startswith(("netdev=", "mac=")))
            for d in found]


def test_a_restore_has_the_templates_devices(files: dict[str, str], tmp_path: Path) -> None:
    s = settings(files, tmp_path)
    shape = template.shape_of(s)
    assert shape is not None
    saved = template.Template("t", str(tmp_path / "templates" / "t"))
    made = qemu.command(template._spec(shape, saved.ram, making=True, console_log=None,
                                       share_path="/tpl/share", nic=None))
    restored = qemu.command(template.restore_spec(shape, saved, s))
    assert devices(made) == devices(restored)
    assert "vmgenid,guid=auto" in devices(made)  # a new generation ID per restore: reseed
    assert any(d.startswith("virtio-scsi-pci") for d in devices(made))
    assert not any(d.startswith(("virtio-blk", "scsi-hd")) for d in devices(made))
    memory = [argv[argv.index("-object") + 1] for argv in (made, restored)]
    assert memory[0].endswith("share=on") and memory[1].endswith("share=off")
    assert f"mem-path={saved.ram}" in memory[1]
    assert "-incoming" not in made and restored[restored.index("-incoming") + 1] == "defer"
    tap = [restored[i + 1] for i, a in enumerate(restored) if a == "-netdev"]
    assert tap == ["tap,id=net0,ifname=ibt0,script=no,downscript=no"]
    assert "mac=02:42:ac:11:00:02" in " ".join(restored)
    assert "-netdev" not in made  # the template's NIC has no backend
    assert made[made.index("-append") + 1] == restored[restored.index("-append") + 1]


def test_hotplugged_disks() -> None:
    commands = qemu.hotplug_disk_commands(1, qemu.Disk("/d/upper.ext4", "upper", False))
    assert [name for name, _ in commands] == ["blockdev-add", "device_add"]
    node, device = commands[0][1], commands[1][1]
    assert node["read-only"] is False and node["file"] == {
        "driver": "file", "filename": "/d/upper.ext4", "read-only": False}
    assert device == {"driver": "scsi-hd", "id": "hpdisk1", "bus": "scsi0.0", "scsi-id": 0,
                      "lun": 1, "drive": node["node-name"], "serial": "upper"}
