"""A container's persisted record and its lifecycle status."""

import enum
import json
import os
import re

from isobox.errors import InvalidArgument, NotFound
from isobox.linux import proc
from isobox.linux.files import atomic_write
from isobox.oci.runtime_spec import OCI_VERSION, Spec, State
from isobox.oci.struct import Struct, ValidationError, convert, to_builtins
from isobox.runtime.cgroup import manager_for

DEFAULT_ROOT = "/run/isobox-runtime"
EXEC_FIFO = "exec.fifo"
#: <root>/@seccomp: compiled seccomp programs ("@" is never in a container id).
SECCOMP_CACHE = "@seccomp"
_ID = re.compile(r"[\w+\-.]+", re.ASCII)


class Status(enum.StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def can_start(self) -> bool:
        return self is Status.CREATED

    def can_kill(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING, Status.PAUSED)

    def can_exec(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING)

    def can_pause(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING)

    def can_delete(self) -> bool:
        return self in (Status.CREATED, Status.STOPPED)


class Record(Struct):
    """What ``create`` leaves in <root>/<id>/state.json."""

    id: str
    bundle: str
    rootfs: str
    pid: int
    pid_start: int
    created: str
    owner: str
    cgroup_path: str
    config: Spec
    no_pivot: bool = False




def validate_id(container_id: str) -> None:
    if not container_id or container_id in (".", "..") or not _ID.fullmatch(container_id):
        raise InvalidArgument(f"invalid container id {container_id!r}")


class Container:
    """One container of a runtime root: its record on disk and live status."""

    def __init__(self, root: str, record: Record) -> None:
        self.root = root
        self.record = record
        self.dir = os.path.join(root, record.id)

    @property
    def id(self) -> str:
        return self.record.id

    @classmethod
    def load(cls, root: str, container_id: str) -> "Container":
        validate_id(container_id)
        path = os.path.join(root, container_id, "state.json")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise NotFound(f"container {container_id} does not exist") from None
        return cls(root, convert(Record, json.loads(raw)))

    @classmethod
    def all(cls, root: str) -> list["Container"]:
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                found.append(cls.load(root, name))
            except (NotFound, InvalidArgument, ValidationError, ValueError):
                continue
        return found

    def encode(self) -> bytes:
        """The content of state.json."""
        return json.dumps(to_builtins(self.record)).encode()

    def save(self, encoded: bytes | None = None) -> None:
        """Write state.json (``encoded``: what encode() returned, if the
        record has not changed since)."""
        atomic_write(os.path.join(self.dir, "state.json"),
                     self.encode() if encoded is None else encoded, 0o600)

    def is_alive(self) -> bool:
        return proc.is_alive(self.record.pid, self.record.pid_start)

    def status(self) -> Status:
        if not self.is_alive():
            return Status.STOPPED
        if os.path.exists(os.path.join(self.dir, EXEC_FIFO)):
            return Status.CREATED
        try:
            if manager_for(self.record).is_frozen():
                return Status.PAUSED
        except OSError:
            pass
        return Status.RUNNING

    def oci_state(self, status: Status | None = None) -> State:
        status = status or self.status()
        return State(
            oci_version=self.record.config.oci_version or OCI_VERSION,
            id=self.id, status=str(status),
            pid=self.record.pid if status is not Status.STOPPED else 0,
            bundle=self.record.bundle,
            annotations=self.record.config.annotations,
        )

    def remove_dir(self) -> None:
        import shutil  # only on delete: keeps create and start light

        shutil.rmtree(self.dir, ignore_errors=True)
