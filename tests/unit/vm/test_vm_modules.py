"""Kernel modules without kmod: .modinfo parsing, load order, signatures."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest
from vmtest_util import build_module

from isobox.errors import InvalidArgument, NotFound
from isobox.vm.modules import (
    ModuleTree,
    canonical,
    depends,
    modinfo,
    read_module,
    signatures_enforced,
    soft_predepends,
    strip_signature,
)


def make_tree(base: Path, modules: dict[str, str], builtin: tuple[str, ...] = (),
              soft: dict[str, str] | None = None) -> Path:
    """A lib/modules/<version> tree; values are the depends= strings."""
    root = base / "6.1.0-test"
    for name, deps in modules.items():
        sub = root / "kernel" / ("crypto" if name.startswith("crc") else "drivers")
        sub.mkdir(parents=True, exist_ok=True)
        extra = ""
        if soft and name in soft:
            extra = f"softdep={soft[name]}\0"
        if name == "crc32c_generic":
            extra += "alias=crypto-crc32c\0alias=crc32c\0"
        (sub / f"{name.replace('_', '-') if name == 'net_fail' else name}.ko").write_bytes(
            build_module(name, deps, extra))
    (root / "modules.builtin").write_text("".join(f"kernel/lib/{b}.ko\n" for b in builtin))
    return root


def test_modinfo_and_depends() -> None:
    info = modinfo(build_module("virtio_pci", "virtio_ring,virtio", "alias=pci:v1AF4*\0"))
    assert info["name"] == ["virtio_pci"]
    assert depends(info) == ["virtio_ring", "virtio"]
    assert depends(modinfo(build_module("x", ""))) == []


def test_soft_predepends_reads_only_the_pre_section() -> None:
    info = {"softdep": ["pre: crc32c crypto-sha post: later"]}
    assert soft_predepends(info) == ["crc32c", "crypto-sha"]


def test_not_a_module() -> None:
    with pytest.raises(InvalidArgument):
        modinfo(b"not an elf")


def test_load_order_puts_dependencies_first_once(tmp_path: Path) -> None:
    tree = ModuleTree(str(make_tree(tmp_path, {
        "virtio_ring": "", "virtio": "virtio_ring", "virtio_pci": "virtio_ring,virtio",
        "virtio_console": "virtio,virtio_ring", "net_fail": "", "virtio_net": "virtio,net-fail",
    })))
    order = [m.name for m in tree.load_order(["virtio_pci", "virtio_console", "virtio-net"])]
    assert order == ["virtio_ring", "virtio", "virtio_pci", "virtio_console", "net_fail",
                     "virtio_net"]


def test_load_order_skips_builtins_and_already_loaded(tmp_path: Path) -> None:
    tree = ModuleTree(str(make_tree(tmp_path, {"crc16": "", "jbd2": "", "ext4": "jbd2,crc16"},
                                    builtin=("crc16",))))
    assert [m.name for m in tree.load_order(["ext4"])] == ["jbd2", "ext4"]
    assert [m.name for m in tree.load_order(["ext4"], loaded=["jbd2"])] == ["ext4"]


def test_soft_dependency_through_a_crypto_alias(tmp_path: Path) -> None:
    tree = ModuleTree(str(make_tree(
        tmp_path, {"crc32c_generic": "", "libcrc32c": "", "erofs": "libcrc32c"},
        soft={"libcrc32c": "pre: crc32c"})))
    assert [m.name for m in tree.load_order(["erofs"])] == ["crc32c_generic", "libcrc32c", "erofs"]


def test_missing_dependency_names_who_needs_it(tmp_path: Path) -> None:
    tree = ModuleTree(str(make_tree(tmp_path, {"ext4": "jbd2"})))
    with pytest.raises(NotFound, match=r"jbd2 \(needed by ext4\)"):
        tree.load_order(["ext4"])


def test_cycle_is_an_error(tmp_path: Path) -> None:
    tree = ModuleTree(str(make_tree(tmp_path, {"a": "b", "b": "a"})))
    with pytest.raises(InvalidArgument, match="cycle"):
        tree.load_order(["a"])


def test_compressed_module_is_decompressed(tmp_path: Path) -> None:
    data = build_module("x")
    path = tmp_path / "x.ko.xz"
    path.write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ))
    assert read_module(str(path)) == data


def test_strip_signature() -> None:
    module = build_module("x")
    signature = b"S" * 40
    info = struct.pack(">BBBBBxxxI", 0, 0, 2, 0, 0, len(signature))
    signed = module + signature + info + b"~Module signature appended~\n"
    assert strip_signature(signed) == module
    assert strip_signature(module) == module


def test_signatures_enforced(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("CONFIG_MODULE_SIG=y\n# CONFIG_MODULE_SIG_FORCE is not set\n")
    assert signatures_enforced(str(config)) is False
    config.write_text("CONFIG_MODULE_SIG_FORCE=y\n")
    assert signatures_enforced(str(config)) is True
    assert signatures_enforced(str(tmp_path / "none")) is None


def test_canonical() -> None:
    assert canonical("net-failover") == "net_failover"


