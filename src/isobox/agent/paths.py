"""Where the agent keeps things under its state directory (/run/isobox)."""

from __future__ import annotations

import os

from isobox.taskapi.protocol import ROOTFS_DIR, SHARES_DIR


class Paths:
    __slots__ = ("bundles", "layers", "root", "rootfs", "run", "runtime", "shares", "upper")

    def __init__(self, state_dir: str) -> None:
        self.root = os.path.abspath(state_dir)
        self.runtime = os.path.join(self.root, "runtime")  # the built-in runtime's state root
        self.bundles = os.path.join(self.root, "bundles")
        self.layers = os.path.join(self.root, "layers")
        self.upper = os.path.join(self.root, "upper")
        self.rootfs = os.path.join(self.root, ROOTFS_DIR)
        self.shares = os.path.join(self.root, SHARES_DIR)
        self.run = os.path.join(self.root, "agent")  # the agent's own scratch files

    def layer(self, index: int) -> str:
        return os.path.join(self.layers, str(index))

    def share(self, tag: str) -> str:
        return os.path.join(self.shares, tag)

    def bundle(self, container_id: str) -> str:
        return os.path.join(self.bundles, container_id)
