"""NAT, isolation and published ports in one nftables table of our own.

Every rule lives in ``table inet <name>`` (``isobox`` by default), so the
host's rules are never read or touched and teardown is one ``delete table``.
Rules carry a comment tag (``net:<id>`` for a network's, ``ep:<id>:...``
for an endpoint's published ports) by which they are found and deleted.

We drive the ``nft`` command with JSON (``nft -j -f -``) through the one
subprocess helper: a ruleset is plain data (built and unit-tested without
root), a batch is atomic, and no ctypes binding to libnftables is needed
outside ``isobox.linux``. A call costs one process start (~5-12 ms here);
``NftRunner`` is the seam should an in-process libnftables runner be wanted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from isobox.errors import IsoboxError, NotFound, Unavailable
from isobox.linux.lazylog import get_logger
from isobox.network.model import PortBinding

log = get_logger(__name__)

Cmd = dict[str, Any]

# Chain names inside our table, with (type, hook, priority) for base chains.
CHAINS: dict[str, tuple[str, str, int] | None] = {
    "raw-prerouting": ("filter", "prerouting", -300),
    "forward": ("filter", "forward", 0),
    "nat-prerouting": ("nat", "prerouting", -100),
    "nat-output": ("nat", "output", -100),
    "nat-postrouting": ("nat", "postrouting", 100),
    "ports": None,
}
BRIDGE_SET = "bridges"


class NftRunner(Protocol):
    def __call__(self, commands: Sequence[Cmd]) -> list[Cmd]:
        """Run a batch of JSON commands; return the JSON objects printed (for lists)."""
        ...


class NftCommand:
    """``NftRunner`` over ``nft -j -f -``."""

    def __init__(self, binary: str = "nft") -> None:
        path = shutil.which(binary)
        if path is None:
            raise Unavailable("nftables is needed for networking: install the nft command "
                              "(Debian: apt install nftables)")
        self.binary = path

    def __call__(self, commands: Sequence[Cmd]) -> list[Cmd]:
        from isobox.linux.run import run

        payload = json.dumps({"nftables": list(commands)}).encode()
        proc = run([self.binary, "-j", "-f", "-"], input=payload, check=False, timeout=30)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            if "No such file or directory" in err:
                raise NotFound(f"nft: {err.splitlines()[0] if err else 'not found'}")
            raise IsoboxError(f"nft failed: {err}")
        out = proc.stdout.strip()
        if not out:
            return []
        items: list[Cmd] = json.loads(out).get("nftables", [])
        return items


def _meta(key: str, op: str, value: Any) -> Cmd:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}


def _ip(field: str, op: str, value: Any) -> Cmd:
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}},
                      "right": value}}


def _prefix(cidr: str) -> Cmd:
    addr, _, length = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(length or 32)}}


def _ct_status(op: str, flag: str) -> Cmd:
    return {"match": {"op": op, "left": {"ct": {"key": "status"}}, "right": flag}}


_LOCAL_DST: Cmd = {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                             "right": "local"}}


@dataclass(frozen=True)
class NetworkRules:
    """What the firewall needs to know of a bridge network."""

    id: str
    bridge: str
    subnet: str
    internal: bool

    @property
    def tag(self) -> str:
        return f"net:{self.id}"


def port_tag(b: PortBinding) -> str:
    return f"ep:{b.endpoint_id}:{b.host_ip}:{b.host_port}/{b.proto}"


class Ruleset:
    """Pure builders of JSON commands for one table."""

    def __init__(self, table: str) -> None:
        self.table = table

    def _obj(self, **kw: Any) -> Cmd:
        return {"family": "inet", "table": self.table, **kw}

    def _rule(self, chain: str, tag: str, expr: list[Cmd]) -> Cmd:
        return {"add": {"rule": self._obj(chain=chain, comment=tag, expr=expr)}}

    def base(self) -> list[Cmd]:
        cmds: list[Cmd] = [{"add": {"table": {"family": "inet", "name": self.table}}},
                           {"add": {"set": self._obj(name=BRIDGE_SET, type="ifname")}}]
        for name, hook in CHAINS.items():
            chain = self._obj(name=name)
            if hook is not None:
                chain.update(type=hook[0], hook=hook[1], prio=hook[2], policy="accept")
            cmds.append({"add": {"chain": chain}})
        for hooked in ("nat-prerouting", "nat-output"):
            cmds.append({"add": {"rule": self._obj(chain=hooked, expr=[
                _LOCAL_DST, {"jump": {"target": "ports"}}])}})
        return cmds

    def network(self, net: NetworkRules) -> list[Cmd]:
        br, tag = net.bridge, net.tag
        cmds: list[Cmd] = [{"add": {"element": self._obj(name=BRIDGE_SET, elem=[br])}}]
        # route_localnet is on for the bridge (published ports on 127.0.0.1):
        # never let a container reach the host's loopback services through it.
        cmds.append(self._rule("raw-prerouting", tag, [
            _meta("iifname", "==", br), _ip("daddr", "==", _prefix("127.0.0.0/8")),
            {"drop": None}]))
        if net.internal:
            # No way out and no way in: only bridge-local traffic is forwarded.
            cmds.append(self._rule("forward", tag, [
                _meta("iifname", "==", br), _meta("oifname", "!=", br), {"drop": None}]))
            cmds.append(self._rule("forward", tag, [
                _meta("oifname", "==", br), _meta("iifname", "!=", br), {"drop": None}]))
        else:
            # Isolation: nothing from this bridge to another of ours, except
            # connections to a published port (DNAT'd by the host).
            cmds.append(self._rule("forward", tag, [
                _meta("iifname", "==", br), _meta("oifname", "!=", br),
                _meta("oifname", "==", f"@{BRIDGE_SET}"), _ct_status("!", "dnat"),
                {"drop": None}]))
            cmds.append(self._rule("nat-postrouting", tag, [
                _ip("saddr", "==", _prefix(net.subnet)), _ip("daddr", "!=", _prefix(net.subnet)),
                _meta("oifname", "!=", br), {"masquerade": None}]))
        # Published ports reached from the host's loopback or from the same
        # bridge (hairpin): the reply must come back through the host.
        cmds.append(self._rule("nat-postrouting", tag, [
            _meta("oifname", "==", br), _ct_status("in", "dnat"),
            _ip("saddr", "==", {"set": [_prefix("127.0.0.0/8"), _prefix(net.subnet)]}),
            {"masquerade": None}]))
        return cmds

    def ports(self, bindings: Iterable[PortBinding]) -> list[Cmd]:
        cmds = []
        for b in bindings:
            expr: list[Cmd] = []
            if b.host_ip != "0.0.0.0":
                expr.append(_ip("daddr", "==", b.host_ip))
            expr.append({"match": {"op": "==", "left": {"payload": {
                "protocol": b.proto, "field": "dport"}}, "right": b.host_port}})
            expr.append({"dnat": {"family": "ip", "addr": b.container_ip,
                                  "port": b.container_port}})
            cmds.append(self._rule("ports", port_tag(b), expr))
        return cmds

    def delete_rules(self, rules: Iterable[Cmd]) -> list[Cmd]:
        return [{"delete": {"rule": self._obj(chain=r["chain"], handle=r["handle"])}}
                for r in rules]


class Firewall(Protocol):
    table: str

    def ensure(self) -> None: ...
    def add_network(self, net: NetworkRules) -> None: ...
    def remove_network(self, net_id: str, bridge: str) -> None: ...
    def remove_bridge(self, bridge: str) -> None: ...
    def add_ports(self, bindings: Sequence[PortBinding]) -> None: ...
    def remove_ports(self, endpoint_id: str, bindings: Sequence[PortBinding] | None = None
                     ) -> None: ...
    def tags(self) -> dict[str, int]: ...
    def bridges(self) -> set[str]: ...
    def remove_tags(self, tags: Iterable[str]) -> None: ...
    def delete_table(self) -> bool: ...


class NftFirewall:
    """``Firewall`` on nftables. Not thread-safe; the manager serialises callers."""

    def __init__(self, table: str = "isobox", runner: NftRunner | None = None) -> None:
        self.table = table
        self.rules = Ruleset(table)
        self._run = runner if runner is not None else NftCommand()

    def _listing(self) -> list[Cmd] | None:
        try:
            return self._run([{"list": {"table": {"family": "inet", "name": self.table}}}])
        except NotFound:
            return None

    def _rules(self) -> list[Cmd]:
        return [item["rule"] for item in self._listing() or [] if "rule" in item]

    def ensure(self) -> None:
        """Create the table and its base chains unless the table exists."""
        if self._listing() is None:
            self._run(self.rules.base())

    def add_network(self, net: NetworkRules) -> None:
        """Install (or reinstall) a network's rules: one listing, one batch."""
        listing = self._listing()
        if listing is None:
            cmds = self.rules.base()
        else:
            cmds = self.rules.delete_rules(r["rule"] for r in listing
                                           if "rule" in r and r["rule"].get("comment") == net.tag)
        self._run(cmds + self.rules.network(net))

    def remove_network(self, net_id: str, bridge: str) -> None:
        listing = self._listing()
        if listing is None:
            return
        tag = f"net:{net_id}"
        cmds = self.rules.delete_rules(r["rule"] for r in listing
                                       if "rule" in r and r["rule"].get("comment") == tag)
        if bridge in self._set_elements(listing):
            cmds.append({"delete": {"element": self.rules._obj(name=BRIDGE_SET, elem=[bridge])}})
        if cmds:
            self._run(cmds)

    def remove_bridge(self, bridge: str) -> None:
        """Drop a bridge from our set (its network's record is gone)."""
        if bridge in self.bridges():
            self._run([{"delete": {"element": self.rules._obj(name=BRIDGE_SET,
                                                              elem=[bridge])}}])

    def add_ports(self, bindings: Sequence[PortBinding]) -> None:
        if bindings:
            self.ensure()
            self._run(self.rules.ports(bindings))

    def remove_ports(self, endpoint_id: str, bindings: Sequence[PortBinding] | None = None
                     ) -> None:
        if bindings is not None:
            wanted = {port_tag(b) for b in bindings}
            self.remove_tags(wanted)
            return
        prefix = f"ep:{endpoint_id}:"
        rules = [r for r in self._rules() if str(r.get("comment", "")).startswith(prefix)]
        if rules:
            self._run(self.rules.delete_rules(rules))

    def remove_tags(self, tags: Iterable[str]) -> None:
        wanted = set(tags)
        rules = [r for r in self._rules() if r.get("comment") in wanted]
        if rules:
            self._run(self.rules.delete_rules(rules))

    def tags(self) -> dict[str, int]:
        """Comment tag -> number of rules carrying it."""
        out: dict[str, int] = {}
        for r in self._rules():
            if "comment" in r:
                out[r["comment"]] = out.get(r["comment"], 0) + 1
        return out

    def bridges(self) -> set[str]:
        return self._set_elements(self._listing() or [])

    @staticmethod
    def _set_elements(listing: list[Cmd]) -> set[str]:
        for item in listing:
            s = item.get("set")
            if s and s.get("name") == BRIDGE_SET:
                return {str(e) for e in s.get("elem", [])}
        return set()

    def delete_table(self) -> bool:
        try:
            self._run([{"delete": {"table": {"family": "inet", "name": self.table}}}])
        except NotFound:
            return False
        return True


def firewall_backend() -> str:
    """Which iptables the host uses: "nf_tables", "legacy", or "" (none found).

    Our rules live in nftables either way (the kernel runs both), but a
    drop in the host's own forward chain, legacy or not, still drops
    container traffic that our table accepts: ``host_forward_warnings``."""
    from isobox.linux.run import run

    path = shutil.which("iptables")
    if path is None:
        return ""
    try:
        out = run([path, "--version"], check=False, timeout=10).stdout.decode()
    except OSError:
        return ""
    if "legacy" in out:
        return "legacy"
    return "nf_tables" if "nf_tables" in out else ""


def host_forward_warnings(our_table: str, runner: NftRunner | None = None) -> list[str]:
    """Read-only look at the host's firewall: forward base chains (outside our
    table) whose policy is drop, and a legacy iptables FORWARD policy of DROP."""
    from isobox.linux.run import run

    out = []
    try:
        listing = (runner or NftCommand())([{"list": {"chains": {}}}])
    except (IsoboxError, OSError):
        listing = []
    for item in listing:
        chain = item.get("chain") or {}
        if (chain.get("hook") == "forward" and chain.get("policy") == "drop"
                and chain.get("table") != our_table):
            out.append(f"nftables chain {chain.get('family')} {chain.get('table')} "
                       f"{chain.get('name')} drops forwarded traffic by default: allow the "
                       "isobox bridges there, or containers cannot reach out")
    if firewall_backend() == "legacy":
        path = shutil.which("iptables-legacy") or shutil.which("iptables") or "iptables"
        try:
            rules = run([path, "-S", "FORWARD"], check=False, timeout=10).stdout.decode()
        except OSError:
            rules = ""
        if "-P FORWARD DROP" in rules:
            out.append("iptables-legacy FORWARD policy is DROP: allow the isobox bridges "
                       "there, or containers cannot reach out")
    return out
