"""What every command gets: the engine configuration and lazily built services,
and the one place where errors become a line on stderr and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from isobox.engine.config import EngineConfig, command_server_idle, load_config
from isobox.errors import IsoboxError

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._images: Any = None
        self._containers: Any = None

    @property
    def images(self) -> Any:
        if self._images is None:
            from isobox.engine.images import ImageService

            self._images = ImageService(self.config)
        return self._images

    @property
    def containers(self) -> Any:
        if self._containers is None:
            from isobox.engine.containers import ContainerService

            self._containers = ContainerService(self.config, self.images)
        return self._containers


def make_context(root: str | None, insecure: tuple[str, ...]) -> Context:
    from isobox.engine import resident, zygote

    config = load_config(root, insecure_registries=list(insecure))
    zygote.use_shared(config)  # monitors forked by the root's warm launcher
    if resident.declined in ("absent", "stale"):  # the front end found no server
        resident.declined = ""
        idle = command_server_idle(config)
        if idle != 0:
            resident.spawn(config.run_root, idle, config.settings_file)  # for the next command
    return Context(config)


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def errors(exit_code: int | None = None) -> Callable[[F], F]:
    """Turn library errors into one line on stderr. ``exit_code`` None: the
    error's own (125 engine, 126, 127), as ``run`` reports; else that code,
    as Docker's other commands exit 1."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except IsoboxError as exc:
                fail(str(exc), exit_code if exit_code is not None else exc.exit_code)
            except OSError as exc:
                fail(exc.strerror or str(exc), exit_code if exit_code is not None else 125)
            except KeyboardInterrupt:
                sys.exit(130)
        return inner  # type: ignore[return-value]
    return wrap
