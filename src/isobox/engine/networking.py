"""Containers on networks: the engine's side of ``isobox.network``.

A container whose NetworkMode names a bridge network (``bridge``, the
default as in Docker, or a user-defined network) is connected after the
runtime created it (its init waits in its new, empty network namespace) and
before it starts: a veth into ``/proc/<pid>/ns/net``, its published ports
(``-p``, and with ``-P`` every exposed port on a free host port), its DNS
names, and its /etc/resolv.conf and /etc/hosts rewritten in place (they are
bind-mounted already). A VM-isolated container is connected before its VM
boots (``attach_vm``): a tap on the bridge per NIC, whose list goes to the
VMM. What was made is kept in ``<container dir>/network.json``, read by
inspect, ps and port, and undone at stop, kill, rm, or when a look finds the
container exited."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from isobox.engine.config import DEFAULT_ROOT
from isobox.errors import InvalidArgument, IsoboxError, NotFound
from isobox.linux.lazylog import get_logger

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.network import EndpointInfo, Network, NetworkManager, PortSpec

log = get_logger(__name__)

STATE_FILE = "network.json"
_SPECIAL = ("none", "host")
_VM = ("vm", "hyperv")


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
    """The network a container joins at start: a name (``default`` is the
    default ``bridge``, as in Docker), or None for the modes that take no
    endpoint (none, host, container:X)."""
    host = request.get("HostConfig") or {}
    mode = host.get("NetworkMode") or "default"
    if mode == "default":
        return "bridge"
    if mode in _SPECIAL or mode.startswith("container:"):
        return None
    return str(mode)


def check_vm(request: Mapping[str, Any]) -> None:
    """Refuse the network modes a VM-isolated container cannot have: ``host``
    (a VM has its own kernel and network stack) and ``container:X`` (a VM
    cannot join another container's namespace). InvalidArgument."""
    mode = str((request.get("HostConfig") or {}).get("NetworkMode") or "default")
    if mode == "host":
        raise InvalidArgument("--network host cannot be used with --isolation=vm: a VM has a "
                              "network stack of its own (use a bridge network, or none)")
    if mode.startswith("container:"):
        raise InvalidArgument("--network container:... cannot be used with --isolation=vm: a "
                              "VM cannot share another container's network namespace")


def _endpoint_config(request: Mapping[str, Any], network: str) -> dict[str, Any]:
    endpoints = ((request.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    return dict(endpoints.get(network) or {})


def _port_key(key: str) -> tuple[int, str]:
    number, _, proto = str(key).partition("/")
    if not number.isdigit():
        raise InvalidArgument(f"invalid port {key!r}")
    return int(number), (proto or "tcp").lower()


def port_specs(request: Mapping[str, Any], exposed: Iterable[str] = ()) -> list[PortSpec]:
    """What to publish: ``-p`` (HostConfig.PortBindings) and, with ``-P``
    (PublishAllPorts), every other port of ``exposed`` (the image's and
    ``--expose``'s, "80/tcp") on a free host port of 0.0.0.0, as Docker does."""
    from isobox.network import PortSpec

    host = request.get("HostConfig") or {}
    specs = []
    bound = set()
    for key, bindings in sorted((host.get("PortBindings") or {}).items(),
                                key=lambda kv: _port_key(kv[0])):
        number, proto = _port_key(key)
        bound.add((number, proto))
        for binding in bindings or [{}]:
            binding = binding or {}
            host_port = str(binding.get("HostPort") or "0")
            if not host_port.isdigit():
                raise InvalidArgument(f"invalid host port {host_port!r}")
            specs.append(PortSpec(number, int(host_port), binding.get("HostIp") or "0.0.0.0",
                                  proto))
    if host.get("PublishAllPorts"):
        for number, proto in sorted({_port_key(k) for k in exposed} - bound):
            specs.append(PortSpec(number, 0, "0.0.0.0", proto))
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

    def validate(self, request: Mapping[str, Any], *, isolation: str = "") -> None:
        """Refuse, before anything exists, an unknown network, a host port
        already taken, or (``isolation`` vm, else the request's Isolation) a
        network mode a VM cannot have (``check_vm``). The network stack
        (isobox.network, pyroute2: ~20 ms) is imported only for a network."""
        host = request.get("HostConfig") or {}
        mode = host.get("NetworkMode") or "default"
        if mode.startswith("container:") and not mode[len("container:"):]:
            raise InvalidArgument("invalid network mode: container: needs a container")
        if (isolation or str(host.get("Isolation") or "")).lower() in _VM:
            check_vm(request)
        network = network_of(request)
        if network is None:
            return
        net = self.manager.get(network)  # NotFound: "network X not found"
        if net.is_bridge:
            # The start will need netlink: pyroute2's import (~130 ms) runs
            # while the container is made and its monitor starts.
            from isobox.network.netlink import prefetch

            prefetch()
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
                from isobox.network.host import bind_check

                bind_check(spec.host_ip, spec.host_port, spec.proto)

    # -- start ---------------------------------------------------------------------------

    def _endpoint_request(self, record: ContainerRecord, network: str
                          ) -> tuple[Network, tuple[str, ...], str | None, str | None]:
        """(network, DNS names, requested ip, requested MAC) of the first endpoint."""
        request = record.request
        net = self.manager.get(network)
        conf = _endpoint_config(request, network) or _endpoint_config(
            request, str((request.get("HostConfig") or {}).get("NetworkMode") or ""))
        aliases: list[str] = []
        if net.user_defined:
            aliases = [record.name, record.id[:12], *(conf.get("Aliases") or [])]
        ip = ((conf.get("IPAMConfig") or {}).get("IPv4Address")) or None
        mac = conf.get("MacAddress") or request.get("MacAddress") or None
        return net, tuple(dict.fromkeys(aliases)), ip, mac

    def _finish(self, record: ContainerRecord, container_dir: str, net: Network,
                ep: EndpointInfo) -> None:
        """Published ports and the container's resolv.conf and hosts."""
        nets = self.manager
        request = record.request
        host = request.get("HostConfig") or {}
        exposed = self.exposed_ports(record) if host.get("PublishAllPorts") else []
        specs = port_specs(request, exposed)
        if specs and net.internal and not (host.get("PortBindings") or {}):
            specs = []  # -P on an internal network: nothing can be published
        if specs:
            nets.publish_many(ep.id, specs)
        hostname = request.get("Hostname") or record.id[:12]
        _rewrite(os.path.join(container_dir, "resolv.conf"), nets.resolv_conf(
            net.name, dns=host.get("Dns") or (), dns_search=host.get("DnsSearch") or (),
            dns_options=host.get("DnsOptions") or ()))
        _rewrite(os.path.join(container_dir, "hosts"), nets.hosts(
            hostname, [ep], domainname=request.get("Domainname") or "",
            extra_hosts=host.get("ExtraHosts") or ()))

    def exposed_ports(self, record: ContainerRecord) -> list[str]:
        """The container's exposed ports ("80/tcp"): ``--expose`` and ``-p``
        (the request's ExposedPorts) and the image's."""
        ports = dict.fromkeys(record.request.get("ExposedPorts") or {})
        try:
            from isobox.engine.config import EngineConfig
            from isobox.images.content import ContentStore
            from isobox.oci import image_spec

            store = ContentStore(EngineConfig(root=self.root).content_dir)
            config = image_spec.decode_config(store.read(record.image_id)).config
            ports.update(dict.fromkeys((config.exposed_ports if config else None) or {}))
        except (IsoboxError, OSError, ValueError) as exc:  # the image is gone
            log.warning("exposed ports of image %s: %s", record.image_id, exc)
        return list(ports)

    def attach(self, record: ContainerRecord, container_dir: str, pid: int) -> None:
        """Connect the created container (init ``pid``) before it starts."""
        from isobox.network import new_id

        network = network_of(record.request)
        if network is None:
            return
        net, aliases, ip, mac = self._endpoint_request(record, network)
        ep_id = new_id()
        self._save(container_dir, {"endpoints": [ep_id], "network": net.name})
        ep = self.manager.connect(ep_id, net.name, f"/proc/{pid}/ns/net",
                                  container_id=record.id, container_name=record.name, ip=ip,
                                  aliases=aliases, mac=mac)
        try:
            self._finish(record, container_dir, net, ep)
        except BaseException:
            self.detach(container_dir)
            raise

    def attach_vm(self, record: ContainerRecord, container_dir: str) -> list[dict[str, Any]]:
        """Connect a VM-isolated container before its VM starts (there is no
        process or namespace yet): a tap on the network's bridge, its
        published ports (DNAT to the VM's address), resolv.conf and hosts
        written like ``attach``'s. Returns the VM's NICs, in order::

            [{"tap": "isoboxt1a2b3c4d", "mac": "02:42:ac:12:00:02",
              "address": "172.18.0.2/16", "gateway": "172.18.0.1" or None,
              "mtu": 1500 or None}]

        empty for ``--network none``. ``host`` and ``container:X`` are
        refused (``check_vm``). ``detach`` undoes it, as for a veth."""
        from isobox.network import new_id

        check_vm(record.request)
        network = network_of(record.request)
        if network is None:
            return []
        nets = self.manager
        net, aliases, ip, mac = self._endpoint_request(record, network)
        nets.check_tap(net.name)
        ep_id = new_id()
        self._save(container_dir, {"endpoints": [ep_id], "network": net.name, "vm": True})
        try:
            ep = nets.connect_tap(ep_id, net.name, container_id=record.id,
                                  container_name=record.name, ip=ip, aliases=aliases, mac=mac)
            self._finish(record, container_dir, net, ep)
        except BaseException:
            self.detach(container_dir)
            raise
        return [{"tap": ep.host_ifname, "mac": ep.mac, "address": f"{ep.ip}/{ep.prefixlen}",
                 "gateway": None if net.internal else ep.gateway, "mtu": net.mtu}]

    def connect(self, record: ContainerRecord, container_dir: str, pid: int, network: str, *,
                ip: str | None = None, aliases: tuple[str, ...] = ()) -> None:
        """``network connect`` of a running container."""
        from isobox.errors import Unavailable
        from isobox.network import new_id

        if getattr(record, "isolation", "process") in _VM or self.load(container_dir).get("vm"):
            raise Unavailable("network connect of a VM-isolated container is not supported: "
                              "its NICs are made before the VM boots")
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
        """Undo every endpoint the container has, veths and taps alike
        (idempotent)."""
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
