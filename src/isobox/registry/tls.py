"""TLS settings per registry, the way Docker finds them.

Trust starts from the system CA bundle (Debian's, not certifi's), then adds
what ``<certs dir>/<host[:port]>/`` holds: every ``*.crt`` is a CA, every
``*.cert`` with its ``*.key`` is a client certificate (Docker's rule, which
covers the usual ``ca.crt``, ``client.cert`` and ``client.key``).

Plain HTTP is allowed only for loopback registries and those listed as
insecure; HTTPS is always tried first. A registry listed as insecure is
also not verified over HTTPS (Docker's behaviour); a loopback registry that
answers in TLS *is* verified, so a wrong certificate is an error, not a
silent downgrade.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from isobox.errors import InvalidArgument

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DOCKER_CERTS_DIR = "/etc/docker/certs.d"


@dataclass(frozen=True)
class TLSConfig:
    #: Searched in order for ``<dir>/<host[:port]>/``; all that exist are used.
    certs_dirs: tuple[str, ...] = (DOCKER_CERTS_DIR,)
    #: The base trust store; None uses OpenSSL's default paths.
    ca_bundle: str | None = SYSTEM_CA_BUNDLE
    #: ``host``, ``host:port`` or a CIDR (``10.0.0.0/8``), as in Docker's daemon.json.
    insecure: tuple[str, ...] = ()


def split_host(netloc: str) -> tuple[str, int | None]:
    """``[::1]:5000`` -> (``::1``, 5000); ``example.com`` -> (``example.com``, None)."""
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.rpartition(":") if netloc.count(":") == 1 else (netloc, "", "")
    if port and not port.isdigit():
        raise InvalidArgument(f"invalid registry address {netloc!r}")
    return host.lower(), int(port) if port else None


def is_loopback(netloc: str) -> bool:
    host, _ = split_host(netloc)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(netloc: str, insecure: Iterable[str]) -> bool:
    """Whether ``netloc`` is listed as an insecure registry."""
    host, _ = split_host(netloc)
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in insecure:
        entry = entry.strip().lower()
        for prefix in ("https://", "http://"):
            entry = entry.removeprefix(prefix)
        entry = entry.rstrip("/")
        if entry in (netloc.lower(), host):
            return True
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def allows_plain_http(netloc: str, config: TLSConfig) -> bool:
    return is_loopback(netloc) or is_insecure(netloc, config.insecure)


def host_dirs(netloc: str, certs_dirs: Sequence[str]) -> list[str]:
    """The certs.d folders that exist for this registry."""
    return [path for base in certs_dirs
            if os.path.isdir(path := os.path.join(base, netloc))]


def ssl_context(netloc: str, config: TLSConfig) -> ssl.SSLContext:
    """The context for talking to ``netloc``: verified unless it is listed
    insecure, trusting the system bundle plus the registry's certs.d CAs."""
    if is_insecure(netloc, config.insecure):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_bundle and os.path.exists(config.ca_bundle):
        context = ssl.create_default_context(cafile=config.ca_bundle)
    else:
        context = ssl.create_default_context()
    for folder in host_dirs(netloc, config.certs_dirs):
        _load_folder(context, folder)
    return context


def _load_folder(context: ssl.SSLContext, folder: str) -> None:
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        try:
            if name.endswith(".crt"):
                if context.verify_mode != ssl.CERT_NONE:
                    context.load_verify_locations(cafile=path)
            elif name.endswith(".cert"):
                key = path[: -len(".cert")] + ".key"
                if not os.path.exists(key):
                    raise InvalidArgument(f"missing key {key} for client certificate {path}")
                context.load_cert_chain(path, key)
            elif name.endswith(".key") and not os.path.exists(path[: -len(".key")] + ".cert"):
                raise InvalidArgument(f"missing client certificate for key {path}")
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(f"cannot load {path}: {exc}") from exc
