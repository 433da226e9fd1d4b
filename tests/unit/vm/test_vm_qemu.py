"""The QEMU command line."""

from __future__ import annotations

import pytest

from isobox.errors import InvalidArgument, Unavailable
from isobox.vm import qemu
from isobox.vm.qemu import Disk, Nic, Share, VmSpec


@pytest.fixture(autouse=True)
def fake_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu.shutil, "which", lambda name: f"/usr/bin/{name}")


def spec(**kw: object) -> VmSpec:
    base: dict[str, object] = dict(kernel="/k/vmlinux", initrd="/k/init.cpio", memory_mb=512,
                                   cpus=2, accel="tcg", agent_fd=5)
    base.update(kw)
    return VmSpec(**base)  # type: ignore[arg-type]


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_minimal_vm() -> None:
    argv = qemu.command(spec())
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in argv
    assert "-nographic" not in argv
    assert pairs(argv, "-display") == ["none"]
    assert pairs(argv, "-M") == ["pc"]
    assert pairs(argv, "-accel") == ["tcg,tb-size=64"]  # a bounded translation cache
    assert pairs(argv, "-m") == ["512"] and pairs(argv, "-smp") == ["2"]
    assert pairs(argv, "-kernel") == ["/k/vmlinux"] and pairs(argv, "-initrd") == ["/k/init.cpio"]
    cmdline = pairs(argv, "-append")[0]
    assert "panic=-1" in cmdline and "console=ttyS0" in cmdline
    assert pairs(argv, "-serial") == ["null"]
    assert "socket,id=agent,fd=5" in pairs(argv, "-chardev")
    assert "virtserialport,bus=serial0.0,chardev=agent,name=isobox.agent" in pairs(argv, "-device")
    assert "-mon" not in argv


def test_kvm_uses_the_host_cpu_and_qmp_and_console() -> None:
    argv = qemu.command(spec(accel="kvm", qmp_fd=6, console_log="/run/x,y/console.log",
                             cmdline_extra="loglevel=7"))
    assert pairs(argv, "-cpu") == ["host"]
    assert "socket,id=qmp,fd=6" in pairs(argv, "-chardev")
    assert pairs(argv, "-mon") == ["chardev=qmp,mode=control"]
    assert "file,id=console,path=/run/x,,y/console.log" in pairs(argv, "-chardev")
    assert pairs(argv, "-serial") == ["chardev:console"]
    assert pairs(argv, "-append")[0].endswith(" loglevel=7")


def test_disks_shares_nics() -> None:
    argv = qemu.command(spec(
        disks=[Disk("/l/a.erofs", "layer0", True), Disk("/c/upper.ext4", "upper", False)],
        shares=[Share("vol0", "/srv/data", False), Share("ro1", "/etc/x", True)],
        nics=[Nic("isotap0", "02:42:ac:11:00:02")]))
    drives = pairs(argv, "-drive")
    assert drives[0] == "if=none,id=disk0,file=/l/a.erofs,format=raw,readonly=on,cache=writeback"
    assert drives[1] == ("if=none,id=disk1,file=/c/upper.ext4,format=raw,readonly=off,"
                         "cache=writeback")
    devices = pairs(argv, "-device")
    assert "virtio-blk-pci,drive=disk0,serial=layer0" in devices
    assert "virtio-blk-pci,drive=disk1,serial=upper" in devices
    fsdevs = pairs(argv, "-fsdev")
    assert fsdevs[0] == "local,id=fs0,path=/srv/data,security_model=passthrough,multidevs=remap"
    assert fsdevs[1].endswith(",readonly=on")
    assert "virtio-9p-pci,fsdev=fs1,mount_tag=ro1" in devices
    assert pairs(argv, "-netdev") == ["tap,id=net0,ifname=isotap0,script=no,downscript=no"]
    assert "virtio-net-pci,netdev=net0,mac=02:42:ac:11:00:02" in devices


def test_microvm_gets_a_pci_bus() -> None:
    assert pairs(qemu.command(spec(machine="microvm")), "-M") == ["microvm,pcie=on"]
    assert pairs(qemu.command(spec(machine="microvm,pcie=on,rtc=off")), "-M") == \
        ["microvm,pcie=on,rtc=off"]


@pytest.mark.parametrize("bad", [
    dict(accel="hvf"), dict(memory_mb=16), dict(cpus=0),
    dict(disks=[Disk("/a", "way-too-long-serial-number", True)]),
    dict(disks=[Disk("/a", "x", True), Disk("/b", "x", True)]),
    dict(disks=[Disk("/a", "x", True, format="vmdk")]),
    dict(shares=[Share("bad,tag", "/a", True)]),
    dict(nics=[Nic("tap0", "not-a-mac")]), dict(nics=[Nic("tap0,script=/x", "02:00:00:00:00:01")]),
])
def test_invalid_specs(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        qemu.command(spec(**bad))


def test_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    with pytest.raises(Unavailable, match="qemu-system-x86"):
        qemu.command(spec())


def test_version_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        stdout = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"

    monkeypatch.setattr(qemu.subprocess, "run", lambda *a, **k: Done())
    assert qemu.qemu_version() == "7.2.22"
