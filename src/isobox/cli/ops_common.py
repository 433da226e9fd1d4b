"""What the operations commands (top, stats, cp, export, diff, commit, port,
update, volume, system, events) share: Docker's exit status 1 for usage
errors and failures, its ``Error response from daemon:`` lines, pflag's
``--flag=false`` syntax, and its size and table formats."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from isobox.errors import IsoboxError

F = TypeVar("F", bound=Callable[..., Any])

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


class DockerCommand(click.Command):
    """Usage errors exit 1, as the docker CLI's do; ``--flag=false`` works."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from isobox.cli.runopts import normalize_bool_flags

        try:
            return super().parse_args(ctx, normalize_bool_flags(self, args))
        except click.ClickException as exc:
            setattr(exc, "exit_code", 1)  # noqa: B010 (a class attribute)
            raise


class DockerGroup(click.Group):
    command_class = DockerCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            setattr(exc, "exit_code", 1)  # noqa: B010 (a class attribute)
            raise

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.ClickException as exc:
            setattr(exc, "exit_code", 1)  # noqa: B010 (a class attribute)
            raise


def fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def daemon_errors(fn: F) -> F:
    """Engine errors as the docker CLI prints the daemon's: one line, exit 1.
    Errors about the caller's own files carry no daemon prefix."""
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        from isobox.engine.copy import HostPathError

        try:
            return fn(*args, **kwargs)
        except HostPathError as exc:
            fail(str(exc))
        except IsoboxError as exc:
            text = str(exc)
            fail(text if text.startswith("Error: ") else f"Error response from daemon: {text}")
        except BrokenPipeError:
            # The reader went away (``| head``): nothing more may reach stdout,
            # not even from a half-written tar stream's finaliser.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:
            fail(f"Error response from daemon: {exc.strerror or exc}")
        except KeyboardInterrupt:
            sys.exit(130)
    return inner  # type: ignore[return-value]


def _custom_size(size: float, base: float, units: Sequence[str], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def human_size(size: float, precision: int = 4) -> str:
    """go-units' HumanSizeWithPrecision (SI units); HumanSize is precision 4."""
    return _custom_size(float(size), 1000.0, _DECIMAL, precision)


def bytes_size(size: float) -> str:
    """go-units' BytesSize: binary units, 4 significant digits (``1.5MiB``)."""
    return _custom_size(float(size), 1024.0, _BINARY, 4)


def tabwriter(rows: Sequence[Sequence[str]], *, minwidth: int = 0, padding: int = 3) -> str:
    """Go's tabwriter with ' ' padding: every column but the last as wide as
    its widest cell plus ``padding``, at least ``minwidth``."""
    if not rows:
        return ""
    n = max(len(r) for r in rows)
    widths = [max([len(r[i]) + padding for r in rows if i < len(r) - 1] + [minwidth])
              for i in range(n)]
    lines = []
    for row in rows:
        cells = [c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)]
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def confirm(prompt: str) -> bool:
    """Docker's ``Are you sure you want to continue? [y/N]``."""
    click.echo(f"{prompt}\nAre you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def add_to_group(cli: click.Group, group: str, commands: Sequence[tuple[click.Command, str]]
                 ) -> None:
    """Add commands to an existing group (``container``) if it is there."""
    target = cli.commands.get(group)
    if isinstance(target, click.Group):
        for command, name in commands:
            target.add_command(command, name)
