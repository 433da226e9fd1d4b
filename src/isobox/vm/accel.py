"""Choosing the accelerator by booting, not by looking: on some hosts
/dev/kvm exists and a guest kernel still hangs under it. The probe image
boots under KVM with a deadline; if its marker arrives, KVM it is, else TCG
with a one-line reason. The choice is cached per host kernel, QEMU version
and guest kernel, the things that change the answer."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from isobox.errors import Unavailable
from isobox.linux.files import atomic_write
from isobox.vm import initramfs, qemu
from isobox.vm.initscript import PROBE_MARKER
from isobox.vm.kernel import GuestKernel, vm_dir

KVM_DEVICE = "/dev/kvm"
PROBE_TIMEOUT = 10.0
PROBE_MEMORY_MB = 128
_EXIT_GRACE = 5.0  # the probe powers off at once; QEMU should follow


@dataclass(frozen=True)
class AccelChoice:
    accel: str  #: "kvm" or "tcg"
    reason: str  #: one line, for a notice and ``isobox info``
    cached: bool


def choose(state_dir: str, kernel: GuestKernel) -> AccelChoice:
    cached = cached_choice(state_dir, kernel)
    if cached is not None:
        return cached
    choice = _probe(state_dir, kernel)
    atomic_write(_cache_path(state_dir), json.dumps(
        {"key": _cache_key(kernel), "accel": choice.accel, "reason": choice.reason}).encode())
    return choice


def cached_choice(state_dir: str, kernel: GuestKernel) -> AccelChoice | None:
    """The recorded choice if it was made on this host kernel, QEMU and guest kernel."""
    try:
        with open(_cache_path(state_dir), "rb") as f:
            record = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != _cache_key(kernel):
        return None
    return AccelChoice(str(record["accel"]), str(record["reason"]), cached=True)


def kvm_usable() -> str | None:
    """None if /dev/kvm can be opened, else why not."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{KVM_DEVICE}: {exc.strerror}"
    os.close(fd)
    return None


def boot_probe(state_dir: str, kernel: GuestKernel, accel: str, machine: str = "pc",
               timeout: float = PROBE_TIMEOUT, cmdline_extra: str = "",
               console_log: str | None = None) -> float:
    """Boot the probe image; seconds from starting QEMU to the marker on the
    agent port. On timeout QEMU is killed and Unavailable raised."""
    initrd = initramfs.ensure_probe(state_dir, kernel)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs, tempfile.TemporaryFile() as stderr:
        spec = qemu.VmSpec(kernel.kernel, initrd, PROBE_MEMORY_MB, 1, accel,
                           agent_fd=theirs.fileno(), console_log=console_log,
                           cmdline_extra=cmdline_extra, machine=machine)
        start = time.monotonic()
        proc = subprocess.Popen(qemu.command(spec), pass_fds=[theirs.fileno()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr)
        theirs.close()
        timed_out = False
        try:
            if _wait_marker(ours, proc, start + timeout):
                elapsed = time.monotonic() - start
                try:
                    proc.wait(_EXIT_GRACE)
                except subprocess.TimeoutExpired:
                    pass  # reached init all the same; QEMU is killed below
                return elapsed
            timed_out = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.kill()  # by pid: this QEMU only
                proc.wait()
        stderr.seek(0)
        detail = (stderr.read().decode(errors="replace").strip().splitlines() or [""])[-1]
    if timed_out:
        raise Unavailable(f"{accel.upper()} probe boot did not reach init within {timeout:g} s")
    raise Unavailable(f"QEMU under {accel.upper()} exited (status {proc.returncode}) before "
                      f"the guest reached init: {detail or 'no message'}")


def _wait_marker(sock: socket.socket, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    received = b""
    while PROBE_MARKER.encode() not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([sock], [], [], min(left, 0.5))
        if ready:
            chunk = sock.recv(4096)
            if not chunk:
                return False  # QEMU exited
            received += chunk
        elif proc.poll() is not None:
            return False
    return True


def _probe(state_dir: str, kernel: GuestKernel) -> AccelChoice:
    why_not = kvm_usable()
    if why_not is not None:
        return AccelChoice("tcg", f"KVM unavailable ({why_not}); using TCG", cached=False)
    try:
        seconds = boot_probe(state_dir, kernel, "kvm", timeout=PROBE_TIMEOUT)
    except Unavailable as exc:
        return AccelChoice("tcg", f"{exc}; using TCG", cached=False)
    return AccelChoice("kvm", f"KVM probe boot reached init in {seconds:.1f} s", cached=False)


def _cache_key(kernel: GuestKernel) -> dict[str, str]:
    return {"host_kernel": os.uname().release, "qemu": qemu.qemu_version(),
            "guest_kernel": kernel.version}


def _cache_path(state_dir: str) -> str:
    os.makedirs(vm_dir(state_dir), exist_ok=True)
    return os.path.join(vm_dir(state_dir), "accel.json")
