"""DNS messages, through dnslib (a maintained, pure-Python codec), behind a
few typed functions: the rest of isobox never sees dnslib's objects."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import dnslib  # type: ignore[import-untyped]

A, PTR, AAAA, ANY = 1, 12, 28, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED = 0, 1, 2, 3, 5


def _parse(data: bytes) -> Any:
    try:
        return dnslib.DNSRecord.parse(data)
    except Exception:  # dnslib raises several kinds on garbage
        return None


def normalize(name: str) -> str:
    return name.lower().rstrip(".")


def parse_query(data: bytes) -> tuple[str, int] | None:
    """(name, qtype) of a standard query with one question, else None."""
    msg = _parse(data)
    if msg is None or msg.header.qr or msg.header.opcode != 0 or len(msg.questions) != 1:
        return None
    q = msg.questions[0]
    return normalize(str(q.qname)), int(q.qtype)


def _reply(query: bytes) -> Any:
    msg = _parse(query)
    reply = msg.reply() if msg is not None else None
    if reply is not None:
        reply.header.ra = 1
    return reply


def a_reply(query: bytes, ips: Sequence[str], ttl: int) -> bytes:
    """An authoritative answer with ``ips`` (none: the name exists, no such record)."""
    reply = _reply(query)
    qname = reply.q.qname
    for ip in ips:
        reply.add_answer(dnslib.RR(qname, dnslib.QTYPE.A, rdata=dnslib.A(ip), ttl=ttl))
    return bytes(reply.pack())


def ptr_reply(query: bytes, target: str, ttl: int) -> bytes:
    reply = _reply(query)
    reply.add_answer(dnslib.RR(reply.q.qname, dnslib.QTYPE.PTR,
                               rdata=dnslib.PTR(target + "."), ttl=ttl))
    return bytes(reply.pack())


def error_reply(query: bytes, rcode: int) -> bytes:
    """A reply with rcode; for a message too broken to parse, a bare header."""
    msg = _parse(query)
    if msg is None:
        ident = query[:2] if len(query) >= 2 else b"\0\0"
        return ident + bytes([0x80, rcode & 0xF]) + b"\0" * 8
    reply = msg.reply()
    reply.header.aa = 0
    reply.header.ra = 1
    reply.header.rcode = rcode
    return bytes(reply.pack())


def ptr_to_ip(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4``."""
    suffix = ".in-addr.arpa"
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(parts))))
    except ValueError:
        return None


def query(name: str, qtype: int = A, ident: int | None = None) -> bytes:
    """A recursive query (for clients and tests)."""
    q = dnslib.DNSRecord.question(name, dnslib.QTYPE[qtype])
    if ident is not None:
        q.header.id = ident
    return bytes(q.pack())


def answers(reply: bytes) -> tuple[int, list[str]]:
    """(rcode, the answers' data as text) of a reply."""
    msg = _parse(reply)
    if msg is None:
        raise ValueError("not a DNS message")
    return int(msg.header.rcode), [str(rr.rdata) for rr in msg.rr]
