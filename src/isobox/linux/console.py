"""Pseudo-terminals and passing their fds over unix sockets (SCM_RIGHTS)."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import array
import fcntl
import os
import struct
import termios

TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


def openpty() -> tuple[int, int]:
    """(master, slave) from the /dev/ptmx of the current mount namespace."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    return master, slave


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def make_controlling(fd: int) -> None:
    fcntl.ioctl(fd, TIOCSCTTY, 0)


def send_fd(sock: socket.socket, fd: int, name: str) -> None:
    sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array("i", [fd]))])


def recv_fd(sock: socket.socket) -> tuple[int, str]:
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise OSError("no file descriptor received on the console socket")
    os.set_inheritable(fds[0], False)
    return fds[0], msg.decode(errors="replace")
