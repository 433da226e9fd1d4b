"""Names of the things we create on the host, and how to recognise ours."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from isobox.errors import InvalidArgument

_NET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_TABLE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,31}$")
PREDEFINED = ("bridge", "host", "none")


def new_id() -> str:
    """A Docker-style id: 64 hex digits."""
    return secrets.token_hex(32)


def check_network_name(name: str) -> str:
    if not _NET_NAME.match(name) or len(name) > 128:
        raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                              "are allowed")
    return name


def check_table(name: str) -> str:
    if not _TABLE.match(name):
        raise InvalidArgument(f"invalid nftables table name {name!r}")
    return name


@dataclass(frozen=True)
class Names:
    """Interface names under one prefix (``isobox``: bridges isobox0 and
    isobox-1a2b3c4d, veths isoboxv5e6f7a8b, taps isoboxt5e6f7a8b). Tests use a
    random prefix so that runs side by side, and the host's own links, are
    never mistaken for ours."""

    prefix: str = "isobox"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise InvalidArgument(f"invalid bridge prefix {self.prefix!r}: 1 to 8 lowercase "
                                  "letters and digits, starting with a letter")

    @property
    def default_bridge(self) -> str:
        return f"{self.prefix}0"

    def bridge(self, network_id: str) -> str:
        return f"{self.prefix}-{network_id[: 14 - len(self.prefix)]}"

    def _endpoint_link(self, kind: str, endpoint_id: str) -> str:
        digest = hashlib.sha256(endpoint_id.encode()).hexdigest()
        return f"{self.prefix}{kind}{digest[: 14 - len(self.prefix)]}"

    def veth(self, endpoint_id: str) -> str:
        return self._endpoint_link("v", endpoint_id)

    def tap(self, endpoint_id: str) -> str:
        """The tap of a VM's endpoint (named from its id, as veths are)."""
        return self._endpoint_link("t", endpoint_id)

    def is_our_veth(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}v") and len(name) == 15

    def is_our_tap(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}t") and len(name) == 15

    def is_our_bridge(self, name: str) -> bool:
        return name == self.default_bridge or (name.startswith(f"{self.prefix}-")
                                               and len(name) == 15)
