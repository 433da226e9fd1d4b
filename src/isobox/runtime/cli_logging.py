"""Logging for ``isobox-runtime``, set up only when --log or --debug asks for it
(logging is not imported otherwise). runc's JSON lines for --log-format json:
containerd reads the last error from them."""

from __future__ import annotations

import datetime
import json
import logging
import sys


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "level": record.levelname.lower().replace("warning", "warn"),
            "msg": record.getMessage(),
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat()
            .replace("+00:00", "Z"),
        })


def setup_logging(path: str | None, fmt: str, debug: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler: logging.Handler
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("isobox-runtime: %(levelname)s %(message)s"))
    root.addHandler(handler)
