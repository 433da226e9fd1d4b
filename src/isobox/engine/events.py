"""``events``: the engine's event log (the ``events`` table of the container
store) with Docker's filters and message shape, read back or followed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isobox.errors import InvalidArgument

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerStore

POLL_INTERVAL = 0.2
_KEYS = ("config", "container", "daemon", "event", "image", "label", "network", "node",
         "plugin", "scope", "secret", "service", "type", "volume")
_TYPES = ("builder", "config", "container", "daemon", "image", "network", "node", "plugin",
          "secret", "service", "volume")
_FUZZY_EVENTS = ("health_status", "exec_create", "exec_start")


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    type: str
    action: str
    actor: str
    attributes: dict[str, str]

    def message(self) -> dict[str, Any]:
        """Docker's events.Message as JSON (legacy status/id/from for containers
        and images)."""
        out: dict[str, Any] = {}
        if self.type in ("container", "image"):
            out["status"] = self.action
            out["id"] = self.actor
            if self.type == "container" and self.attributes.get("image"):
                out["from"] = self.attributes["image"]
        nano = round(self.time * 1e9)
        out.update({"Type": self.type, "Action": self.action,
                    "Actor": {"ID": self.actor, "Attributes": dict(self.attributes)},
                    "scope": "local", "time": nano // 1_000_000_000, "timeNano": nano})
        return out

    def line(self) -> str:
        """Docker's default line: time, type, action, actor, (attributes)."""
        text = f"{rfc3339_nano_local(self.time)} {self.type} {self.action} {self.actor}"
        if self.attributes:
            text += " (" + ", ".join(f"{k}={v}" for k, v in
                                     sorted(self.attributes.items())) + ")"
        return text


def rfc3339_nano_local(ts: float) -> str:
    """Go's ``2006-01-02T15:04:05.000000000Z07:00`` in the local time zone."""
    nano = round(ts * 1e9)
    seconds, frac = divmod(nano, 1_000_000_000)
    local = time.localtime(seconds)
    offset = local.tm_gmtoff or 0
    zone = "Z" if offset == 0 else "{}{:02d}:{:02d}".format(
        "+" if offset > 0 else "-", abs(offset) // 3600, abs(offset) % 3600 // 60)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{frac:09d}{zone}"


def _strip_tag(name: str) -> str:
    if "@" in name:
        return name.partition("@")[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


class EventFilter:
    """Docker's event filters: values of one key are alternatives, keys all apply."""

    def __init__(self, filters: Sequence[str]) -> None:
        self.by_key: dict[str, list[str]] = {}
        for item in filters:
            key, sep, value = item.partition("=")
            if not sep or key not in _KEYS:
                raise InvalidArgument(f"invalid filter '{item}'")
            if key == "type" and value not in _TYPES:
                raise InvalidArgument(f"Invalid event type filter '{value}'")
            self.by_key.setdefault(key, []).append(value)

    def __call__(self, ev: Event) -> bool:
        checks: dict[str, Callable[[str], bool]] = {
            "type": lambda v: ev.type == v,
            "event": lambda v: ev.action == v or (
                v in _FUZZY_EVENTS and ev.action.startswith(v)),
            "container": lambda v: ev.actor.startswith(v) or ev.attributes.get("name") == v
            or ev.attributes.get("container") == v,
            "image": lambda v: self._image(ev, v),
            "volume": lambda v: ev.type == "volume" and ev.actor == v,
            "label": lambda v: self._label(ev, v),
            "scope": lambda v: v == "local",
        }
        for key, values in self.by_key.items():
            check = checks.get(key)
            if check is None:
                return False  # networks, daemons, swarm objects: none recorded here
            if not any(check(v) for v in values):
                return False
        return True

    @staticmethod
    def _image(ev: Event, value: str) -> bool:
        name = ev.attributes.get("name" if ev.type == "image" else "image", "")
        candidates = {ev.actor, name, _strip_tag(ev.actor), _strip_tag(name)} - {""}
        return value in candidates

    @staticmethod
    def _label(ev: Event, value: str) -> bool:
        key, sep, want = value.partition("=")
        return key in ev.attributes and (not sep or ev.attributes[key] == want)


def history(store: ContainerStore, *, since: float | None = None, until: float | None = None,
            match: Callable[[Event], bool] = lambda ev: True, after: int = 0) -> list[Event]:
    return [ev for ev in (Event(*row) for row in store.events(after, since, until))
            if match(ev)]


def follow(store: ContainerStore, *, since: float | None = None, until: float | None = None,
           match: Callable[[Event], bool] = lambda ev: True,
           poll: float = POLL_INTERVAL, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[Event]:
    """Past events from ``since`` (none without it; all before ``until``
    when only that is given), then new ones as they are recorded, polling
    every ``poll`` seconds, until ``until`` passes (forever without it)."""
    start = since if since is not None else (None if until is not None else clock())
    seq = 0
    while True:
        done = until is not None and clock() > until
        for ev in history(store, since=start, until=until, after=seq):
            seq = ev.seq
            if match(ev):
                yield ev
        if done:
            return
        sleep(poll)
