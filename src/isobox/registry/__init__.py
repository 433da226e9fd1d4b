"""OCI distribution client: pull into the content store, push from it.

    with RegistryClient(RegistryOptions(insecure=("10.0.0.0/8",)),
                        credentials=CredentialStore(path)) as client:
        result = client.pull(reference.parse("host:5000/app:1"), store)
        client.push(reference.parse("host:5000/app:2"), store, result.manifest_digest)
"""

from isobox.registry.client import (
    DEFAULT_PLATFORM,
    RegistryClient,
    RegistryOptions,
    certs_dirs_for,
    registry_domain,
)
from isobox.registry.credentials import (
    DOCKER_HUB_KEY,
    Credentials,
    CredentialStore,
    docker_config_path,
    registry_key,
)
from isobox.registry.errors import Forbidden, TLSVerificationError, Unauthorized
from isobox.registry.progress import (
    EventKind,
    JSONProgress,
    PlainProgress,
    Progress,
    ProgressEvent,
    RichProgress,
    docker_status,
    json_stream,
    terminal_progress,
)
from isobox.registry.pull import SCHEMA1_MESSAGE, PlatformSpec, PullResult
from isobox.registry.push import MountFrom

__all__ = [
    "DEFAULT_PLATFORM",
    "DOCKER_HUB_KEY",
    "SCHEMA1_MESSAGE",
    "CredentialStore",
    "Credentials",
    "EventKind",
    "Forbidden",
    "JSONProgress",
    "MountFrom",
    "PlainProgress",
    "PlatformSpec",
    "Progress",
    "ProgressEvent",
    "PullResult",
    "RegistryClient",
    "RegistryOptions",
    "RichProgress",
    "TLSVerificationError",
    "Unauthorized",
    "certs_dirs_for",
    "docker_config_path",
    "docker_status",
    "json_stream",
    "registry_domain",
    "registry_key",
    "terminal_progress",
]
