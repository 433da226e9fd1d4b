"""The seam between the builder and the engine: what a build needs done with
images and containers, as a Protocol the engine implements
(``isobox.engine.build_steps``) and the unit tests fake.

Every step that changes files runs on an image (its parent): RUN in a real
container, COPY/ADD by writing into a container's writable layer; both hand
back the layer they made (or None: nothing changed). ``commit`` makes an
(untagged) image of layers and config and readies it for the next step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from isobox.images.builder import Layer
from isobox.oci import image_spec as spec

__all__ = ["BaseImage", "CopyItem", "RunOptions", "StepRunner"]


@dataclass(frozen=True)
class BaseImage:
    id: str                        #: "sha256:..."
    config: spec.ImageConfig
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class CopyItem:
    """One source of a COPY/ADD, resolved: where it comes from and where it goes.

    ``dest`` is absolute in the image; a trailing "/" (or an existing
    directory there) puts a file under its own name inside it. A directory
    source copies its contents into ``dest``."""
    dest: str
    name: str                      #: the source's base name (a file copied into a dir)
    host_path: str | None = None   #: a file or directory on the host (the context)
    image: str | None = None       #: or: a path inside this image (COPY --from)
    image_path: str = ""
    data: bytes | None = None      #: or: these bytes (a heredoc)
    extract: bool = False          #: ADD: unpack this local tar archive into dest
    mode: int | None = None        #: --chmod (or a heredoc's 0644)


@dataclass(frozen=True)
class RunOptions:
    env: Sequence[str]
    workdir: str
    user: str
    network: str = "default"
    isolation: str = ""


class StepRunner(Protocol):
    def base(self, name: str, platform: str | None) -> BaseImage:
        """A FROM image by name or id (``NotFound`` if absent)."""
        ...

    def run(self, parent: BaseImage, argv: Sequence[str], options: RunOptions,
            output: Callable[[bytes], None]) -> tuple[int, Layer | None]:
        """RUN ``argv`` in a container of ``parent``; (exit code, layer)."""
        ...

    def copy(self, parent: BaseImage, items: Sequence[CopyItem], *, chown: str | None,
             workdir: str, mkdir: Sequence[str] = ()) -> Layer | None:
        """Write ``items`` (and create directories ``mkdir``) into a container
        of ``parent``; ``chown`` (user[:group]) is resolved in its /etc/passwd."""
        ...

    def commit(self, layers: Sequence[Layer], config: spec.ImageConfig,
               history: Sequence[spec.History]) -> BaseImage:
        """An untagged image, ready to be a parent."""
        ...

    def exists(self, image_id: str) -> BaseImage | None:
        """The image, when it is still there (a cache hit)."""
        ...

    def tag(self, image_id: str, tags: Sequence[str]) -> None:
        ...
