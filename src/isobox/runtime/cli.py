"""``isobox-runtime``: runc's command line over the isobox runtime.

argparse rather than click here: this runs on every container start and
stop, and its import cost is part of the start time we measure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from collections.abc import Callable

from isobox import __version__
from isobox.errors import InvalidArgument, IsoboxError
from isobox.oci.runtime_spec import OCI_VERSION, Process, User, decode_process, decode_resources
from isobox.runtime.state import DEFAULT_ROOT

log = logging.getLogger("isobox.runtime")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "level": record.levelname.lower().replace("warning", "warn"),
            "msg": record.getMessage(),
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat()
            .replace("+00:00", "Z"),
        })


def _setup_logging(args: argparse.Namespace) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    handler: logging.Handler
    handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("isobox-runtime: %(levelname)s %(message)s"))
    root.addHandler(handler)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isobox-runtime",
                                description="runc-compatible OCI runtime of isobox")
    p.add_argument("--root", default=DEFAULT_ROOT, help="state directory")
    p.add_argument("--log", default=None, help="log file")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="read cgroupsPath as slice:prefix:name")
    p.add_argument("--rootless", default="auto")
    p.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="verb")

    def bundle_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("id")
        sp.add_argument("-b", "--bundle", default=".")
        sp.add_argument("--console-socket", default=None)
        sp.add_argument("--pid-file", default=None)
        sp.add_argument("--no-pivot", action="store_true")
        sp.add_argument("--no-new-keyring", action="store_true")
        sp.add_argument("--preserve-fds", type=int, default=0)

    bundle_args(sub.add_parser("create", help="create a container"))
    run = sub.add_parser("run", help="create and run a container")
    bundle_args(run)
    run.add_argument("-d", "--detach", action="store_true")
    run.add_argument("--keep", action="store_true")
    for name in ("start", "state", "pause", "resume"):
        sub.add_parser(name).add_argument("id")
    kill = sub.add_parser("kill", help="send a signal to the container's init")
    kill.add_argument("-a", "--all", action="store_true")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM")
    delete = sub.add_parser("delete", help="delete a container")
    delete.add_argument("-f", "--force", action="store_true")
    delete.add_argument("id")
    ex = sub.add_parser("exec", help="run a process in a container")
    ex.add_argument("--console-socket", default=None)
    ex.add_argument("--cwd", default=None)
    ex.add_argument("-e", "--env", action="append", default=[])
    ex.add_argument("-t", "--tty", action="store_true")
    ex.add_argument("-u", "--user", default=None)
    ex.add_argument("-g", "--additional-gids", action="append", type=int, default=[])
    ex.add_argument("-p", "--process", default=None)
    ex.add_argument("-d", "--detach", action="store_true")
    ex.add_argument("--pid-file", default=None)
    ex.add_argument("--process-label", default=None)
    ex.add_argument("--apparmor", default=None)
    ex.add_argument("--no-new-privs", action="store_true")
    ex.add_argument("-c", "--cap", action="append", default=[])
    ex.add_argument("--preserve-fds", type=int, default=0)
    ex.add_argument("--cgroup", default=None)
    ex.add_argument("--ignore-paused", action="store_true")
    ex.add_argument("id")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ls = sub.add_parser("list", help="list containers")
    ls.add_argument("-f", "--format", default="table", choices=("table", "json"))
    ls.add_argument("-q", "--quiet", action="store_true")
    ps = sub.add_parser("ps", help="processes of a container")
    ps.add_argument("-f", "--format", default="table", choices=("table", "json"))
    ps.add_argument("id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER)
    ev = sub.add_parser("events", help="resource statistics of a container")
    ev.add_argument("--stats", action="store_true")
    ev.add_argument("--interval", default="5s")
    ev.add_argument("id")
    sp = sub.add_parser("spec", help="write a starting config.json")
    sp.add_argument("-b", "--bundle", default=".")
    sp.add_argument("--rootless", action="store_true")
    sub.add_parser("features", help="what this runtime supports, as JSON")
    up = sub.add_parser("update", help="change a container's resource limits")
    up.add_argument("-r", "--resources", default=None)
    up.add_argument("--memory", type=int, default=None)
    up.add_argument("--memory-swap", type=int, default=None)
    up.add_argument("--memory-reservation", type=int, default=None)
    up.add_argument("--cpu-shares", type=int, default=None)
    up.add_argument("--cpu-quota", type=int, default=None)
    up.add_argument("--cpu-period", type=int, default=None)
    up.add_argument("--cpuset-cpus", default=None)
    up.add_argument("--cpuset-mems", default=None)
    up.add_argument("--pids-limit", type=int, default=None)
    up.add_argument("id")
    return p


def _cmd_create(a: argparse.Namespace) -> int:
    from isobox.runtime.create import create

    create(a.root, a.id, a.bundle, pid_file=a.pid_file, console_socket=a.console_socket,
           no_pivot=a.no_pivot, preserve_fds=a.preserve_fds, systemd_cgroup=a.systemd_cgroup)
    return 0


def _cmd_run(a: argparse.Namespace) -> int:
    from isobox.runtime.run import run

    return run(a.root, a.id, a.bundle, detach=a.detach, pid_file=a.pid_file,
               console_socket=a.console_socket, no_pivot=a.no_pivot,
               preserve_fds=a.preserve_fds, keep=a.keep, systemd_cgroup=a.systemd_cgroup)


def _cmd_start(a: argparse.Namespace) -> int:
    from isobox.runtime.lifecycle import start

    start(a.root, a.id)
    return 0


def _cmd_state(a: argparse.Namespace) -> int:
    from isobox.runtime.query import state_json

    print(state_json(a.root, a.id))
    return 0


def _cmd_kill(a: argparse.Namespace) -> int:
    from isobox.runtime.lifecycle import kill
    from isobox.runtime.signals import parse_signal

    kill(a.root, a.id, parse_signal(a.signal), all_processes=a.all)
    return 0


def _cmd_delete(a: argparse.Namespace) -> int:
    from isobox.runtime.lifecycle import delete

    delete(a.root, a.id, force=a.force)
    return 0


def _cmd_pause(a: argparse.Namespace) -> int:
    from isobox.runtime.lifecycle import pause

    pause(a.root, a.id)
    return 0


def _cmd_resume(a: argparse.Namespace) -> int:
    from isobox.runtime.lifecycle import resume

    resume(a.root, a.id)
    return 0


def _exec_process(a: argparse.Namespace) -> Process:
    if a.process:
        with open(a.process, "rb") as f:
            return decode_process(f.read())
    from isobox.runtime.state import Container

    base = Container.load(a.root, a.id).record.config.process
    if not a.command:
        raise InvalidArgument("exec needs a command (or --process)")
    proc = Process(
        terminal=a.tty, args=list(a.command), cwd=a.cwd or (base.cwd if base else "/"),
        env=list(base.env or []) + list(a.env) if base else list(a.env),
        user=_user(a.user, base.user if base else User()),
        capabilities=base.capabilities if base else None,
        rlimits=base.rlimits if base else None,
        no_new_privileges=a.no_new_privs or (base.no_new_privileges if base else False),
    )
    if a.additional_gids:
        proc.user.additional_gids = list(a.additional_gids)
    if a.cap and proc.capabilities is not None:
        import msgspec

        caps = msgspec.structs.replace(proc.capabilities)
        for field in ("bounding", "effective", "permitted"):
            setattr(caps, field, sorted(set(getattr(caps, field) or []) | set(a.cap)))
        proc.capabilities = caps
    return proc


def _user(text: str | None, default: User) -> User:
    if not text:
        return User(uid=default.uid, gid=default.gid, additional_gids=default.additional_gids)
    uid, _, gid = text.partition(":")
    try:
        return User(uid=int(uid), gid=int(gid) if gid else 0)
    except ValueError:
        raise InvalidArgument(f"invalid --user {text!r}: use uid[:gid]") from None


def _cmd_exec(a: argparse.Namespace) -> int:
    from isobox.runtime.exec import exec_in

    return exec_in(a.root, a.id, _exec_process(a), detach=a.detach, pid_file=a.pid_file,
                   console_socket=a.console_socket, preserve_fds=a.preserve_fds,
                   ignore_paused=a.ignore_paused)


def _cmd_list(a: argparse.Namespace) -> int:
    from isobox.runtime.query import format_list, list_rows

    sys.stdout.write(format_list(list_rows(a.root), a.format, a.quiet))
    return 0


def _cmd_ps(a: argparse.Namespace) -> int:
    from isobox.runtime.query import pids, ps_table

    if a.format == "json":
        print(json.dumps(pids(a.root, a.id)))
    else:
        sys.stdout.write(ps_table(a.root, a.id, a.ps_args))
    return 0


def _cmd_events(a: argparse.Namespace) -> int:
    from isobox.runtime.query import events

    interval = a.interval.rstrip("s")
    events(a.root, a.id, stats_only=a.stats, interval=float(interval or 5))
    return 0


def _cmd_spec(a: argparse.Namespace) -> int:
    from isobox.runtime.spec import default_spec, dumps

    path = os.path.join(a.bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        f.write(dumps(default_spec(rootless=a.rootless)))
    return 0


def _cmd_features(a: argparse.Namespace) -> int:
    from isobox.runtime.spec import dumps, features

    sys.stdout.write(dumps(features()))
    return 0


def _cmd_update(a: argparse.Namespace) -> int:
    from isobox.runtime.cgroup import manager_for
    from isobox.runtime.state import Container

    container = Container.load(a.root, a.id)
    if a.resources:
        if a.resources == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(a.resources, "rb") as f:
                raw = f.read()
        resources = decode_resources(raw)
    else:
        fields: dict[str, object] = {}
        memory = {k: v for k, v in (("limit", a.memory), ("swap", a.memory_swap),
                                    ("reservation", a.memory_reservation)) if v is not None}
        cpu = {k: v for k, v in (("shares", a.cpu_shares), ("quota", a.cpu_quota),
                                 ("period", a.cpu_period), ("cpus", a.cpuset_cpus),
                                 ("mems", a.cpuset_mems)) if v is not None}
        if memory:
            fields["memory"] = memory
        if cpu:
            fields["cpu"] = cpu
        if a.pids_limit is not None:
            fields["pids"] = {"limit": a.pids_limit}
        resources = decode_resources(json.dumps(fields).encode())
    manager_for(container.record).set(resources)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "create": _cmd_create, "run": _cmd_run, "start": _cmd_start, "state": _cmd_state,
    "kill": _cmd_kill, "delete": _cmd_delete, "pause": _cmd_pause, "resume": _cmd_resume,
    "exec": _cmd_exec, "list": _cmd_list, "ps": _cmd_ps, "events": _cmd_events,
    "spec": _cmd_spec, "features": _cmd_features, "update": _cmd_update,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"isobox-runtime version {__version__}\nspec: {OCI_VERSION}")
        return 0
    if not args.verb:
        _parser().print_help()
        return 0
    _setup_logging(args)
    try:
        return COMMANDS[args.verb](args)
    except (IsoboxError, OSError, ValueError) as exc:
        from isobox.runtime.sync import describe

        message = describe(exc)
        if args.log:
            log.error(message)
        print(f"isobox-runtime: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
