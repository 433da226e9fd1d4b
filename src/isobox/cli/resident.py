"""The CLI's command server: ``python -I -m isobox.cli.resident --keep IDLE
--settings FILE SOCK`` (see :mod:`isobox.engine.resident`). It loads every
command and what they use once; each command then runs in a fork of it."""

from __future__ import annotations

import importlib
import os
import sys

#: Loaded before the first fork, beyond the commands themselves: what the
#: everyday commands import when they run (a worker would load them anew
#: each time otherwise).
WARM = ("isobox.cli.attach", "isobox.engine.bundle", "isobox.engine.container_store",
        "isobox.engine.containers", "isobox.engine.images", "isobox.engine.logs",
        "isobox.engine.naming", "isobox.engine.networking", "isobox.engine.runspec",
        "isobox.engine.runspec_linux", "isobox.engine.userdb", "isobox.engine.views",
        "isobox.engine.vmspec", "isobox.engine.volumes", "isobox.engine.zygote",
        "isobox.cgroups", "isobox.cgroups._base", "isobox.images.snapshots",
        "isobox.network.manager", "isobox.network.netlink", "isobox.shim.client",
        "isobox.shim.rootfs", "isobox.shim.zygote", "pyroute2", "json", "shutil",
        "sqlite3", "subprocess", "tarfile", "tty")


def prime_types() -> int:
    """Build msgspec's type information for every Struct class loaded: it is
    made on a class's first decode and kept on the class, so made here once
    instead of in every worker (3-5 ms of a ``run``)."""
    import msgspec

    primed = 0
    for name, module in list(sys.modules.items()):
        if name == "isobox" or name.startswith("isobox."):
            for value in list(vars(module).values()):
                if (isinstance(value, type) and issubclass(value, msgspec.Struct)
                        and value is not msgspec.Struct):
                    try:
                        msgspec.json.Decoder(value)
                        primed += 1
                    except (TypeError, ValueError):
                        continue  # a generic or abstract base: primed through its users
    return primed


def run(argv: list[str]) -> int:
    from isobox.cli.main import cli

    try:
        cli.main(args=argv[1:], prog_name=os.path.basename(argv[0]) or "isobox",
                 standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return (exc.code or 0) & 0xFF
        raise
    return 0


def main(argv: list[str]) -> int:
    import argparse

    from isobox.engine import resident

    parser = argparse.ArgumentParser(prog="python -I -m isobox.cli.resident")
    parser.add_argument("--keep", type=float, required=True,
                        help="idle seconds before it exits (negative: never)")
    parser.add_argument("--settings", required=True, help="the settings file it serves")
    parser.add_argument("socket")
    args = parser.parse_args(argv)
    from isobox.cli.main import cli

    cli.load_all()
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional part this host lacks: loaded on use, or not
            print(f"isobox-cli-server: {name} not preloaded: {exc}", file=sys.stderr,
                  flush=True)
    prime_types()
    resident.serve(args.socket, args.keep, args.settings, run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
