"""A container's /etc/resolv.conf and /etc/hosts, as Docker writes them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from isobox.errors import InvalidArgument
from isobox.network.host import ResolvConf
from isobox.network.model import Network

#: Docker's fallback when the host has no resolver a container can reach.
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")

_HOSTS_HEAD = ("127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
               "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
               "ff02::2\tip6-allrouters")


def _loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server).is_loopback
    except ValueError:
        return True  # not an address: unusable


def resolv_conf_for(network: Network | None, host: ResolvConf, *, dns: Sequence[str] = (),
                    dns_search: Sequence[str] = (), dns_options: Sequence[str] = ()) -> str:
    """The container's resolv.conf.

    On a user-defined network the one nameserver is the network's gateway,
    where the embedded DNS server answers container names and forwards the
    rest to the host's resolvers. Elsewhere (the default bridge, ``none``):
    ``dns`` or the host's resolvers without loopback ones (unreachable from
    the container's namespace), falling back to Docker's public defaults.
    ``host`` networking copies the host's file as it is. ``dns_search`` and
    ``dns_options`` replace the host's search and options lines."""
    if network is not None and network.driver == "host" and not (dns or dns_search
                                                                  or dns_options):
        servers: Sequence[str] = host.nameservers
    elif network is not None and network.user_defined:
        # TODO(engine): per-container --dns upstreams on user networks; the
        # embedded server forwards to the host's resolvers for now.
        servers = (network.gateway,)
    else:
        servers = tuple(dns) or tuple(s for s in host.nameservers if not _loopback(s))
        if not servers and (network is None or network.driver != "null"):
            servers = FALLBACK_DNS
    lines = [f"nameserver {s}" for s in servers]
    search = tuple(dns_search) or host.search
    options = tuple(dns_options) or host.options
    if search and search != (".",):
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hosts_for(hostname: str, ips: Sequence[str] = (), *, domainname: str = "",
              extra_hosts: Sequence[str] = (), host_gateway: str = "") -> str:
    """The container's /etc/hosts: localhost lines, ``--add-host name:ip``
    entries (``host-gateway`` stands for ``host_gateway``), then the
    container's own addresses under its hostname."""
    lines = list(_HOSTS_HEAD)
    for entry in extra_hosts:
        name, sep, addr = entry.partition(":")
        if not sep or not name or not addr:
            raise InvalidArgument(f"invalid extra host {entry!r}: want name:ip")
        if addr == "host-gateway":
            if not host_gateway:
                raise InvalidArgument("host-gateway is not known for this container")
            addr = host_gateway
        lines.append(f"{addr}\t{name}")
    names = hostname if not domainname else f"{hostname}.{domainname} {hostname}"
    lines.extend(f"{ip}\t{names}" for ip in ips if ip)
    return "\n".join(lines) + "\n"
