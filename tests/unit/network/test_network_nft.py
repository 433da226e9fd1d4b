"""The nftables JSON we generate, and the firewall's bookkeeping, over a
fake runner that keeps a table in memory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from isobox.errors import NotFound
from isobox.network import NetworkRules, NftFirewall, PortBinding
from isobox.network.nft import Ruleset, port_tag


class FakeNft:
    """Enough of nft -j: add/delete table, set elements and rules; list table."""

    def __init__(self) -> None:
        self.table: dict[str, Any] | None = None
        self.calls: list[list[dict[str, Any]]] = []
        self.handle = 0

    def __call__(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append(json.loads(json.dumps(list(commands))))
        out: list[dict[str, Any]] = []
        for cmd in commands:
            (verb, body), = cmd.items()
            (kind, obj), = body.items()
            if verb == "list":
                if self.table is None:
                    raise NotFound("No such file or directory")
                out.append({"table": {"name": obj["name"]}})
                out.append({"set": {"name": "bridges", "elem": sorted(self.table["set"])}})
                out += [{"rule": r} for r in self.table["rules"]]
            elif kind == "table":
                if verb == "delete" and self.table is None:
                    raise NotFound("No such file or directory")
                self.table = ({"set": set(), "rules": [], "chains": []} if verb == "add"
                              else None)
            elif kind == "chain":
                assert self.table is not None
                self.table["chains"].append(obj["name"])
            elif kind == "element":
                assert self.table is not None
                (self.table["set"].update if verb == "add" else
                 self.table["set"].difference_update)(obj["elem"])
            elif kind == "rule" and verb == "add":
                assert self.table is not None and obj["chain"] in self.table["chains"]
                self.handle += 1
                self.table["rules"].append({**obj, "handle": self.handle})
            elif kind == "rule":
                assert self.table is not None
                self.table["rules"] = [r for r in self.table["rules"]
                                       if r["handle"] != obj["handle"]]
        return out


def _text(cmds: list[dict[str, Any]]) -> str:
    return json.dumps(cmds)


def test_network_rules_shape() -> None:
    rs = Ruleset("t")
    open_ = rs.network(NetworkRules("n1", "br1", "10.1.0.0/24", internal=False))
    shut = rs.network(NetworkRules("n2", "br2", "10.2.0.0/24", internal=True))
    assert "masquerade" in _text(open_) and '"op": "!", "left": {"ct"' in _text(open_)
    masq = [c for c in shut if "masquerade" in json.dumps(c)]
    assert len(masq) == 1 and '"in"' in json.dumps(masq[0])  # only the published-port one
    drops = [c["add"]["rule"] for c in shut if "drop" in json.dumps(c)]
    assert {r["chain"] for r in drops} == {"forward", "raw-prerouting"} and len(drops) == 3
    assert all(c["add"]["rule"]["comment"] == "net:n2" for c in shut if "rule" in c["add"])
    base = _text(rs.base())
    assert '"hook": "forward"' in base and '"name": "bridges"' in base


def test_port_rules() -> None:
    rs = Ruleset("t")
    any_ip = PortBinding("e", "0.0.0.0", 8080, "10.0.0.2", 80, "tcp")
    local = PortBinding("e", "127.0.0.1", 53, "10.0.0.2", 5353, "udp")
    a, b = (c["add"]["rule"] for c in rs.ports([any_ip, local]))
    assert a["chain"] == "ports" and a["comment"] == "ep:e:0.0.0.0:8080/tcp"
    assert "daddr" not in json.dumps(a["expr"])
    assert a["expr"][-1] == {"dnat": {"family": "ip", "addr": "10.0.0.2", "port": 80}}
    assert b["expr"][0]["match"]["right"] == "127.0.0.1"
    assert b["expr"][1]["match"]["left"]["payload"]["protocol"] == "udp"


def test_firewall_bookkeeping() -> None:
    nft = FakeNft()
    fw = NftFirewall("t", runner=nft)
    fw.add_network(NetworkRules("n1", "br1", "10.1.0.0/24", internal=False))
    fw.add_network(NetworkRules("n1", "br1", "10.1.0.0/24", internal=False))  # idempotent
    assert fw.tags() == {"net:n1": 4} and fw.bridges() == {"br1"}
    b = PortBinding("e", "0.0.0.0", 8080, "10.1.0.2", 80, "tcp")
    c = PortBinding("e", "0.0.0.0", 8081, "10.1.0.2", 81, "tcp")
    fw.add_ports([b, c])
    fw.remove_ports("e", [b])
    assert port_tag(c) in fw.tags() and port_tag(b) not in fw.tags()
    fw.remove_ports("e")
    assert set(fw.tags()) == {"net:n1"}
    fw.remove_network("n1", "br1")
    assert fw.tags() == {} and fw.bridges() == set()
    assert fw.delete_table() and not fw.delete_table()
    fw.remove_network("n1", "br1")  # no table: nothing to do
    assert fw.tags() == {}


@pytest.mark.parametrize("tag", ["net:x", "ep:y:0.0.0.0:1/tcp"])
def test_remove_tags(tag: str) -> None:
    nft = FakeNft()
    fw = NftFirewall("t", runner=nft)
    fw.ensure()
    nft([{"add": {"rule": {"family": "inet", "table": "t", "chain": "ports", "comment": tag,
                           "expr": []}}}])
    fw.remove_tags([tag])
    assert fw.tags() == {}


def test_host_forward_warnings() -> None:
    from isobox.network.nft import host_forward_warnings

    def runner(commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        assert commands == [{"list": {"chains": {}}}]
        return [{"chain": {"family": "ip", "table": "filter", "name": "FORWARD",
                           "hook": "forward", "policy": "drop"}},
                {"chain": {"family": "inet", "table": "ours", "name": "forward",
                           "hook": "forward", "policy": "drop"}},
                {"chain": {"family": "inet", "table": "x", "name": "input", "hook": "input",
                           "policy": "drop"}}]

    warnings = host_forward_warnings("ours", runner)
    assert len(warnings) == 1 and "ip filter FORWARD" in warnings[0]
