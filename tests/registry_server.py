"""Test helpers for the registry client: small images built in memory, and
a real registry server (Debian's ``docker-registry``) on loopback.

    with registry_server(tmp_path, auth=("alice", "secret"), tls=True) as server:
        server.host        # "127.0.0.1:41234"
        server.certs_dir   # a certs.d folder trusting the server's CA (TLS only)

The server gets a free port, filesystem storage in ``workdir``, optional
htpasswd auth (``htpasswd -Bbn``) and optional TLS (a CA and a leaf
certificate for localhost/127.0.0.1 made with ``openssl``), and is always
stopped by pid on exit.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class TestImage:
    __test__ = False  # not a pytest class

    blobs: dict[str, bytes]  # config and layers by digest
    config_digest: str
    layer_digests: list[str]
    manifest: bytes
    manifest_digest: str
    media_type: str = OCI_MANIFEST
    platform: tuple[str, str, str | None] = ("linux", "amd64", None)


def make_layer(files: dict[str, bytes]) -> bytes:
    """A reproducible gzip-compressed tar holding ``files``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def random_layer(size: int) -> bytes:
    """A layer of ``size`` random bytes: it does not compress."""
    return make_layer({"random.bin": os.urandom(size)})


def make_image(layers: list[bytes], *, platform: tuple[str, str, str | None] = (
        "linux", "amd64", None), cmd: list[str] | None = None) -> TestImage:
    os_, arch, variant = platform
    config_doc: dict[str, object] = {
        "architecture": arch, "os": os_,
        "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": [sha256(gzip.decompress(layer)) for layer in layers]},
    }
    if variant:
        config_doc["variant"] = variant
    config = json.dumps(config_doc, sort_keys=True).encode()
    manifest_doc = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}
                   for layer in layers],
    }
    manifest = json.dumps(manifest_doc, indent=2).encode()
    blobs = {sha256(config): config, **{sha256(layer): layer for layer in layers}}
    return TestImage(blobs, sha256(config), [sha256(layer) for layer in layers], manifest,
                     sha256(manifest), OCI_MANIFEST, platform)


def make_index(images: list[TestImage]) -> tuple[bytes, str]:
    entries = []
    for image in images:
        os_, arch, variant = image.platform
        platform = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
        entries.append({"mediaType": image.media_type, "digest": image.manifest_digest,
                        "size": len(image.manifest), "platform": platform})
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                     indent=2).encode()
    return raw, sha256(raw)


def store_image(store: object, image: TestImage) -> str:
    """Put an image's blobs and manifest into a ContentStore; returns its digest."""
    for digest, data in image.blobs.items():
        store.put(data, digest)  # type: ignore[attr-defined]
    store.put(image.manifest, image.manifest_digest)  # type: ignore[attr-defined]
    return image.manifest_digest


# ---------------------------------------------------------------- server


def missing_tools(*paths: str) -> str | None:
    """A skip reason naming the first tool that is absent, or None."""
    for path in paths:
        if shutil.which(path) is None:
            return f"{path} is not installed (apt-get install {_PACKAGES.get(path, path)})"
    return None


_PACKAGES = {REGISTRY_BINARY: "docker-registry", "htpasswd": "apache2-utils",
             "openssl": "openssl", "skopeo": "skopeo"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RegistryServer:
    host: str
    root: Path
    log_path: Path
    pid: int
    scheme: str = "http"
    certs_dir: Path | None = None
    ca_cert: Path | None = None
    credentials: tuple[str, str] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        argv, check=True, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, **kw)
    return result


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for localhost and 127.0.0.1.
    Returns (ca.crt, server.crt, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
          "-subj", "/CN=isobox test CA", "-keyout", str(ca_key), "-out", str(ca_crt),
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
          "-keyout", str(key), "-out", str(csr)])
    ext = folder / "server.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,"
                   "keyEncipherment\nextendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey",
          str(ca_key), "-CAcreateserial", "-days", "2", "-out", str(crt),
          "-extfile", str(ext)])
    return ca_crt, crt, key


def _config(root: Path, port: int, auth: Path | None, tls: tuple[Path, Path] | None) -> str:
    lines = [
        "version: 0.1",
        "log:", "  level: info", "  accesslog:", "    disabled: false",
        "storage:", "  filesystem:", f"    rootdirectory: {root}",
        "  delete:", "    enabled: true",
        "http:", f"  addr: 127.0.0.1:{port}", f"  secret: {secrets.token_hex(16)}",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if auth is not None:
        lines += ["auth:", "  htpasswd:", "    realm: isobox-test", f"    path: {auth}"]
    return "\n".join(lines) + "\n"


@contextmanager
def registry_server(workdir: Path, *, auth: tuple[str, str] | None = None,
                    tls: bool = False, timeout: float = 30.0) -> Iterator[RegistryServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    htpasswd = None
    if auth is not None:
        htpasswd = workdir / "htpasswd"
        line = _run(["htpasswd", "-Bbn", auth[0], auth[1]]).stdout.strip()
        htpasswd.write_text(line + "\n")
    tls_files, certs_dir, ca = None, None, None
    if tls:
        ca, crt, key = make_certificates(workdir / "pki")
        tls_files = (crt, key)
        certs_dir = workdir / "certs.d"
        (certs_dir / host).mkdir(parents=True)
        shutil.copy(ca, certs_dir / host / "ca.crt")
    config = workdir / "config.yml"
    config.write_text(_config(workdir / "storage", port, htpasswd, tls_files))
    log_path = workdir / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    server = RegistryServer(host, workdir / "storage", log_path, process.pid,
                            "https" if tls else "http", certs_dir, ca, auth)
    try:
        _wait_ready(server, process, timeout)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: RegistryServer, process: subprocess.Popen[bytes],
                timeout: float) -> None:
    import ssl
    import urllib.error
    import urllib.request

    context = None
    if server.ca_cert is not None:
        context = ssl.create_default_context(cafile=str(server.ca_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/v2/", timeout=2, context=context):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"docker-registry did not answer within {timeout}s:\n{server.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
