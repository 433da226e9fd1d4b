"""``top``, ``stats`` and ``events``: watching containers."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from isobox.cli.context import Context, pass_ctx
from isobox.cli.ops_common import (
    DockerCommand,
    add_to_group,
    bytes_size,
    daemon_errors,
    human_size,
    tabwriter,
)
from isobox.cli.output import render


@click.command("top", cls=DockerCommand,
               context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
@daemon_errors
def top(ctx: Context, container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container (ps options after the
    container, default -ef)."""
    from isobox.engine.top import top as engine_top

    titles, rows = engine_top(ctx.containers, container, " ".join(ps_args))
    click.echo(tabwriter([titles, *rows], minwidth=20, padding=3), nl=False)


STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
STATS_KEYS = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"]


def _stats_row(u: Any, shown: str, no_trunc: bool) -> dict[str, str]:
    return {"BlockIO": f"{human_size(u.blk_read, 3)} / {human_size(u.blk_write, 3)}",
            "CPUPerc": f"{u.cpu_percent:.2f}%", "Container": shown,
            "ID": u.id if no_trunc else u.id[:12],
            "MemPerc": f"{u.mem_percent:.2f}%",
            "MemUsage": f"{bytes_size(u.mem_usage)} / {bytes_size(u.mem_limit)}",
            "Name": u.name, "NetIO": f"{human_size(u.net_rx, 3)} / {human_size(u.net_tx, 3)}",
            "PIDs": str(u.pids)}


@click.command("stats", cls=DockerCommand)
@click.argument("containers", nargs=-1)
@click.option("-a", "--all", "all_", is_flag=True,
              help="Show all containers (default shows just running)")
@click.option("--no-stream", is_flag=True, help="Disable streaming stats and only pull the "
              "first result")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.option("--format", "fmt", default=None, help="Format output using a Go template, "
              "'table', or 'json'")
@pass_ctx
@daemon_errors
def stats(ctx: Context, containers: tuple[str, ...], all_: bool, no_stream: bool,
          no_trunc: bool, fmt: str | None) -> None:
    """Display a live stream of container(s) resource usage statistics
    (refreshed every second until Ctrl-C; --no-stream prints once)."""
    from isobox.engine.stats import Sampler

    service = ctx.containers
    sampler = Sampler(service)
    clear = not no_stream and sys.stdout.isatty()
    while True:
        if containers:
            records = [service.get(name) for name in containers]
            shown = list(containers)
        else:
            records = service.records(all_containers=all_)
            shown = [r.id[:12] for r in records]
        usages = sampler.take(records, warmup=1.0)
        rows = [_stats_row(u, s, no_trunc) for u, s in zip(usages, shown, strict=True)]
        text = render(fmt, rows, [STATS_HEADERS[k] for k in STATS_KEYS], STATS_KEYS,
                      STATS_HEADERS)
        if clear:
            text = "\033[2J\033[H" + text
        click.echo(text, nl=False)
        if no_stream:
            return
        time.sleep(1.0)


class _Message(dict):  # type: ignore[type-arg]
    """An events.Message for templates: Go field names (.ID, .Status, .Time)
    over its JSON keys (``{{json .}}`` prints those)."""

    _ALIASES = {"Status": "status", "ID": "id", "From": "from", "Scope": "scope",
                "Time": "time", "TimeNano": "timeNano"}

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._ALIASES.get(str(key), key))

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(self._ALIASES.get(key, key))


@click.command("events", cls=DockerCommand)
@click.option("--since", default=None, help="Show all events created since timestamp")
@click.option("--until", default=None, help="Stream events until this timestamp")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on "
              "conditions provided (type=, event=, container=, image=, volume=, label=)")
@click.option("--format", "fmt", default=None, help="Format output using a Go template, or "
              "'json'")
@pass_ctx
@daemon_errors
def events(ctx: Context, since: str | None, until: str | None, filters: tuple[str, ...],
           fmt: str | None) -> None:
    """Get real time events from the engine (until Ctrl-C, or --until)."""
    from isobox.cli.gotemplate import Template
    from isobox.engine.events import EventFilter, follow
    from isobox.engine.logs import parse_since

    match = EventFilter(filters)
    start = parse_since(since) if since else None
    end = parse_since(until) if until else None
    template = Template(fmt) if fmt and fmt != "json" else None
    for ev in follow(ctx.containers.store, since=start, until=end, match=match):
        if fmt == "json":
            line = json.dumps(ev.message(), separators=(",", ":"))
        elif template is not None:
            line = template.render(_Message(ev.message()))
        else:
            line = ev.line()
        click.echo(line)


def register(cli: click.Group) -> None:
    for command in (top, stats, events):
        cli.add_command(command)
    add_to_group(cli, "container", [(top, "top"), (stats, "stats")])
