"""``python -m isobox.agent``: the command line, and the duties of PID 1."""

from __future__ import annotations

import os
import sys

from isobox.agent import log, rootfs
from isobox.agent.paths import Paths
from isobox.agent.port import open_port
from isobox.agent.service import Agent
from isobox.errors import InvalidArgument, IsoboxError
from isobox.linux.inherit import ensure_stdio
from isobox.taskapi.protocol import GUEST_STATE_DIR, PORT_NAME

USAGE = f"""\
usage: python -m isobox.agent [--port-name NAME | --fd N] [--state-dir DIR]

The task API agent of an isobox utility VM.

  --port-name NAME  talk to the host over the virtio-serial port NAME
                    (default {PORT_NAME})
  --fd N            talk over the connected socket inherited as fd N
  --state-dir DIR   where mounts, bundles and runtime state go
                    (default {GUEST_STATE_DIR})
"""
OPTIONS = ("--port-name", "--fd", "--state-dir")


def parse(argv: list[str]) -> dict[str, str] | None:
    """The options given, by name; None for --help. (argparse costs start-up time.)"""
    given: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            return None
        name, eq, value = arg.partition("=")
        if name not in OPTIONS:
            raise InvalidArgument(f"unexpected argument {arg!r}")
        if not eq:
            value = next(args, "")
        if not value:
            raise InvalidArgument(f"{name} needs a value")
        given[name] = value
    if "--port-name" in given and "--fd" in given:
        raise InvalidArgument("--port-name and --fd exclude each other")
    if "--fd" in given and not given["--fd"].isdigit():
        raise InvalidArgument(f"--fd: not a number: {given['--fd']!r}")
    return given


def serve(given: dict[str, str], pid1: bool) -> None:
    ensure_stdio()
    if pid1:
        log.use_kmsg()
        if rootfs.root_is_rootfs():
            rootfs.leave_rootfs()  # or no container could pivot_root
    else:
        from isobox.linux import identity

        identity.set_child_subreaper()  # the containers' processes come to us to be reaped
    if "--fd" in given:
        fd = int(given["--fd"])
        os.set_inheritable(fd, False)
        reconnects = False
    else:
        fd = open_port(given.get("--port-name", PORT_NAME))
        reconnects = True
    paths = Paths(given.get("--state-dir", GUEST_STATE_DIR))
    Agent(fd, paths, reconnects=reconnects, pid1=pid1).run()


def main(argv: list[str]) -> int:
    pid1 = os.getpid() == 1
    try:
        return _main(argv, pid1)
    except BaseException:
        if not pid1:
            raise
        log.log_exception("the agent failed")
        return 1
    finally:
        if pid1:  # PID 1 must not exit: the kernel would panic
            from isobox.agent.power import power_off

            power_off()


def _main(argv: list[str], pid1: bool) -> int:
    try:
        given = parse(argv)
    except InvalidArgument as exc:
        sys.stderr.write(f"isobox-agent: {exc}\n{USAGE}")
        return 2
    if given is None:
        sys.stdout.write(USAGE)
        return 0
    try:
        serve(given, pid1)
    except (IsoboxError, OSError) as exc:
        log.log(f"cannot serve: {exc}")
        return 1
    return 0
