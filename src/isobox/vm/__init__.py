"""VM isolation: the guest kernel and initramfs, QEMU, the accelerator probe,
layer disks, and the keeper that runs one container in one utility VM and
speaks the task API to the agent inside it."""
