"""Containers on networks: the engine's side of ``isobox.network``.

A container whose NetworkMode names a bridge network (``bridge`` or a
user-defined network) is connected after the runtime created it (its init
waits in its new, empty network namespace) and before it starts: a veth
into ``/proc/<pid>/ns/net``, its published ports, its DNS names, and its
/etc/resolv.conf and /etc/hosts rewritten in place (they are bind-mounted
already). What was made is kept in ``<container dir>/network.json``, read by
inspect, ps and port, and undone at stop, kill, rm, or when a look finds the
container exited.

``default`` stays as it was (a private namespace with only ``lo``) unless
``ISOBOX_DEFAULT_NETWORK=bridge`` is set: the default bridge for every
container is not yet on by default (see the issue)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from isobox.engine.config import DEFAULT_ROOT
from isobox.errors import InvalidArgument, IsoboxError, NotFound
from isobox.linux.lazylog import get_logger

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.network import NetworkManager, PortSpec

log = get_logger(__name__)

STATE_FILE = "network.json"
_SPECIAL = ("none", "host")


def names_for_root(root: str) -> tuple[str, str]:
    """(nftables table, interface prefix) for an engine root: the default
    root keeps ``isobox``; others get names of their own so roots side by
    side never share a table or a bridge."""
    if os.path.abspath(root) == DEFAULT_ROOT:
        return "isobox", "isobox"
    digest = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()
    return f"isobox_{digest[:8]}", f"ib{digest[:6]}"


def open_manager(root: str) -> NetworkManager:
    from isobox.network import NetworkManager

    table, prefix = names_for_root(root)
    return NetworkManager(os.path.join(root, "network"), table=table, bridge_prefix=prefix)


def network_of(request: Mapping[str, Any]) -> str | None:
    """The network a container joins at start: a name, or None for the
    modes that take no endpoint (none, host, container:X, default off)."""
    host = request.get("HostConfig") or {}
    mode = host.get("NetworkMode") or "default"
    if mode == "default":
        if os.environ.get("ISOBOX_DEFAULT_NETWORK", "") != "bridge":
            return None
        return "bridge"
    if mode in _SPECIAL or mode.startswith("container:"):
        return None
    return str(mode)


def _endpoint_config(request: Mapping[str, Any], network: str) -> dict[str, Any]:
    endpoints = ((request.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    return dict(endpoints.get(network) or {})


def port_specs(request: Mapping[str, Any]) -> list[PortSpec]:
    from isobox.network import PortSpec

    host = request.get("HostConfig") or {}
    specs = []
    for key, bindings in sorted((host.get("PortBindings") or {}).items()):
        number, _, proto = str(key).partition("/")
        for binding in bindings or [{}]:
            binding = binding or {}
            host_port = str(binding.get("HostPort") or "0")
            if not host_port.isdigit():
                raise InvalidArgument(f"invalid host port {host_port!r}")
            specs.append(PortSpec(int(number), int(host_port),
                                  binding.get("HostIp") or "0.0.0.0", proto or "tcp"))
    return specs


class Networking:
    """One engine root's NetworkManager, opened when first needed."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._manager: NetworkManager | None = None

    @property
    def manager(self) -> NetworkManager:
        if self._manager is None:
            self._manager = open_manager(self.root)
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    # -- create ------------------------------------------------------------------------

    def validate(self, request: Mapping[str, Any]) -> None:
        """Refuse, before anything exists, an unknown network or a host port
        already taken."""
        from isobox.network.host import bind_check

        host = request.get("HostConfig") or {}
        mode = host.get("NetworkMode") or "default"
        if mode.startswith("container:") and not mode[len("container:"):]:
            raise InvalidArgument("invalid network mode: container: needs a container")
        network = network_of(request)
        if network is None:
            return
        net = self.manager.get(network)  # NotFound: "network X not found"
        specs = port_specs(request)
        if specs and net.internal:
            raise InvalidArgument(f"network {net.name} is internal: no port can be "
                                  "published to it")
        for spec in specs:
            if self.manager.store.port_taken(spec.host_ip, spec.host_port, spec.proto) \
                    and spec.host_port:
                from isobox.errors import Conflict

                raise Conflict(f"Bind for {spec.host_ip}:{spec.host_port} failed: port is "
                               "already allocated")
            if spec.host_port:
                bind_check(spec.host_ip, spec.host_port, spec.proto)

    # -- start ---------------------------------------------------------------------------

    def attach(self, record: ContainerRecord, container_dir: str, pid: int) -> None:
        """Connect the created container (init ``pid``) before it starts."""
        from isobox.network import new_id

        request = record.request
        network = network_of(request)
        if network is None:
            return
        nets = self.manager
        net = nets.get(network)
        conf = _endpoint_config(request, network) or _endpoint_config(
            request, str((request.get("HostConfig") or {}).get("NetworkMode") or ""))
        aliases: list[str] = []
        if net.user_defined:
            aliases = [record.name, record.id[:12], *(conf.get("Aliases") or [])]
        ip = ((conf.get("IPAMConfig") or {}).get("IPv4Address")) or None
        mac = conf.get("MacAddress") or request.get("MacAddress") or None
        ep_id = new_id()
        self._save(container_dir, {"endpoints": [ep_id], "network": net.name})
        ep = nets.connect(ep_id, net.name, f"/proc/{pid}/ns/net", container_id=record.id,
                          container_name=record.name, ip=ip, aliases=tuple(dict.fromkeys(
                              aliases)), mac=mac)
        try:
            specs = port_specs(request)
            if specs:
                nets.publish_many(ep.id, specs)
            host = request.get("HostConfig") or {}
            hostname = request.get("Hostname") or record.id[:12]
            _rewrite(os.path.join(container_dir, "resolv.conf"), nets.resolv_conf(
                net.name, dns=host.get("Dns") or (), dns_search=host.get("DnsSearch") or (),
                dns_options=host.get("DnsOptions") or ()))
            _rewrite(os.path.join(container_dir, "hosts"), nets.hosts(
                hostname, [ep], domainname=request.get("Domainname") or "",
                extra_hosts=host.get("ExtraHosts") or ()))
        except BaseException:
            self.detach(container_dir)
            raise

    def connect(self, record: ContainerRecord, container_dir: str, pid: int, network: str, *,
                ip: str | None = None, aliases: tuple[str, ...] = ()) -> None:
        """``network connect`` of a running container."""
        from isobox.network import new_id

        nets = self.manager
        net = nets.get(network)
        names = [record.name, record.id[:12], *aliases] if net.user_defined else []
        state = self.load(container_dir)
        ep_id = new_id()
        state.setdefault("endpoints", []).append(ep_id)
        self._save(container_dir, state)
        try:
            nets.connect(ep_id, net.name, f"/proc/{pid}/ns/net", container_id=record.id,
                         container_name=record.name, ip=ip,
                         aliases=tuple(dict.fromkeys(names)))
        except BaseException:
            state["endpoints"].remove(ep_id)
            self._save(container_dir, state)
            raise

    def disconnect(self, container_dir: str, network: str) -> None:
        state = self.load(container_dir)
        net = self.manager.get(network)
        for ep_id in list(state.get("endpoints") or []):
            ep = self.manager.store.endpoint(ep_id)
            if ep is not None and ep.network_id == net.id:
                self.manager.disconnect(ep_id)
                state["endpoints"].remove(ep_id)
                self._save(container_dir, state)
                return
        raise NotFound(f"container is not connected to network {network}")

    # -- stop, rm -------------------------------------------------------------------------

    def detach(self, container_dir: str) -> None:
        """Undo every endpoint the container has (idempotent)."""
        state = self.load(container_dir)
        ids = list(state.get("endpoints") or [])
        if not ids:
            return
        for ep_id in ids:
            try:
                if self.manager.store.endpoint(ep_id) is not None:
                    self.manager.disconnect(ep_id)
            except IsoboxError as exc:
                log.warning("disconnecting endpoint %s: %s", ep_id, exc)
        self._save(container_dir, {})

    def attached(self, container_dir: str) -> bool:
        return bool(self.load(container_dir).get("endpoints"))

    # -- views ----------------------------------------------------------------------------

    def load(self, container_dir: str) -> dict[str, Any]:
        try:
            with open(os.path.join(container_dir, STATE_FILE), "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, container_dir: str, state: Mapping[str, Any]) -> None:
        from isobox.linux.files import atomic_write

        atomic_write(os.path.join(container_dir, STATE_FILE),
                     json.dumps(dict(state)).encode() + b"\n", 0o644)

    def settings(self, container_dir: str) -> dict[str, Any] | None:
        """Docker's NetworkSettings, or None when the container has no endpoint."""
        ids = self.load(container_dir).get("endpoints") or []
        if not ids:
            return None
        networks: dict[str, Any] = {}
        ports: dict[str, Any] = {}
        first: dict[str, Any] = {}
        for ep_id in ids:
            ep = self.manager.store.endpoint(ep_id)
            if ep is None:
                continue
            entry = ep.settings()
            networks[ep.network] = entry
            first = first or entry
            for binding in self.manager.ports(ep.id):
                for key, value in binding.docker_ports().items():
                    ports.setdefault(key, []).extend(value)
        return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
                "Ports": ports, "Networks": networks,
                "IPAddress": first.get("IPAddress", ""), "Gateway": first.get("Gateway", ""),
                "IPPrefixLen": first.get("IPPrefixLen", 0), "MacAddress":
                first.get("MacAddress", ""), "EndpointID": first.get("EndpointID", "")}

    def bindings(self, container_dir: str) -> list[tuple[str, str]] | None:
        """[("80/tcp", "0.0.0.0:8080")...] or None without an endpoint."""
        ids = self.load(container_dir).get("endpoints") or []
        if not ids:
            return None
        out = []
        for ep_id in ids:
            for b in self.manager.ports(ep_id):
                out.append((f"{b.container_port}/{b.proto}", f"{b.host_ip}:{b.host_port}"))
        return out

    def ps_ports(self, container_dir: str) -> str:
        ids = self.load(container_dir).get("endpoints") or []
        if not ids:
            return ""
        return ", ".join(str(b) for ep_id in ids for b in self.manager.ports(ep_id))


def _rewrite(path: str, text: str) -> None:
    """Write in place (same inode): the file is bind-mounted into the container."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
