"""The CLI's command server: ``python -I -m isobox.cli.resident --keep IDLE
--settings FILE SOCK`` (see :mod:`isobox.engine.resident`). It loads every
command and what they use once; each command then runs in a fork of it."""

from __future__ import annotations

import os
import sys


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
    resident.warm_up(("isobox.cli.attach",))
    resident.serve(args.socket, args.keep, args.settings, run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
