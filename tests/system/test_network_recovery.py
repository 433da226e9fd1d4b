"""Crashes and leftovers: a connect killed half-way, connects racing from
several processes, and ``check``/``fix`` against planted leftovers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_network_support import PY, NetEnv, sh

from isobox.network.naming import Names


@pytest.fixture
def env(tmp_path: Path) -> Iterator[NetEnv]:
    with NetEnv(tmp_path) as e:
        yield e


def _script(env: NetEnv, body: str) -> list[str]:
    head = f"""
import sys, time
from isobox.network import NetlinkLinks, NetworkManager, Pool
mgr = NetworkManager({str(env.tmp / "netstate")!r}, table={env.table!r},
                     bridge_prefix={env.prefix!r}, dns_upstreams=[],
                     pools=[Pool("10.{env.octet}.0.0/17", 24)], **KW)
"""
    return [PY, "-c", textwrap.dedent(body.split("#MGR")[0]) + head
            + textwrap.dedent(body.split("#MGR")[1])]


def test_kill_during_connect_then_reconcile(env: NetEnv) -> None:
    mgr = env.manager()
    mgr.create_network("crash", subnet=env.subnet(10))
    victim_ns, other_ns, new_ns = env.netns(), env.netns(), env.netns()
    argv = _script(env, f"""
        from isobox.network import NetlinkLinks
        class Stall(NetlinkLinks):
            def add_veth(self, req):
                name = super().add_veth(req)
                print("plumbed", flush=True)
                time.sleep(120)
                return name
        KW = {{"links": Stall()}}
        #MGR
        mgr.connect("ep-victim", "crash", {victim_ns!r})
        """)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "plumbed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    victim_veth = Names(env.prefix).veth("ep-victim")
    assert victim_veth in mgr.links.link_kinds()
    taken = mgr.endpoint("ep-victim").ip
    # The lease survives the crash: nobody else gets that address.
    other = mgr.connect("ep-other", "crash", other_ns)
    assert other.ip != taken
    assert any("half-connected" in item for item in mgr.check())

    assert mgr.reconcile(["ep-other"]) == ["ep-victim"]
    assert victim_veth not in mgr.links.link_kinds()
    assert "eth0" not in env.run_in(victim_ns, "ip", "-o", "link").stdout
    assert [ep for _, ep in mgr.store.leases(mgr.get("crash").id)] == ["ep-other"]
    new = mgr.connect("ep-new", "crash", new_ns)
    assert len({other.ip, new.ip}) == 2
    assert mgr.check() == []


def test_parallel_connects_get_distinct_addresses(env: NetEnv) -> None:
    mgr = env.manager()
    mgr.create_network("race", subnet=env.subnet(11))
    namespaces = [env.netns() for _ in range(6)]
    procs = []
    for n in range(3):
        pair = namespaces[2 * n: 2 * n + 2]
        argv = _script(env, f"""
            KW = {{}}
            #MGR
            for i, ns in enumerate({pair!r}):
                print(mgr.connect(f"ep-{n}-{{i}}", "race", ns).ip)
            """)
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True))
    ips = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ips += out.split()
    assert len(ips) == 6 and len(set(ips)) == 6
    assert sorted(ips) == sorted(ep.ip for ep in mgr.endpoints("race"))


def test_check_and_fix_find_planted_leftovers(env: NetEnv) -> None:
    mgr = env.manager()
    net = mgr.create_network("tidy", subnet=env.subnet(12))
    mgr.connect("ep-live", "tidy", env.netns())
    assert mgr.check() == []
    names = Names(env.prefix)
    ghost_veth = names.veth("ghost")
    sh("ip", "link", "add", ghost_veth, "type", "veth", "peer", "name", f"{env.prefix}g1")
    ghost_bridge = f"{env.prefix}-deadbeef00"[:15]
    sh("ip", "link", "add", ghost_bridge, "type", "bridge")
    sh("nft", "add", "rule", "inet", env.table, "ports", "tcp", "dport", "1", "dnat", "ip",
       "to", "10.0.0.1:1", "comment", '"ep:ghost:0.0.0.0:1/tcp"')
    db = sqlite3.connect(str(env.tmp / "netstate" / "network.db"))
    with db:
        db.execute("INSERT INTO leases VALUES (?, ?, 'ep-gone', 0)",
                   (net.id, f"10.{env.octet}.12.99"))
    db.close()
    found = mgr.check()
    assert any(ghost_veth in f for f in found)
    assert any(ghost_bridge in f for f in found)
    assert any("ep:ghost" in f for f in found)
    assert any("ep-gone" in f for f in found)
    assert len(mgr.fix()) == len(found)
    assert mgr.check() == []
    kinds = mgr.links.link_kinds()
    assert ghost_veth not in kinds and f"{env.prefix}g1" not in kinds
    assert ghost_bridge not in kinds
    assert mgr.ports() == [] and "ep:ghost:0.0.0.0:1/tcp" not in mgr.firewall.tags()
    assert mgr.endpoint("ep-live").ip  # the live endpoint is untouched


def test_fix_after_a_crash_in_remove_network(env: NetEnv) -> None:
    mgr = env.manager()
    net = mgr.create_network("gone", subnet=env.subnet(13))
    mgr.store.remove_network(net.id)  # the record went, then the process died
    found = mgr.check()
    assert any(net.bridge in f for f in found)
    assert any(f"net:{net.id}" in f for f in found)
    assert any("DNS server" in f for f in found)
    mgr.fix()
    assert mgr.check() == []
    assert net.bridge not in mgr.links.link_kinds()
    assert not mgr.dns.running()


def test_repairs_after_the_table_is_lost(env: NetEnv) -> None:
    """A host reboot or an ``nft flush ruleset`` by the admin: records stay,
    kernel state goes. check names it, fix rebuilds it."""
    mgr = env.manager()
    mgr.create_network("again", subnet=env.subnet(14))
    ep = mgr.connect("ep-again", "again", env.netns())
    binding = mgr.publish(ep.id, "127.0.0.1", 0, 80)
    assert mgr.firewall.delete_table()
    found = mgr.check()
    assert any("again has no nftables rules" in f for f in found)
    assert any(str(binding) in f for f in found)
    mgr.fix()
    assert mgr.check() == []


@pytest.mark.parametrize("repair", ["reconcile", "fix"])
def test_kill_during_connect_tap_then_repair(env: NetEnv, repair: str) -> None:
    mgr = env.manager()
    net = mgr.create_network("vmcrash", subnet=env.subnet(15))
    argv = _script(env, """
        from isobox.network import NetlinkLinks
        class Stall(NetlinkLinks):
            def add_tap(self, req):
                super().add_tap(req)
                print("plumbed", flush=True)
                time.sleep(120)
        KW = {"links": Stall()}
        #MGR
        mgr.connect_tap("ep-vm", "vmcrash", container_id="c-vm")
        """)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "plumbed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    tap = Names(env.prefix).tap("ep-vm")
    assert mgr.links.link_kinds().get(tap) == "tun"  # persistent: it outlives its maker
    taken = mgr.endpoint("ep-vm").ip
    other = mgr.connect_tap("ep-other", "vmcrash", container_id="c-other")
    assert other.ip != taken  # the lease survived the crash
    assert any("half-connected" in item for item in mgr.check())

    if repair == "reconcile":
        assert mgr.reconcile(["ep-other"]) == ["ep-vm"]
    else:
        assert any("ep-vm" in item for item in mgr.fix())
    assert tap not in mgr.links.link_kinds()
    assert [ep for _, ep in mgr.store.leases(net.id)] == ["ep-other"]
    assert mgr.check() == []
    mgr.disconnect("ep-other")
    assert not [n for n in mgr.links.link_kinds() if Names(env.prefix).is_our_tap(n)]
