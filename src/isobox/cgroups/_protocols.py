"""The manager interface and the controller interface (for type checking:
nothing imports this module at run time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from isobox.oci.runtime_spec import Resources


class Manager(Protocol):
    """One cgroup (the same relative path in every hierarchy) of one container."""

    path: str
    version: int

    def create(self) -> None: ...
    def apply(self, pid: int) -> None: ...
    def set(self, resources: Resources) -> None: ...
    def pids(self) -> list[int]: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def is_frozen(self) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    def destroy(self) -> None: ...
    def exists(self) -> bool: ...
    def host_paths(self) -> dict[str, str]: ...


class Controller(Protocol):
    """One controller module (``v1/memory.py``, ``v2/io.py``...)."""

    #: The kernel's name for the controller ("memory", "cpu", "io"...).
    NAME: str

    def wants(self, resources: Resources) -> bool:
        """Whether ``resources`` asks this controller for anything."""
        ...

    def apply(self, path: str, resources: Resources) -> None:
        """Write the limits of ``resources`` into the cgroup directory ``path``."""
        ...

    def stats(self, path: str) -> dict[str, Any]:
        """Partial runc-shaped stats ({"memory": {...}}); empty when nothing to read."""
        ...
