"""Registry errors, and the translation of a registry's HTTP answer into them.

A registry explains a refusal in its body (``{"errors": [{"code":
"MANIFEST_UNKNOWN", "message": "manifest unknown"}]}``); Docker prints the
code's own description, then the message. We keep that wording so users can
search for it, and map the status to one of isobox's error categories.
"""

from __future__ import annotations

import json

import httpx

from isobox.errors import InvalidArgument, IsoboxError, NotFound, Unavailable


class Unauthorized(IsoboxError):
    """The registry wants credentials we lack, or refused the ones we sent (401)."""


class Forbidden(Unauthorized):
    """The registry knows who we are and still says no (403)."""


class TLSVerificationError(Unavailable):
    """The registry speaks TLS with a certificate we do not trust."""


#: How Docker's registry client words each error code (errcode descriptors).
_CODE_TEXT = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "MANIFEST_UNVERIFIED": "manifest failed signature verification",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "TAG_INVALID": "manifest tag did not match URI",
    "UNAUTHORIZED": "unauthorized",
    "DENIED": "denied",
    "UNSUPPORTED": "unsupported",
    "TOOMANYREQUESTS": "toomanyrequests",
}

_STATUS_TEXT = {
    401: "unauthorized: authentication required",
    403: "denied: requested access to the resource is denied",
    404: "not found",
    429: "toomanyrequests: too many requests",
}


def error_codes(response: httpx.Response) -> list[str]:
    """The error codes a registry put in its answer (may be empty)."""
    return [code for code, _ in _errors(response)]


def describe(response: httpx.Response) -> str:
    """Docker's wording for a refusal: ``manifest unknown: manifest unknown``."""
    parts = []
    for code, message in _errors(response):
        text = _CODE_TEXT.get(code, code.lower().replace("_", " "))
        parts.append(f"{text}: {message}" if message and message != text else text)
    if parts:
        return "; ".join(parts)
    if response.status_code in _STATUS_TEXT:
        return _STATUS_TEXT[response.status_code]
    return f"unexpected status {response.status_code} {response.reason_phrase}".rstrip()


def _errors(response: httpx.Response) -> list[tuple[str, str]]:
    try:
        body = response.content
    except httpx.ResponseNotRead:
        return []
    if not body or len(body) > 1 << 20:
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    found = []
    entries = doc.get("errors") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            message = entry.get("message")
            found.append((entry["code"], message if isinstance(message, str) else ""))
    return found


def for_status(response: httpx.Response, context: str) -> IsoboxError:
    """The error for an unexpected answer, in its category; ``context`` says
    what we were doing (``pushing blob sha256:...``)."""
    detail = describe(response)
    status = response.status_code
    if status == 401:
        return Unauthorized(f"{detail} ({context})")
    if status == 403:
        return Forbidden(f"{detail} ({context})")
    if status == 404:
        return NotFound(f"{context}: {detail}")
    if status == 429 or status >= 500:
        return Unavailable(f"{context}: registry answered {status}: {detail}")
    if status == 400:
        return InvalidArgument(f"{context}: {detail}")
    return IsoboxError(f"{context}: registry answered {status}: {detail}")
