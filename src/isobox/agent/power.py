"""The end of the guest: power off once everything is unmounted and synced."""

from __future__ import annotations

import os

SYS_REBOOT = 169  # x86_64
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC


def power_off() -> None:
    """reboot(RB_POWER_OFF): only PID 1 may, and it does not return when it works."""
    import ctypes

    from isobox.linux import libc

    os.sync()
    libc.syscall(SYS_REBOOT, ctypes.c_uint(LINUX_REBOOT_MAGIC1),
                 ctypes.c_uint(LINUX_REBOOT_MAGIC2), ctypes.c_uint(LINUX_REBOOT_CMD_POWER_OFF),
                 None, what="reboot")
