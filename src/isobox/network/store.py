"""The network layer's SQLite (WAL) state: networks, endpoints, address
leases, published ports, DNS records.

Crash safety rests on two constraints. ``UNIQUE(network_id, ip)`` on leases
means two endpoints can never hold one address, whatever interleaving of
processes or crashes; and a lease is written in the same transaction as its
endpoint row (state ``creating``), before anything is plumbed, so a process
killed half-way leaves a record that ``reconcile``/``fix`` can find and undo.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager

from isobox.errors import AlreadyExists, Conflict
from isobox.linux.sqlitedb import open_db, transaction
from isobox.network.ipam import Subnet, allocate, parse_subnet
from isobox.network.model import EndpointInfo, Network, PortBinding, docker_mac

_SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    bridge TEXT NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ip_range TEXT NOT NULL,
    internal INTEGER NOT NULL,
    predefined INTEGER NOT NULL,
    options TEXT NOT NULL,
    labels TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS networks_bridge ON networks(bridge) WHERE bridge != '';
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    container_name TEXT NOT NULL,
    netns TEXT NOT NULL,
    ifname TEXT NOT NULL,
    host_ifname TEXT NOT NULL,
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    aliases TEXT NOT NULL,
    state TEXT NOT NULL,          -- creating | ready
    created REAL NOT NULL,
    UNIQUE(network_id, container_id)
);
CREATE TABLE IF NOT EXISTS leases (
    network_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE(network_id, ip)
);
CREATE TABLE IF NOT EXISTS ports (
    endpoint_id TEXT NOT NULL,
    host_ip TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    proto TEXT NOT NULL,
    container_ip TEXT NOT NULL,
    container_port INTEGER NOT NULL,
    UNIQUE(host_ip, host_port, proto)
);
CREATE TABLE IF NOT EXISTS dns_records (
    network_id TEXT NOT NULL,
    name TEXT NOT NULL,
    ip TEXT NOT NULL,
    UNIQUE(network_id, name, ip)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_NET_COLS = ("id, name, driver, bridge, subnet, gateway, ip_range, internal, predefined, "
             "options, labels, created")
_EP_COLS = ("e.id, e.network_id, n.name, e.container_id, e.container_name, e.netns, e.ifname, "
            "e.host_ifname, e.ip, n.subnet, n.gateway, e.mac, e.aliases")


def _network(row: sqlite3.Row | tuple[object, ...]) -> Network:
    (id_, name, driver, bridge, subnet, gateway, ip_range, internal, predefined, options,
     labels, created) = row
    return Network(id=str(id_), name=str(name), driver=str(driver), bridge=str(bridge),
                   subnet=str(subnet), gateway=str(gateway), ip_range=str(ip_range),
                   internal=bool(internal), predefined=bool(predefined),
                   options=json.loads(str(options)), labels=json.loads(str(labels)),
                   created=float(str(created)))


def _endpoint(row: tuple[object, ...]) -> EndpointInfo:
    (id_, net_id, net_name, cid, cname, netns, ifname, host_if, ip, subnet, gateway, mac,
     aliases) = row
    prefix = int(str(subnet).rsplit("/", 1)[1]) if subnet else 0
    return EndpointInfo(id=str(id_), network_id=str(net_id), network=str(net_name),
                        container_id=str(cid), container_name=str(cname), netns=str(netns),
                        ifname=str(ifname), host_ifname=str(host_if), ip=str(ip),
                        prefixlen=prefix if ip else 0, gateway=str(gateway) if ip else "",
                        mac=str(mac), aliases=tuple(json.loads(str(aliases))))


class Store:
    def __init__(self, path: str) -> None:
        self._db = open_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    # -- networks -------------------------------------------------------------

    def add_network(self, net: Network) -> None:
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO networks({_NET_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           (net.id, net.name, net.driver, net.bridge, net.subnet, net.gateway,
                            net.ip_range, int(net.internal), int(net.predefined),
                            json.dumps(dict(net.options)), json.dumps(dict(net.labels)),
                            net.created))
        except sqlite3.IntegrityError as exc:
            if "bridge" in str(exc):
                raise AlreadyExists(f"bridge {net.bridge} is used by another network") from None
            raise AlreadyExists(f"network with name {net.name} already exists") from None

    def move_network(self, net_id: str, subnet: str, gateway: str) -> bool:
        """Give a network a new subnet and gateway, unless an address of it is
        leased (then False): the check and the change are one transaction."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM leases WHERE network_id = ? LIMIT 1",
                          (net_id,)).fetchone():
                return False
            db.execute("UPDATE networks SET subnet = ?, gateway = ? WHERE id = ?",
                       (subnet, gateway, net_id))
            return True

    def networks(self) -> list[Network]:
        rows = self._db.execute(f"SELECT {_NET_COLS} FROM networks ORDER BY created").fetchall()
        return [_network(r) for r in rows]

    def remove_network(self, net_id: str) -> None:
        """Refuses (Conflict) while endpoints exist; the check and the delete
        are one transaction, so a racing connect cannot slip in between."""
        with self._tx() as db:
            row = db.execute("SELECT container_name, container_id FROM endpoints "
                             "WHERE network_id = ? LIMIT 1", (net_id,)).fetchone()
            if row is not None:
                name = row[0] or row[1]
                raise Conflict(f"error while removing network: network has active endpoints "
                               f"(container {name})")
            db.execute("DELETE FROM dns_records WHERE network_id = ?", (net_id,))
            db.execute("DELETE FROM leases WHERE network_id = ?", (net_id,))
            db.execute("DELETE FROM networks WHERE id = ?", (net_id,))

    # -- endpoints and leases ---------------------------------------------------

    def reserve_endpoint(self, ep: EndpointInfo, subnet: Subnet | None,
                         requested_ip: str | None) -> EndpointInfo:
        """Take an address (when the network has a subnet) and write the endpoint
        in state ``creating``, in one transaction. Returns the endpoint with its IP."""
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM endpoints WHERE network_id = ? AND container_id = ?",
                          (ep.network_id, ep.container_id)).fetchone():
                raise Conflict(f"endpoint with name {ep.container_name or ep.container_id} "
                               f"already exists in network {ep.network}")
            if db.execute("SELECT 1 FROM endpoints WHERE id = ?", (ep.id,)).fetchone():
                raise AlreadyExists(f"endpoint {ep.id} already exists")
            ip = ""
            if subnet is not None:
                used = [r[0] for r in db.execute("SELECT ip FROM leases WHERE network_id = ?",
                                                 (ep.network_id,))]
                ip = allocate(subnet, used, requested_ip)
                db.execute("INSERT INTO leases(network_id, ip, endpoint_id, created) "
                           "VALUES (?,?,?,?)", (ep.network_id, ip, ep.id, now))
            mac = ep.mac or ""
            if ip and not mac:
                mac = docker_mac(ip)
            db.execute("INSERT INTO endpoints(id, network_id, container_id, container_name, "
                       "netns, ifname, host_ifname, ip, mac, aliases, state, created) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,'creating',?)",
                       (ep.id, ep.network_id, ep.container_id, ep.container_name, ep.netns,
                        ep.ifname, ep.host_ifname, ip, mac, json.dumps(list(ep.aliases)), now))
        made = self.endpoint(ep.id)
        assert made is not None
        return made

    def set_ifname(self, endpoint_id: str, ifname: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE endpoints SET ifname = ? WHERE id = ?", (ifname, endpoint_id))

    def mark_ready(self, endpoint_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE endpoints SET state = 'ready' WHERE id = ?", (endpoint_id,))

    def endpoint(self, endpoint_id: str) -> EndpointInfo | None:
        row = self._db.execute(f"SELECT {_EP_COLS} FROM endpoints e JOIN networks n "
                               "ON n.id = e.network_id WHERE e.id = ?", (endpoint_id,)).fetchone()
        return _endpoint(row) if row else None

    def endpoints(self, network_id: str | None = None, *, netns: str | None = None
                  ) -> list[EndpointInfo]:
        sql = f"SELECT {_EP_COLS} FROM endpoints e JOIN networks n ON n.id = e.network_id"
        where, args = [], []
        if network_id is not None:
            where.append("e.network_id = ?")
            args.append(network_id)
        if netns is not None:
            where.append("e.netns = ?")
            args.append(netns)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_endpoint(r) for r in self._db.execute(sql + " ORDER BY e.created", args)]

    def endpoint_states(self) -> dict[str, str]:
        return {str(r[0]): str(r[1]) for r in self._db.execute("SELECT id, state FROM endpoints")}

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Forget the endpoint, its lease and its ports, in one transaction."""
        with self._tx() as db:
            db.execute("DELETE FROM ports WHERE endpoint_id = ?", (endpoint_id,))
            db.execute("DELETE FROM leases WHERE endpoint_id = ?", (endpoint_id,))
            db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

    def orphan_leases(self) -> list[tuple[str, str, str]]:
        """(network id, ip, endpoint id) of leases whose endpoint row is gone."""
        rows = self._db.execute("SELECT l.network_id, l.ip, l.endpoint_id FROM leases l "
                                "LEFT JOIN endpoints e ON e.id = l.endpoint_id "
                                "WHERE e.id IS NULL").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def drop_orphan_leases(self) -> int:
        with self._tx() as db:
            cur = db.execute("DELETE FROM leases WHERE endpoint_id NOT IN "
                             "(SELECT id FROM endpoints)")
            return cur.rowcount

    def leases(self, network_id: str) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self._db.execute(
            "SELECT ip, endpoint_id FROM leases WHERE network_id = ? ORDER BY ip", (network_id,))]

    # -- ports ----------------------------------------------------------------

    def add_ports(self, bindings: Iterable[PortBinding]) -> None:
        """All or nothing. A binding on 0.0.0.0 conflicts with the same port on
        any address and the reverse, as two sockets would."""
        with self._tx() as db:
            for b in bindings:
                clash = db.execute(
                    "SELECT host_ip FROM ports WHERE host_port = ? AND proto = ? AND "
                    "(host_ip = ? OR host_ip = '0.0.0.0' OR ? = '0.0.0.0')",
                    (b.host_port, b.proto, b.host_ip, b.host_ip)).fetchone()
                if clash:
                    raise Conflict(f"Bind for {b.host_ip}:{b.host_port} failed: port is "
                                   "already allocated")
                db.execute("INSERT INTO ports(endpoint_id, host_ip, host_port, proto, "
                           "container_ip, container_port) VALUES (?,?,?,?,?,?)",
                           (b.endpoint_id, b.host_ip, b.host_port, b.proto, b.container_ip,
                            b.container_port))

    def ports(self, endpoint_id: str | None = None) -> list[PortBinding]:
        sql = ("SELECT endpoint_id, host_ip, host_port, container_ip, container_port, proto "
               "FROM ports")
        args: tuple[str, ...] = ()
        if endpoint_id is not None:
            sql += " WHERE endpoint_id = ?"
            args = (endpoint_id,)
        return [PortBinding(str(a), str(b), int(c), str(d), int(e), str(f))
                for a, b, c, d, e, f in self._db.execute(sql + " ORDER BY rowid", args)]

    def port_taken(self, host_ip: str, host_port: int, proto: str) -> bool:
        return self._db.execute(
            "SELECT 1 FROM ports WHERE host_port = ? AND proto = ? AND "
            "(host_ip = ? OR host_ip = '0.0.0.0' OR ? = '0.0.0.0')",
            (host_port, proto, host_ip, host_ip)).fetchone() is not None

    def remove_ports(self, endpoint_id: str, keys: Iterable[tuple[str, int, str]] | None = None
                     ) -> None:
        with self._tx() as db:
            if keys is None:
                db.execute("DELETE FROM ports WHERE endpoint_id = ?", (endpoint_id,))
                return
            for host_ip, host_port, proto in keys:
                db.execute("DELETE FROM ports WHERE endpoint_id = ? AND host_ip = ? AND "
                           "host_port = ? AND proto = ?", (endpoint_id, host_ip, host_port, proto))

    # -- DNS records and meta ---------------------------------------------------

    def set_records(self, network_id: str, records: Mapping[str, Iterable[str]]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM dns_records WHERE network_id = ?", (network_id,))
            for name, ips in records.items():
                for ip in ips:
                    db.execute("INSERT OR IGNORE INTO dns_records(network_id, name, ip) "
                               "VALUES (?,?,?)", (network_id, name.lower().rstrip("."), ip))

    def records(self, network_id: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, ip in self._db.execute("SELECT name, ip FROM dns_records WHERE network_id = ? "
                                         "ORDER BY rowid", (network_id,)):
            out.setdefault(str(name), []).append(str(ip))
        return out

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def subnet_of(net: Network) -> Subnet | None:
    return parse_subnet(net.subnet, net.gateway, net.ip_range) if net.subnet else None

