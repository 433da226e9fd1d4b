"""Values of the network layer: networks, endpoints, port bindings, and
their Docker JSON shapes. Frozen dataclasses; nothing here touches the host."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from isobox.errors import InvalidArgument

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
DEFAULT_BRIDGE_OPTION = "com.docker.network.bridge.default_bridge"
MTU_OPTION = "com.docker.network.driver.mtu"

#: Drivers of the predefined and user networks, as Docker names them.
DRIVER_BRIDGE = "bridge"
DRIVER_HOST = "host"
DRIVER_NULL = "null"

PROTOCOLS = ("tcp", "udp", "sctp")


def rfc3339(ts: float) -> str:
    """Docker's ``Created``: local time with nanoseconds and the zone offset."""
    tm = time.localtime(ts)
    frac = f"{ts - int(ts):.9f}"[1:]
    off = time.strftime("%z", tm)
    return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + frac + f"{off[:3]}:{off[3:]}"


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    created: float
    bridge: str = ""                 # the Linux bridge, for driver "bridge"
    subnet: str = ""                 # "172.18.0.0/16"
    gateway: str = ""                # "172.18.0.1"
    ip_range: str = ""               # "" or a CIDR inside subnet
    internal: bool = False
    predefined: bool = False         # bridge, host, none: never removed
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_bridge(self) -> bool:
        return self.driver == DRIVER_BRIDGE

    @property
    def user_defined(self) -> bool:
        """User-defined bridge networks get the embedded DNS (Docker's rule)."""
        return self.is_bridge and not self.predefined

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    @property
    def mtu(self) -> int | None:
        """The MTU given at creation (``-o com.docker.network.driver.mtu``), if any."""
        value = str(self.options.get(MTU_OPTION) or "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    def inspect(self, containers: Mapping[str, Mapping[str, str]] | None = None
                ) -> dict[str, Any]:
        """``docker network inspect`` for this network."""
        config: list[dict[str, str]] = []
        if self.subnet:
            entry = {"Subnet": self.subnet, "Gateway": self.gateway}
            if self.ip_range:
                entry["IPRange"] = self.ip_range
            config.append(entry)
        return {
            "Name": self.name, "Id": self.id, "Created": rfc3339(self.created),
            "Scope": "local", "Driver": self.driver, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": config},
            "Internal": self.internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": {k: dict(v) for k, v in (containers or {}).items()},
            "Options": dict(self.options), "Labels": dict(self.labels),
        }


@dataclass(frozen=True)
class EndpointInfo:
    """One container's attachment to one network."""

    id: str
    network_id: str
    network: str                     # the network's name
    container_id: str
    container_name: str
    netns: str                       # path of the network namespace ("" for a tap)
    ifname: str                      # inside the container: eth0, eth1... ("" for a tap)
    host_ifname: str                 # the veth end or the tap on the bridge ("" for none/host)
    ip: str                          # "" for none/host
    prefixlen: int
    gateway: str
    mac: str
    aliases: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """"veth" (a container's namespace), "tap" (a VM's NIC), "" (none, host)."""
        if not self.host_ifname:
            return ""
        return "veth" if self.netns else "tap"

    def inspect_entry(self) -> dict[str, str]:
        """The value under ``Containers[container_id]`` of a network inspect."""
        return {"Name": self.container_name, "EndpointID": self.id,
                "MacAddress": self.mac,
                "IPv4Address": f"{self.ip}/{self.prefixlen}" if self.ip else "",
                "IPv6Address": ""}

    def settings(self) -> dict[str, Any]:
        """Docker's ``NetworkSettings.Networks[name]`` for a container inspect."""
        return {"IPAMConfig": None, "Links": None, "Aliases": list(self.aliases) or None,
                "MacAddress": self.mac, "NetworkID": self.network_id, "EndpointID": self.id,
                "Gateway": self.gateway, "IPAddress": self.ip,
                "IPPrefixLen": self.prefixlen if self.ip else 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "DriverOpts": None, "DNSNames": list(self.aliases) or None}


@dataclass(frozen=True)
class PortSpec:
    """What ``-p [host_ip:][host_port:]container_port[/proto]`` asks for."""

    container_port: int
    host_port: int = 0               # 0: a free port, chosen by the kernel
    host_ip: str = "0.0.0.0"
    proto: str = "tcp"

    def __post_init__(self) -> None:
        if self.proto not in PROTOCOLS:
            raise InvalidArgument(f"invalid protocol {self.proto!r}: want tcp, udp or sctp")
        if not 0 < self.container_port < 65536:
            raise InvalidArgument(f"invalid container port {self.container_port}")
        if not 0 <= self.host_port < 65536:
            raise InvalidArgument(f"invalid host port {self.host_port}")
        try:
            addr = ipaddress.ip_address(self.host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid host IP {self.host_ip!r}") from None
        if addr.version != 4:
            raise InvalidArgument(f"host IP {self.host_ip}: only IPv4 is supported")


@dataclass(frozen=True)
class PortBinding:
    endpoint_id: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int
    proto: str

    def __str__(self) -> str:
        """As ``docker ps`` and ``docker port`` print it: 0.0.0.0:8080->80/tcp."""
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.proto}"

    def docker_ports(self) -> dict[str, list[dict[str, str]]]:
        """One entry of ``NetworkSettings.Ports``."""
        return {f"{self.container_port}/{self.proto}":
                [{"HostIp": self.host_ip, "HostPort": str(self.host_port)}]}


def docker_mac(ip: str) -> str:
    """Docker's MAC for an address: 02:42 and the four bytes of the IPv4 address."""
    raw = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in raw)


def tap_mac(guest_mac: str) -> str:
    """The host side's MAC for a tap whose guest uses ``guest_mac``: the same
    with its first byte fe (libvirt's rule). It must differ from the guest's,
    or the bridge would keep the guest's frames for itself."""
    first, rest = guest_mac.lower().split(":", 1)
    return ("fa:" if first == "fe" else "fe:") + rest


def check_mac(mac: str) -> str:
    parts = mac.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        raise InvalidArgument(f"invalid MAC address {mac!r}")
    if int(parts[0], 16) & 1:
        raise InvalidArgument(f"invalid MAC address {mac!r}: a multicast address")
    return ":".join(parts)
