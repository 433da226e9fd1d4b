"""The host's side of VM isolation for ``isobox vm setup`` and ``isobox info``:
the guest kernel, the cached initramfs and the accelerator choice."""

from __future__ import annotations

from typing import Any

from isobox.engine.config import EngineConfig
from isobox.errors import IsoboxError


def setup(config: EngineConfig, package: str | None = None) -> dict[str, str]:
    """Fetch and unpack the guest kernel, build the initramfs, probe the
    accelerator (a boot under KVM; TCG when it does not reach init), and
    make the VM templates of the default shapes."""
    from isobox.engine.vmspec import BOOT_TIMEOUT, default_template_shapes
    from isobox.vm import accel, initramfs, kernel, template

    guest = kernel.setup(config.root, package)
    initrd = initramfs.ensure(config.root, guest)
    choice = accel.choose(config.root, guest)
    options = config.settings.get("vm") or {}
    forced = options.get("accel")
    shapes = [] if options.get("kernel") or options.get("initrd") else default_template_shapes(
        config, guest, initrd, forced if forced in ("kvm", "tcg") else choice.accel)
    made = [template.ensure(shape, BOOT_TIMEOUT).path for shape in shapes]
    return {"Kernel": guest.version, "KernelPath": guest.kernel, "Initramfs": initrd,
            "Accelerator": choice.accel, "Reason": choice.reason,
            "Templates": ", ".join(made) or "off"}


def facts(config: EngineConfig) -> dict[str, Any]:
    """What ``info`` shows, without booting anything (the cached probe)."""
    from isobox.vm import accel, kernel

    options = config.settings.get("vm") or {}
    try:
        guest = kernel.find(config.root, options.get("kernel"), options.get("initrd"))
    except IsoboxError as exc:
        return {"Available": False, "Reason": str(exc)}
    choice = accel.cached_choice(config.root, guest)
    forced = options.get("accel")
    return {
        "Available": True,
        "Kernel": guest.version,
        "Accelerator": forced or (choice.accel if choice else "not probed yet"),
        "Reason": (f"set in {config.settings_file}" if forced
                   else choice.reason if choice else "probed at the first VM start"),
    }
