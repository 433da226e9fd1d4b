"""The guest agent: PID 1 of a utility VM. It speaks the task API
(:mod:`isobox.taskapi`) with the host over a virtio-serial port, mounts the
container's disks and shares, configures the network, and runs the
container with the same process isolation as on the host
(:mod:`isobox.runtime`, in process), relaying its stdio as frames.

Start-up time counts under emulation, so these modules import little: no
``typing`` at run time, no ``asyncio``, ``subprocess`` or ``socket.py``; the
runtime is imported once the host has been greeted.
"""
