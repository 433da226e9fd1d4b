"""``isobox-runtime``: runc's command line over the isobox runtime.

Each handler is a thin adapter: parse (``args.py``), one library call.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from types import SimpleNamespace as Args

from isobox import __version__
from isobox.errors import InvalidArgument, IsoboxError
from isobox.oci.runtime_spec import OCI_VERSION, Process, User, decode_process, decode_resources
from isobox.runtime.args import command_usage, parse, usage


def _cmd_create(a: Args) -> int:
    from isobox.runtime.create import create

    create(a.root, a.id, a.bundle, pid_file=a.pid_file, console_socket=a.console_socket,
           no_pivot=a.no_pivot, preserve_fds=a.preserve_fds, systemd_cgroup=a.systemd_cgroup)
    return 0


def _cmd_run(a: Args) -> int:
    from isobox.runtime.run import run

    return run(a.root, a.id, a.bundle, detach=a.detach, pid_file=a.pid_file,
               console_socket=a.console_socket, no_pivot=a.no_pivot,
               preserve_fds=a.preserve_fds, keep=a.keep, systemd_cgroup=a.systemd_cgroup)


def _cmd_start(a: Args) -> int:
    from isobox.runtime.lifecycle import start

    start(a.root, a.id)
    return 0


def _cmd_state(a: Args) -> int:
    from isobox.runtime.query import state_json

    print(state_json(a.root, a.id))
    return 0


def _cmd_kill(a: Args) -> int:
    from isobox.runtime.lifecycle import kill
    from isobox.runtime.signals import parse_signal

    kill(a.root, a.id, parse_signal(a.signal), all_processes=a.all)
    return 0


def _cmd_delete(a: Args) -> int:
    from isobox.runtime.lifecycle import delete

    delete(a.root, a.id, force=a.force)
    return 0


def _cmd_pause(a: Args) -> int:
    from isobox.runtime.lifecycle import pause

    pause(a.root, a.id)
    return 0


def _cmd_resume(a: Args) -> int:
    from isobox.runtime.lifecycle import resume

    resume(a.root, a.id)
    return 0


def _exec_process(a: Args) -> Process:
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
        from isobox.oci.struct import replace

        caps = replace(proc.capabilities)
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


def _cmd_exec(a: Args) -> int:
    from isobox.runtime.exec import exec_in
    from isobox.runtime.sync import ChildFailed

    try:
        return _exec(a, exec_in)
    except ChildFailed as exc:
        # The process could not be started: say why (containerd reads --log),
        # exit as a shell would.
        if a.log:
            from isobox.linux.lazylog import get_logger

            get_logger("isobox.runtime").error(str(exc))
        print(f"isobox-runtime: {exc}", file=sys.stderr)
        return exc.exit_code if exc.exit_code in (126, 127) else 1


def _exec(a: Args, exec_in: Callable[..., int]) -> int:
    return exec_in(a.root, a.id, _exec_process(a), detach=a.detach, pid_file=a.pid_file,
                   console_socket=a.console_socket, preserve_fds=a.preserve_fds,
                   ignore_paused=a.ignore_paused)


def _cmd_list(a: Args) -> int:
    from isobox.runtime.query import format_list, list_rows

    sys.stdout.write(format_list(list_rows(a.root), a.format, a.quiet))
    return 0


def _cmd_ps(a: Args) -> int:
    from isobox.runtime.query import pids, ps_table

    if a.format == "json":
        print(json.dumps(pids(a.root, a.id)))
    else:
        sys.stdout.write(ps_table(a.root, a.id, a.ps_args))
    return 0


def _cmd_events(a: Args) -> int:
    from isobox.runtime.query import events

    interval = a.interval.rstrip("s")
    events(a.root, a.id, stats_only=a.stats, interval=float(interval or 5))
    return 0


def _cmd_spec(a: Args) -> int:
    from isobox.runtime.spec import default_spec, dumps

    path = os.path.join(a.bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        f.write(dumps(default_spec(rootless=a.rootless)))
    return 0


def _cmd_features(a: Args) -> int:
    from isobox.runtime.spec import dumps, features

    sys.stdout.write(dumps(features()))
    return 0


def _cmd_update(a: Args) -> int:
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


COMMANDS: dict[str, Callable[[Args], int]] = {
    "create": _cmd_create, "run": _cmd_run, "start": _cmd_start, "state": _cmd_state,
    "kill": _cmd_kill, "delete": _cmd_delete, "pause": _cmd_pause, "resume": _cmd_resume,
    "exec": _cmd_exec, "list": _cmd_list, "ps": _cmd_ps, "events": _cmd_events,
    "spec": _cmd_spec, "features": _cmd_features, "update": _cmd_update,
}


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if argv is None:
        # The command line's own process: skip interpreter teardown (module
        # and GC finalisation cost milliseconds on every container start).
        sys.stdout.flush()
        sys.stderr.flush()
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except InvalidArgument as exc:
        print(f"isobox-runtime: {exc}", file=sys.stderr)
        return 1
    if args.version:
        print(f"isobox-runtime version {__version__}\nspec: {OCI_VERSION}")
        return 0
    if args.verb is None or args.help:
        sys.stdout.write(command_usage(args.verb) if args.verb else usage())
        return 0
    if args.log or args.debug:
        from isobox.runtime.cli_logging import setup_logging

        setup_logging(args.log, args.log_format, args.debug)
    try:
        return COMMANDS[args.verb](args)
    except (IsoboxError, OSError, ValueError) as exc:
        from isobox.runtime.sync import describe

        message = describe(exc)
        if args.log:
            from isobox.linux.lazylog import get_logger

            get_logger("isobox.runtime").error(message)
        print(f"isobox-runtime: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
