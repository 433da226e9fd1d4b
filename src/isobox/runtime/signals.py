"""Signal names as runc accepts them: KILL, SIGKILL, 9, SIGRTMIN+3."""

from __future__ import annotations

import signal

from isobox.errors import InvalidArgument


def parse_signal(text: str) -> int:
    raw = text.strip().upper()
    if raw.isdigit():
        number = int(raw)
        if 0 < number < signal.SIGRTMAX + 1:
            return number
        raise InvalidArgument(f"invalid signal {text!r}")
    if not raw.startswith("SIG"):
        raw = "SIG" + raw
    for base in ("SIGRTMIN", "SIGRTMAX"):
        if raw.startswith(base) and raw != base:
            try:
                offset = int(raw[len(base):])
            except ValueError:
                break
            number = int(getattr(signal, base)) + offset
            if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                return number
    try:
        return int(signal.Signals[raw])
    except KeyError:
        raise InvalidArgument(f"unknown signal {text!r}") from None
