"""The OCI image spec and Docker's schema2: descriptors, manifests, indexes,
image configs. msgspec Structs (decoding manifests is not on the container
start path, so msgspec's import cost does not matter here)."""

from __future__ import annotations

from typing import Any

import msgspec

from isobox.errors import InvalidArgument

# Media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
LAYER_TYPES = frozenset({OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_NONDIST_GZIP,
                         DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN,
                         "application/vnd.oci.image.layer.nondistributable.v1.tar",
                         "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"})
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


class Platform(msgspec.Struct, omit_defaults=True, kw_only=True):
    architecture: str
    os: str
    os_version: str | None = msgspec.field(default=None, name="os.version")
    os_features: list[str] | None = msgspec.field(default=None, name="os.features")
    variant: str | None = None


class Descriptor(msgspec.Struct, omit_defaults=True, kw_only=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = None


class Manifest(msgspec.Struct, omit_defaults=True, kw_only=True, rename="camel"):
    schema_version: int
    config: Descriptor
    layers: list[Descriptor]
    media_type: str | None = None
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None


class Index(msgspec.Struct, omit_defaults=True, kw_only=True, rename="camel"):
    schema_version: int
    manifests: list[Descriptor]
    media_type: str | None = None
    annotations: dict[str, str] | None = None


class HealthConfig(msgspec.Struct, omit_defaults=True, kw_only=True, rename="pascal"):
    test: list[str] | None = None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


class ContainerConfig(msgspec.Struct, omit_defaults=True, kw_only=True, rename="pascal"):
    """The ``config`` section of an image config (Docker's PascalCase names)."""

    user: str | None = None
    exposed_ports: dict[str, dict[str, Any]] | None = None
    env: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    args_escaped: bool | None = None
    healthcheck: HealthConfig | None = None
    on_build: list[str] | None = None
    shell: list[str] | None = None


class RootFS(msgspec.Struct, kw_only=True):
    type: str = "layers"
    diff_ids: list[str] = msgspec.field(default_factory=list)


class History(msgspec.Struct, omit_defaults=True, kw_only=True):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = msgspec.field(default=None, name="os.version")
    created: str | None = None
    author: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS
    history: list[History] | None = None


def decode(raw: bytes, type_: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None


def decode_manifest(raw: bytes) -> Manifest:
    result: Manifest = decode(raw, Manifest, "image manifest")
    return result


def decode_index(raw: bytes) -> Index:
    result: Index = decode(raw, Index, "image index")
    return result


def decode_config(raw: bytes) -> ImageConfig:
    result: ImageConfig = decode(raw, ImageConfig, "image config")
    return result


def media_type_of(raw: bytes) -> str:
    """The media type a manifest-ish document declares (or implies)."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("manifest is not a JSON object")
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    media = doc.get("mediaType")
    if isinstance(media, str):
        return media
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise InvalidArgument("document is neither an image manifest nor an index")


def encode(value: msgspec.Struct) -> bytes:
    return msgspec.json.encode(value)


def platform_matches(platform: Platform | None, os: str, arch: str,
                     variant: str | None = None) -> bool:
    if platform is None:
        return False
    if platform.os != os or platform.architecture != arch:
        return False
    return variant is None or platform.variant in (None, variant)


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """``linux/amd64`` or ``linux/arm64/v8`` -> (os, arch, variant)."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f"invalid platform {text!r}: want os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None
