"""Docker's output conventions: sizes, ages, tables, --format."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from isobox.cli.gotemplate import Template, is_table, table_body
from isobox.humanize import human_duration

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float) -> str:
    """Docker's HumanSize: SI units, 3 significant digits (``4.26MB``)."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{_UNITS[i]}"


def ago(timestamp: float | None, now: float | None = None) -> str:
    if timestamp is None:
        return "N/A"
    return human_duration((now or time.time()) - timestamp) + " ago"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as Docker's tabwriter lays them out (minimum width 10, padding 3)."""
    return _columns(["\t".join(row) for row in [list(headers)] + [list(r) for r in rows]])


def render(fmt: str | None, rows: Sequence[Mapping[str, Any]], default_headers: Sequence[str],
           default_keys: Sequence[str], header_names: Mapping[str, str] | None = None) -> str:
    """Rows as Docker prints them: the default table, a ``table ...``
    template with headers, ``json``, or a plain template per row."""
    if fmt is None or fmt == "" or fmt == "table":
        return table(default_headers, ([str(r[k]) for k in default_keys] for r in rows))
    if fmt == "json":
        return "".join(json.dumps(dict(r), separators=(",", ":")) + "\n" for r in rows)
    template = Template(table_body(fmt))
    if is_table(fmt):
        header_row = Template(table_body(fmt)).render(_Headers(header_names or {}))
        body = [template.render(r) for r in rows]
        return _columns([header_row, *body])
    return "".join(template.render(r) + "\n" for r in rows)


class _Headers(dict):  # type: ignore[type-arg]
    """Renders ``{{.Field}}`` as the field's column title."""

    def __init__(self, names: Mapping[str, str]) -> None:
        super().__init__()
        self.names = names

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return self.names.get(key, _title(key))


def _title(field: str) -> str:
    out = []
    for i, ch in enumerate(field):
        if i and ch.isupper() and not field[i - 1].isupper():
            out.append(" ")
        out.append(ch.upper())
    return "".join(out)


def _columns(lines: list[str]) -> str:
    """Go's tabwriter.NewWriter(out, 10, 1, 3, ' ', 0), which the docker CLI uses:
    every column but the last is at least 10 wide, with 3 spaces of padding."""
    split = [line.split("\t") for line in lines]
    n = max(len(r) for r in split)
    widths = [max(10, max((len(r[i]) for r in split if i < len(r)), default=0) + 3)
              for i in range(n)]
    out = []
    for row in split:
        cells = [c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)]
        out.append("".join(cells).rstrip())
    return "\n".join(out) + "\n"


def print_inspect(found: Sequence[Any], fmt: str | None) -> None:
    """``inspect``'s output: a JSON array, or the template once per object."""
    import click

    if fmt:
        template = Template(fmt)
        for item in found:
            click.echo(template.render(item))
    else:
        click.echo(json.dumps(list(found), indent=4))


def inspect_all(names: Sequence[str], lookup: Any, fmt: str | None,
                prefix: str = "Error response from daemon: ") -> None:
    """Inspect each name, print what was found, one error line for each
    name that was not, and exit 1 if any was not (as docker does)."""
    import sys

    import click

    from isobox.errors import IsoboxError

    found, failed = [], False
    for name in names:
        try:
            found.append(lookup(name))
        except IsoboxError as exc:
            click.echo(f"{prefix}{exc}", err=True)
            failed = True
    print_inspect(found, fmt)
    if failed:
        sys.exit(1)


def each(names: Sequence[str], action: Any, echo: bool = True) -> None:
    """Docker's multi-object verbs (rm, stop, kill...): act on each, print its
    name (or what the action returned), report each failure on one line, and
    exit 1 if any failed."""
    import sys

    import click

    from isobox.errors import IsoboxError

    failed = False
    for name in names:
        try:
            result = action(name)
            if echo:
                click.echo(name if result is None else result)
        except IsoboxError as exc:
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)
