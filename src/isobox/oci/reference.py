"""Image references with Docker's grammar and normalisation.

``busybox`` is ``docker.io/library/busybox:latest``; ``host:5000/a/b:tag``
keeps its registry; ``name@sha256:...`` pins a digest.
"""

from __future__ import annotations

import re

from isobox.errors import InvalidArgument
from isobox.oci import digest as digests

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = {"index.docker.io", "registry-1.docker.io"}
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])"
_DOMAIN = re.compile(rf"{_HOST}(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")


class Reference:
    """A normalised reference: domain, path, and a tag and/or a digest."""

    __slots__ = ("digest", "domain", "path", "tag")

    def __init__(self, domain: str, path: str, tag: str | None = None,
                 digest: str | None = None) -> None:
        self.domain = domain
        self.path = path
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        """``docker.io/library/busybox``"""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """``busybox``, as Docker prints it."""
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
                path = path[len(OFFICIAL_PREFIX):]
            return path
        return self.name

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        text = self.familiar_name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise; InvalidArgument names what is wrong."""
    if not text or text != text.strip():
        raise InvalidArgument(f"invalid reference format: {text!r}")
    remainder, at, digest = text.partition("@")
    if at:
        digests.validate(digest)
    name, tag = remainder, None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        name, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid reference format: bad tag {tag!r} in {text!r}")
    if len(name) > NAME_MAX:
        raise InvalidArgument(f"invalid reference format: repository name longer than {NAME_MAX}")
    domain, path = _split_domain(name)
    if domain != DEFAULT_DOMAIN and not _DOMAIN.fullmatch(domain):
        raise InvalidArgument(f"invalid reference format: bad registry {domain!r} in {text!r}")
    if not _PATH.fullmatch(path):
        if path.lower() != path:
            raise InvalidArgument(f"invalid reference format: repository name must be "
                                  f"lowercase: {text!r}")
        raise InvalidArgument(f"invalid reference format: {text!r}")
    if tag is None and not at and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest if at else None)


def looks_like_id(text: str) -> bool:
    """A full or short hex image/container id (Docker accepts >= 1 hex digit
    prefixes for lookups; a bare 64-hex string is always an id)."""
    body = text[7:] if text.startswith("sha256:") else text
    return bool(body) and all(c in "0123456789abcdef" for c in body)
