"""Links, addresses and routes over netlink (pyroute2), never by running ``ip``.

``Links`` is the seam: ``NetlinkLinks`` talks to the kernel, tests of the
manager's logic use a fake. Every method is idempotent where it can be
(deleting a missing link is not an error), because teardown after a crash
meets half-made state.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import os
import secrets
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from isobox.errors import Conflict, InvalidArgument, IsoboxError, NotFound, Unavailable
from isobox.linux import namespaces
from isobox.linux.lazylog import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class VethRequest:
    bridge: str
    host_ifname: str
    netns: str                # path of the container's network namespace
    ifname: str | None        # None: the first free ethN in the namespace
    ip: str
    prefixlen: int
    mac: str
    gateway: str | None       # add a default route through it (when the netns has none)


@dataclass(frozen=True)
class TapRequest:
    """A persistent tap device on a bridge: a VM's NIC, seen from the host."""

    bridge: str
    ifname: str
    mac: str                  # the host side's own MAC, never the guest's
    mtu: int | None = None
    owner: int = 0            # uid allowed to attach (besides CAP_NET_ADMIN)


class Links(Protocol):
    def ensure_bridge(self, name: str, gateway: str, prefixlen: int) -> bool:
        """Create the bridge with its address and bring it up; False when it existed."""
        ...

    def delete_link(self, name: str) -> bool:
        """Delete a link of the host namespace; False when there was none."""
        ...

    def link_kinds(self) -> dict[str, str]:
        """Every link of the host namespace: name -> kind ("bridge", "veth", "tun", "")."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the host namespace has a link of that name."""
        ...

    def add_veth(self, req: VethRequest) -> str:
        """The veth pair of an endpoint, configured on both ends; returns the
        name inside the namespace. Undoes itself when a step fails."""
        ...

    def add_tap(self, req: TapRequest) -> None:
        """A persistent tap (not multi-queue) enslaved to the bridge and up.
        A stale link of that name is replaced; undoes itself on failure."""
        ...

    def netns_up(self, netns: str) -> None:
        """Bring ``lo`` up in the namespace (the ``none`` network)."""
        ...

    def default_route(self, netns: str, gateway: str | None) -> None:
        """Add a default route through gateway unless the namespace has one."""
        ...

    def host_networks(self) -> list[ipaddress.IPv4Network]:
        """Destinations of the host's IPv4 routes and networks of its addresses."""
        ...


def _err(exc: Exception) -> int:
    return int(getattr(exc, "code", 0) or 0)


def _translate(exc: Exception, what: str) -> IsoboxError:
    code = _err(exc)
    if code == errno.EEXIST:
        return Conflict(f"{what}: already exists")
    if code in (errno.ENODEV, errno.ENOENT):
        return NotFound(f"{what}: no such device")
    if code == errno.EPERM:
        return Unavailable(f"{what}: permission denied (needs CAP_NET_ADMIN)")
    return IsoboxError(f"{what}: {exc}")


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name) if hasattr(msg, "get_attr") else msg.get(name)


def _kind(msg: Any) -> str:
    info = _attr(msg, "IFLA_LINKINFO")
    if not info:
        return ""
    kind = info.get_attr("IFLA_INFO_KIND") if hasattr(info, "get_attr") else None
    return str(kind or "")


_prefetching: threading.Thread | None = None


def _import_iproute() -> Any:
    try:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]
    except ImportError:
        raise Unavailable("networking needs pyroute2: pip install pyroute2") from None
    return IPRoute


def prefetch() -> None:
    """Start importing pyroute2 in a background thread. It costs ~130 ms of
    CPU, which a container start can overlap with waiting for its monitor;
    the first netlink call waits for it. Idempotent."""
    global _prefetching
    if _prefetching is not None or "pyroute2.iproute" in sys.modules:
        return

    def work() -> None:
        try:
            _import_iproute()
        except Exception:  # reported again by the first real use
            pass

    _prefetching = threading.Thread(target=work, name="pyroute2-import", daemon=True)
    _prefetching.start()


class NetlinkLinks:
    """``Links`` over pyroute2: one short-lived netlink socket per call.
    pyroute2 is imported at the first netlink call (see ``prefetch``): what
    needs no netlink (existence checks, deleting a link already gone) never
    pays for it."""

    def __init__(self) -> None:
        if importlib.util.find_spec("pyroute2") is None:
            raise Unavailable("networking needs pyroute2: pip install pyroute2")

    @contextmanager
    def _ipr(self, netns: str | None = None) -> Iterator[Any]:
        """A netlink socket in the host's namespace, or in ``netns``."""
        if _prefetching is not None:
            _prefetching.join()
        iproute = _import_iproute()
        ipr = iproute() if netns is None else _ipr_in(netns, iproute)
        try:
            yield ipr
        finally:
            ipr.close()

    def ensure_bridge(self, name: str, gateway: str, prefixlen: int) -> bool:
        with self._ipr() as ipr:
            created = False
            found = ipr.link_lookup(ifname=name)
            if not found:
                try:
                    # A MAC of its own: otherwise a bridge takes the lowest of
                    # its ports' and changes it when that port leaves, and the
                    # containers' ARP entries for the gateway go stale.
                    ipr.link("add", ifname=name, kind="bridge", address=_random_mac())
                except Exception as exc:
                    raise _translate(exc, f"create bridge {name}") from exc
                created = True
                found = ipr.link_lookup(ifname=name)
            index = found[0]
            have = {(_attr(a, "IFA_ADDRESS"), a["prefixlen"])
                    for a in ipr.get_addr(index=index, family=2)}
            if (gateway, prefixlen) not in have:
                ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            ipr.link("set", index=index, state="up")
            return created

    def exists(self, name: str) -> bool:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    def delete_link(self, name: str) -> bool:
        if not self.exists(name):  # mostly gone with its namespace: no netlink needed
            return False
        with self._ipr() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return False
            try:
                ipr.link("del", index=found[0])
            except Exception as exc:
                if _err(exc) in (errno.ENODEV, errno.ENOENT):
                    return False
                raise _translate(exc, f"delete link {name}") from exc
            return True

    def link_kinds(self) -> dict[str, str]:
        with self._ipr() as ipr:
            return {str(_attr(link, "IFLA_IFNAME")): _kind(link) for link in ipr.get_links()}

    def add_veth(self, req: VethRequest) -> str:
        # The peer is born inside the namespace under a temporary name, then
        # renamed there: no clash with the host's names, nothing to move.
        temp = "tmp" + req.host_ifname[-12:]
        fd = _open_ns(req.netns)
        try:
            with self._ipr() as ipr:
                stale = ipr.link_lookup(ifname=req.host_ifname)
                if stale:  # from an interrupted connect; its peer goes with it
                    ipr.link("del", index=stale[0])
                bridge = ipr.link_lookup(ifname=req.bridge)
                if not bridge:
                    raise NotFound(f"bridge {req.bridge} does not exist")
                try:
                    ipr.link("add", ifname=req.host_ifname, kind="veth",
                             peer={"ifname": temp, "net_ns_fd": fd})
                except Exception as exc:
                    raise _translate(exc, f"create veth {req.host_ifname}") from exc
                try:
                    host = ipr.link_lookup(ifname=req.host_ifname)[0]
                    ipr.link("set", index=host, master=bridge[0], state="up")
                    return self._configure_peer(req, temp)
                except BaseException:
                    try:
                        ipr.link("del", index=ipr.link_lookup(ifname=req.host_ifname)[0])
                    except Exception as exc:  # check/fix will find it
                        log.warning("undo veth %s: %s", req.host_ifname, exc)
                    raise
        finally:
            os.close(fd)

    def add_tap(self, req: TapRequest) -> None:
        with self._ipr() as ipr:
            stale = ipr.link_lookup(ifname=req.ifname)
            if stale:  # from an interrupted connect
                ipr.link("del", index=stale[0])
            bridge = ipr.link_lookup(ifname=req.bridge)
            if not bridge:
                raise NotFound(f"bridge {req.bridge} does not exist")
            try:
                # Persistent (TUNSETPERSIST), owned by req.owner, one queue; the
                # VMM that opens it sets its own flags (no_pi, vnet_hdr).
                ipr.link("add", ifname=req.ifname, kind="tuntap", mode="tap",
                         uid=req.owner, gid=req.owner, ifr=dict(_TAP_FLAGS))
            except Exception as exc:
                raise _translate(exc, f"create tap {req.ifname}") from exc
            try:
                found = ipr.link_lookup(ifname=req.ifname)
                if not found:
                    raise NotFound(f"tap {req.ifname} vanished after its creation")
                attrs: dict[str, Any] = {"address": req.mac}
                if req.mtu:
                    attrs["mtu"] = req.mtu
                try:
                    ipr.link("set", index=found[0], **attrs)
                    ipr.link("set", index=found[0], master=bridge[0], state="up")
                except Exception as exc:
                    raise _translate(exc, f"attach tap {req.ifname} to {req.bridge}") from exc
            except BaseException:
                try:
                    self.delete_link(req.ifname)
                except Exception as exc:  # check/fix will find it
                    log.warning("undo tap %s: %s", req.ifname, exc)
                raise

    def _configure_peer(self, req: VethRequest, temp: str) -> str:
        with self._ipr(req.netns) as ns:
            ifname = req.ifname or _free_eth(ns)
            if ns.link_lookup(ifname=ifname):
                raise Conflict(f"interface {ifname} already exists in {req.netns}")
            index = ns.link_lookup(ifname=temp)[0]
            try:
                ns.link("set", index=index, ifname=ifname, address=req.mac)
                ns.addr("add", index=index, address=req.ip, prefixlen=req.prefixlen)
                ns.link("set", index=index, state="up")
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                if req.gateway and not _has_default(ns):
                    ns.route("add", dst="0.0.0.0/0", gateway=req.gateway)
            except Exception as exc:
                raise _translate(exc, f"configure {ifname} in {req.netns}") from exc
            return ifname

    def netns_up(self, netns: str) -> None:
        with self._ipr(netns) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def default_route(self, netns: str, gateway: str | None) -> None:
        if not gateway:
            return
        with self._ipr(netns) as ns:
            if not _has_default(ns):
                ns.route("add", dst="0.0.0.0/0", gateway=gateway)

    def host_networks(self) -> list[ipaddress.IPv4Network]:
        out: list[ipaddress.IPv4Network] = []
        with self._ipr() as ipr:
            for route in ipr.get_routes(family=2):
                dst = _attr(route, "RTA_DST")
                if dst and route["dst_len"] > 0:
                    out.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
            for addr in ipr.get_addr(family=2):
                ip = _attr(addr, "IFA_ADDRESS")
                if ip:
                    out.append(ipaddress.IPv4Network(f"{ip}/{addr['prefixlen']}", strict=False))
        return out


_TAP_FLAGS = (("no_pi", 1), ("one_queue", 0), ("vnet_hdr", 1), ("tun_excl", 0),
              ("multi_queue", 0), ("persist", 0), ("nofilter", 0))


def _random_mac() -> str:
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


def _open_ns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist") from None


def _ipr_in(netns: str, factory: Any) -> Any:
    """A netlink socket bound in ``netns``: this thread joins it just long
    enough to open the socket (a socket stays in the namespace it was made
    in). pyroute2's own ``IPRoute(netns=...)`` forks a helper for the same,
    at about five times the cost."""
    target = _open_ns(netns)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        namespaces.join(target, "network")
        try:
            return factory()
        finally:
            try:
                namespaces.join(home, "network")
            except OSError as exc:  # never carry on in a container's namespace
                os.write(2, f"isobox: cannot return to the host network namespace: {exc}\n"
                         .encode())
                os._exit(125)
    finally:
        os.close(target)
        os.close(home)


def _has_default(ns: Any) -> bool:
    return any(r["dst_len"] == 0 for r in ns.get_routes(family=2, table=254))


def _free_eth(ns: Any) -> str:
    names = {str(_attr(link, "IFLA_IFNAME")) for link in ns.get_links()}
    n = 0
    while f"eth{n}" in names:
        n += 1
    return f"eth{n}"


def check_ifname(name: str) -> str:
    if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise InvalidArgument(f"invalid interface name {name!r}: 1 to 15 characters, no / or "
                              "spaces")
    return name
