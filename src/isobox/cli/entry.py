"""The ``isobox`` program: a command goes to the root's warm command server
when one answers (:mod:`isobox.engine.resident`), else runs here."""

from __future__ import annotations

import sys


def main() -> None:
    from isobox.engine import resident

    status = resident.forward(sys.argv)
    if status is not None:
        resident.leave(status)
    from isobox.cli.main import main as in_process

    in_process()
