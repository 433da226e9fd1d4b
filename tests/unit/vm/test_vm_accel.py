"""Choosing the accelerator: the cache and its key, and the decisions that
need no boot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isobox.errors import Unavailable
from isobox.vm import accel
from isobox.vm.kernel import GuestKernel

KERNEL = GuestKernel("6.1.0-56-amd64", "/k/vmlinux", "/k/modules")


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    facts = {"release": "6.18.44", "qemu": "7.2.22"}

    class Uname:
        @property
        def release(self) -> str:
            return facts["release"]

    monkeypatch.setattr(accel.os, "uname", lambda: Uname())
    monkeypatch.setattr(accel.qemu, "qemu_version", lambda: facts["qemu"])
    return facts


def forbid_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    def boot(*a: object, **k: object) -> float:
        raise AssertionError("no probe boot expected")
    monkeypatch.setattr(accel, "boot_probe", boot)


def test_no_kvm_device_means_tcg_without_a_boot(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "kvm_usable", lambda: "/dev/kvm: No such file or directory")
    forbid_boot(monkeypatch)
    choice = accel.choose(str(tmp_path), KERNEL)
    assert (choice.accel, choice.cached) == ("tcg", False)
    assert choice.reason == "KVM unavailable (/dev/kvm: No such file or directory); using TCG"


def test_kvm_probe_that_hangs_means_tcg_and_is_cached(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      host: dict[str, str]) -> None:
    monkeypatch.setattr(accel, "kvm_usable", lambda: None)
    calls = []

    def boot(state_dir: str, kernel: GuestKernel, which: str, **kw: object) -> float:
        calls.append((which, kw))
        raise Unavailable("KVM probe boot did not reach init within 10 s")

    monkeypatch.setattr(accel, "boot_probe", boot)
    first = accel.choose(str(tmp_path), KERNEL)
    assert first.accel == "tcg"
    assert first.reason == "KVM probe boot did not reach init within 10 s; using TCG"
    assert calls == [("kvm", {"timeout": accel.PROBE_TIMEOUT})]
    second = accel.choose(str(tmp_path), KERNEL)
    assert (second.accel, second.reason, second.cached) == ("tcg", first.reason, True)
    assert len(calls) == 1
    record = json.loads((tmp_path / "vm" / "accel.json").read_text())
    assert record["key"] == {"host_kernel": "6.18.44", "qemu": "7.2.22",
                             "guest_kernel": "6.1.0-56-amd64"}


def test_kvm_probe_that_boots_means_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "kvm_usable", lambda: None)
    monkeypatch.setattr(accel, "boot_probe", lambda *a, **k: 0.61)
    choice = accel.choose(str(tmp_path), KERNEL)
    assert choice.accel == "kvm" and choice.reason == "KVM probe boot reached init in 0.6 s"


@pytest.mark.parametrize("change", ["release", "qemu", "guest"])
def test_the_cache_is_keyed_by_host_kernel_qemu_and_guest_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: dict[str, str], change: str) -> None:
    monkeypatch.setattr(accel, "kvm_usable", lambda: None)
    monkeypatch.setattr(accel, "boot_probe", lambda *a, **k: 0.5)
    accel.choose(str(tmp_path), KERNEL)
    assert accel.cached_choice(str(tmp_path), KERNEL) is not None
    kernel = KERNEL
    if change == "guest":
        kernel = GuestKernel("6.1.0-57-amd64", "/k/vmlinux", "/k/modules")
    else:
        host[change] = "something else"
    assert accel.cached_choice(str(tmp_path), kernel) is None


def test_unreadable_cache_is_no_choice(tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "accel.json").write_text("{not json")
    assert accel.cached_choice(str(tmp_path), KERNEL) is None
