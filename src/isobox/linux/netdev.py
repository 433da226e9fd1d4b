"""Interface flags through ioctl: enough to bring loopback up in a new netns."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def set_up(name: str = "lo") -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS,
                    struct.pack("16sH14x", name.encode(), flags | IFF_UP))
    finally:
        sock.close()
