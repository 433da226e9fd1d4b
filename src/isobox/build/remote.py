"""``ADD <url>`` and a build context given as a URL: one download over httpx
(redirects followed, a size limit, a timeout), into the build's own work
directory."""

from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import dataclass
from urllib.parse import urlparse

from isobox.errors import InvalidArgument, Unavailable

MAX_BYTES = 8 << 30
TIMEOUT = 60.0


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Fetched:
    path: str      #: the downloaded file (mode 0600, as Docker's ADD leaves it)
    name: str      #: the last component of the URL's path ("" when it has none)


def fetch(url: str, directory: str, *, max_bytes: int = MAX_BYTES) -> Fetched:
    import email.utils

    import httpx

    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=directory, prefix="download-")
    try:
        with os.fdopen(fd, "wb") as out, httpx.stream(
                "GET", url, follow_redirects=True, timeout=TIMEOUT) as response:
            if response.status_code >= 400:
                raise InvalidArgument(f"failed to GET {url} with status "
                                      f"{response.status_code} {response.reason_phrase}")
            written = 0
            for chunk in response.iter_bytes():
                written += len(chunk)
                if written > max_bytes:
                    raise InvalidArgument(f"{url}: larger than {max_bytes} bytes")
                out.write(chunk)
            modified = response.headers.get("last-modified")
        os.chmod(path, 0o600)
        if modified:
            try:
                stamp = email.utils.parsedate_to_datetime(modified).timestamp()
                os.utime(path, (stamp, stamp))
            except (TypeError, ValueError):
                pass  # an unparsable date: the download's own time
    except httpx.HTTPError as exc:
        os.unlink(path)
        raise Unavailable(f"cannot download {url}: {exc}") from None
    except BaseException:
        os.unlink(path)
        raise
    return Fetched(path, posixpath.basename(urlparse(url).path))
