"""runc's command line, parsed by a small table.

Not argparse: this runs on every container start, and argparse (with gettext
and locale) costs ~5 ms to import, an eighth of runc's whole ``run``. Parsing
follows runc's urfave/cli: global flags before the command, the command's
flags before its positional arguments, and for ``exec`` and ``ps`` everything
after the container id belongs to the process.
"""

from __future__ import annotations

from types import SimpleNamespace

from isobox.errors import InvalidArgument
from isobox.runtime.state import DEFAULT_ROOT

# flag -> (dest, kind, default); kind is "bool", "str", "int", "list", "intlist"
Flags = dict[str, tuple[str, str, object]]

GLOBAL_FLAGS: Flags = {
    "--root": ("root", "str", DEFAULT_ROOT),
    "--log": ("log", "str", None),
    "--log-format": ("log_format", "str", "text"),
    "--debug": ("debug", "bool", False),
    "--systemd-cgroup": ("systemd_cgroup", "bool", False),
    "--rootless": ("rootless", "str", "auto"),
    "--criu": ("criu", "str", None),
    "-v": ("version", "bool", False), "--version": ("version", "bool", False),
    "-h": ("help", "bool", False), "--help": ("help", "bool", False),
}
_BUNDLE: Flags = {
    "-b": ("bundle", "str", "."), "--bundle": ("bundle", "str", "."),
    "--console-socket": ("console_socket", "str", None),
    "--pid-file": ("pid_file", "str", None),
    "--no-pivot": ("no_pivot", "bool", False),
    "--no-new-keyring": ("no_new_keyring", "bool", False),
    "--preserve-fds": ("preserve_fds", "int", 0),
}
_HELP: Flags = {"-h": ("help", "bool", False), "--help": ("help", "bool", False)}


class Command:
    def __init__(self, summary: str, positionals: tuple[str, ...] = ("id",),
                 flags: Flags | None = None, optional: tuple[tuple[str, str], ...] = (),
                 rest: str | None = None) -> None:
        self.summary = summary
        self.positionals = positionals
        self.flags = {**_HELP, **(flags or {})}
        self.optional = optional
        self.rest = rest


COMMANDS: dict[str, Command] = {
    "create": Command("create a container", flags=_BUNDLE),
    "run": Command("create and run a container", flags={
        **_BUNDLE, "-d": ("detach", "bool", False), "--detach": ("detach", "bool", False),
        "--keep": ("keep", "bool", False)}),
    "start": Command("start a created container"),
    "state": Command("print a container's state as JSON"),
    "pause": Command("freeze every process of a container"),
    "resume": Command("thaw a paused container"),
    "kill": Command("send a signal to the container's init", flags={
        "-a": ("all", "bool", False), "--all": ("all", "bool", False)},
        optional=(("signal", "SIGTERM"),)),
    "delete": Command("delete a container", flags={
        "-f": ("force", "bool", False), "--force": ("force", "bool", False)}),
    "exec": Command("run a process in a container", rest="command", flags={
        "--console-socket": ("console_socket", "str", None),
        "--cwd": ("cwd", "str", None),
        "-e": ("env", "list", None), "--env": ("env", "list", None),
        "-t": ("tty", "bool", False), "--tty": ("tty", "bool", False),
        "-u": ("user", "str", None), "--user": ("user", "str", None),
        "-g": ("additional_gids", "intlist", None),
        "--additional-gids": ("additional_gids", "intlist", None),
        "-p": ("process", "str", None), "--process": ("process", "str", None),
        "-d": ("detach", "bool", False), "--detach": ("detach", "bool", False),
        "--pid-file": ("pid_file", "str", None),
        "--process-label": ("process_label", "str", None),
        "--apparmor": ("apparmor", "str", None),
        "--no-new-privs": ("no_new_privs", "bool", False),
        "-c": ("cap", "list", None), "--cap": ("cap", "list", None),
        "--preserve-fds": ("preserve_fds", "int", 0),
        "--cgroup": ("cgroup", "str", None),
        "--ignore-paused": ("ignore_paused", "bool", False)}),
    "list": Command("list containers", positionals=(), flags={
        "-f": ("format", "str", "table"), "--format": ("format", "str", "table"),
        "-q": ("quiet", "bool", False), "--quiet": ("quiet", "bool", False)}),
    "ps": Command("show the processes of a container", rest="ps_args", flags={
        "-f": ("format", "str", "table"), "--format": ("format", "str", "table")}),
    "events": Command("print resource statistics of a container", flags={
        "--stats": ("stats", "bool", False), "--interval": ("interval", "str", "5s")}),
    "spec": Command("write a starting config.json", positionals=(), flags={
        "-b": ("bundle", "str", "."), "--bundle": ("bundle", "str", "."),
        "--rootless": ("rootless", "bool", False)}),
    "features": Command("show what this runtime supports, as JSON", positionals=()),
    "update": Command("change a container's resource limits", flags={
        "-r": ("resources", "str", None), "--resources": ("resources", "str", None),
        "--memory": ("memory", "int", None), "--memory-swap": ("memory_swap", "int", None),
        "--memory-reservation": ("memory_reservation", "int", None),
        "--cpu-shares": ("cpu_shares", "int", None), "--cpu-quota": ("cpu_quota", "int", None),
        "--cpu-period": ("cpu_period", "int", None), "--cpuset-cpus": ("cpuset_cpus", "str", None),
        "--cpuset-mems": ("cpuset_mems", "str", None),
        "--pids-limit": ("pids_limit", "int", None)}),
}

CHOICES = {"log_format": ("text", "json"), "format": ("table", "json")}


def _defaults(flags: Flags, into: SimpleNamespace) -> None:
    for dest, kind, default in flags.values():
        if not hasattr(into, dest):
            setattr(into, dest, [] if kind in ("list", "intlist") else default)


def _set(ns: SimpleNamespace, flags: Flags, token: str, args: list[str], where: str) -> None:
    name, eq, value = token.partition("=")
    if name not in flags:
        raise InvalidArgument(f"flag provided but not defined: {name} ({where})")
    dest, kind, _ = flags[name]
    if kind == "bool":
        if eq and value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid boolean value {value!r} for {name}")
        setattr(ns, dest, not eq or value.lower() in ("true", "1"))
        return
    if not eq:
        if not args:
            raise InvalidArgument(f"flag needs an argument: {name}")
        value = args.pop(0)
    if dest in CHOICES and value not in CHOICES[dest]:
        raise InvalidArgument(f"invalid value {value!r} for {name}: use one of "
                              f"{', '.join(CHOICES[dest])}")
    if kind in ("int", "intlist"):
        try:
            number = int(value)
        except ValueError:
            raise InvalidArgument(f"invalid value {value!r} for {name}: not a number") from None
        if kind == "int":
            setattr(ns, dest, number)
        else:
            getattr(ns, dest).append(number)
    elif kind == "list":
        getattr(ns, dest).append(value)
    else:
        setattr(ns, dest, value)


def parse(argv: list[str]) -> SimpleNamespace:
    args = list(argv)
    ns = SimpleNamespace(verb=None)
    _defaults(GLOBAL_FLAGS, ns)
    while args and args[0].startswith("-") and args[0] != "-":
        _set(ns, GLOBAL_FLAGS, args.pop(0), args, "global")
    if not args:
        return ns
    verb = args.pop(0)
    if verb not in COMMANDS:
        raise InvalidArgument(f"unknown command {verb!r}; see 'isobox-runtime --help'")
    ns.verb = verb
    command = COMMANDS[verb]
    _defaults(command.flags, ns)
    positional: list[str] = []
    while args:
        token = args.pop(0)
        if token == "--" and not (command.rest and len(positional) == len(command.positionals)):
            positional.extend(args)
            break
        if command.rest and len(positional) == len(command.positionals) and positional:
            args.insert(0, token)
            break
        if token.startswith("-") and token != "-" and len(token) > 1:
            _set(ns, command.flags, token, args, verb)
        else:
            positional.append(token)
    if ns.help:
        return ns
    if len(positional) < len(command.positionals):
        raise InvalidArgument(f"{verb}: missing {' and '.join(command.positionals)} argument")
    for name, value in zip(command.positionals, positional, strict=False):
        setattr(ns, name, value)
    extra = positional[len(command.positionals):]
    for name, default in command.optional:
        setattr(ns, name, extra.pop(0) if extra else default)
    if command.rest:
        if args and args[0] == "--":
            args.pop(0)
        setattr(ns, command.rest, extra + args)
    elif extra:
        raise InvalidArgument(f"{verb}: unexpected arguments {extra}")
    return ns


def usage() -> str:
    lines = ["usage: isobox-runtime [global flags] COMMAND [flags] [arguments]", "",
             "runc-compatible OCI runtime of isobox", "", "commands:"]
    lines += [f"  {name:<10} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "global flags: " + ", ".join(sorted({k for k in GLOBAL_FLAGS
                                                      if k.startswith("--")}))]
    return "\n".join(lines) + "\n"


def command_usage(verb: str) -> str:
    cmd = COMMANDS[verb]
    pos = " ".join(f"<{p}>" for p in cmd.positionals)
    opt = " ".join(f"[{n}]" for n, _ in cmd.optional)
    rest = f" [{cmd.rest}...]" if cmd.rest else ""
    flags = ", ".join(sorted(k for k in cmd.flags if k.startswith("--")))
    return (f"usage: isobox-runtime {verb} [flags] {pos} {opt}{rest}\n\n{cmd.summary}\n\n"
            f"flags: {flags}\n")
