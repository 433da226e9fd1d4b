"""``run``/``create`` flags, Docker's, and their conversion into the Engine
API's create body, as the docker CLI does it.

Use::

    @click.command("run", cls=RunCommand)
    @run_options
    @click.argument("image")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    def run(image, command, **options):
        request = to_create_request(image, command, options)
        flags = client_options(options)

:class:`RunCommand` gives ``-h`` to ``--hostname`` (help is ``--help``
only, as in docker), stops option parsing at the image, and accepts
Docker's ``--flag=true|false`` for boolean flags. The click options take
raw strings; :func:`to_create_request` converts them and raises
:class:`FlagError` (a ``click.BadParameter``, exit status 125) worded as
docker's: ``invalid argument "x" for "-m, --memory" flag: invalid size: 'x'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from isobox.cli import runopts_parse as p
from isobox.cli.runopts_convert import (
    ClientOptions,
    FlagError,
    client_options,
    to_create_request,
)

__all__ = ["RUN_CONTEXT_SETTINGS", "ClientOptions", "FlagError", "RunCommand",
           "client_options", "create_options", "run_options", "to_create_request"]

F = TypeVar("F", bound=Callable[..., Any])

RUN_CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["--help"],
                                        "allow_interspersed_args": False}


# (declarations, click keyword arguments, help). Every value option is a raw
# string (or a tuple of them, for repeatable ones); flags are booleans.
_M: dict[str, Any] = {"multiple": True}
_FLAG: dict[str, Any] = {"is_flag": True, "default": False}
_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any], str]] = [
    (("-d", "--detach"), _FLAG, "Run in the background and print the container ID"),
    (("-a", "--attach"), _M, "Attach to STDIN, STDOUT or STDERR"),
    (("-i", "--interactive"), _FLAG, "Keep STDIN open even if not attached"),
    (("-t", "--tty"), _FLAG, "Allocate a pseudo-TTY"),
    (("--rm",), _FLAG, "Remove the container when it exits"),
    (("--name",), {}, "Assign a name to the container"),
    (("-e", "--env"), _M, "Set environment variables"),
    (("--env-file",), _M, "Read in a file of environment variables"),
    (("--entrypoint",), {}, "Overwrite the default ENTRYPOINT of the image"),
    (("-w", "--workdir"), {}, "Working directory inside the container"),
    (("-u", "--user"), {}, "Username or UID (format: <name|uid>[:<group|gid>])"),
    (("--group-add",), _M, "Add additional groups to join"),
    (("-h", "--hostname"), {}, "Container host name"),
    (("--domainname",), {}, "Container NIS domain name"),
    (("--add-host",), _M, "Add a custom host-to-IP mapping (host:ip)"),
    (("--dns",), _M, "Set custom DNS servers"),
    (("--dns-search",), _M, "Set custom DNS search domains"),
    (("--dns-option", "--dns-opt"), _M, "Set DNS options"),
    (("-v", "--volume"), _M, "Bind mount a volume"),
    (("--mount",), _M, "Attach a filesystem mount to the container"),
    (("--tmpfs",), _M, "Mount a tmpfs directory"),
    (("--volumes-from",), _M, "Mount volumes from the specified container(s)"),
    (("--volume-driver",), {}, "Optional volume driver for the container"),
    (("--read-only",), _FLAG, "Mount the container's root filesystem as read only"),
    (("--cap-add",), _M, "Add Linux capabilities"),
    (("--cap-drop",), _M, "Drop Linux capabilities"),
    (("--privileged",), _FLAG, "Give extended privileges to this container"),
    (("--security-opt",), _M, "Security options"),
    (("--device",), _M, "Add a host device to the container"),
    (("--device-cgroup-rule",), _M, "Add a rule to the cgroup allowed devices list"),
    (("--ulimit",), _M, "Ulimit options"),
    (("-m", "--memory"), {}, "Memory limit"),
    (("--memory-swap",), {}, "Swap limit equal to memory plus swap: '-1' for unlimited"),
    (("--memory-reservation",), {}, "Memory soft limit"),
    (("--memory-swappiness",), {}, "Tune container memory swappiness (0 to 100)"),
    (("--oom-kill-disable",), _FLAG, "Disable OOM Killer"),
    (("--oom-score-adj",), {}, "Tune host's OOM preferences (-1000 to 1000)"),
    (("--cpus",), {}, "Number of CPUs"),
    (("-c", "--cpu-shares"), {}, "CPU shares (relative weight)"),
    (("--cpu-period",), {}, "Limit CPU CFS (Completely Fair Scheduler) period"),
    (("--cpu-quota",), {}, "Limit CPU CFS (Completely Fair Scheduler) quota"),
    (("--cpu-rt-period",), {}, "Limit CPU real-time period in microseconds"),
    (("--cpu-rt-runtime",), {}, "Limit CPU real-time runtime in microseconds"),
    (("--cpuset-cpus",), {}, "CPUs in which to allow execution (0-3, 0,1)"),
    (("--cpuset-mems",), {}, "MEMs in which to allow execution (0-3, 0,1)"),
    (("--blkio-weight",), {}, "Block IO (relative weight), between 10 and 1000"),
    (("--pids-limit",), {}, "Tune container pids limit (set -1 for unlimited)"),
    (("--shm-size",), {}, "Size of /dev/shm"),
    (("--init",), _FLAG, "Run an init inside the container that forwards signals and "
                         "reaps processes"),
    (("--restart",), {"default": "no"}, "Restart policy to apply when a container exits"),
    (("--stop-signal",), {}, "Signal to stop the container"),
    (("--stop-timeout",), {}, "Timeout (in seconds) to stop a container"),
    (("--health-cmd",), {}, "Command to run to check health"),
    (("--health-interval",), {}, "Time between running the check (ms|s|m|h)"),
    (("--health-timeout",), {}, "Maximum time to allow one check to run (ms|s|m|h)"),
    (("--health-retries",), {}, "Consecutive failures needed to report unhealthy"),
    (("--health-start-period",), {}, "Start period for the container to initialize "
                                     "before starting health-retries countdown (ms|s|m|h)"),
    (("--health-start-interval",), {}, "Time between running the check during the start "
                                       "period (ms|s|m|h)"),
    (("--no-healthcheck",), _FLAG, "Disable any container-specified HEALTHCHECK"),
    (("-l", "--label"), _M, "Set meta data on a container"),
    (("--label-file",), _M, "Read in a line delimited file of labels"),
    (("--log-driver",), {}, "Logging driver for the container"),
    (("--log-opt",), _M, "Log driver options"),
    (("--sig-proxy/--no-sig-proxy",), {"default": True},
     "Proxy received signals to the process"),
    (("--network", "--net"), _M, "Connect a container to a network"),
    (("--network-alias", "--net-alias"), _M, "Add network-scoped alias for the container"),
    (("--ip",), {}, "IPv4 address (e.g., 172.30.100.104)"),
    (("--ip6",), {}, "IPv6 address (e.g., 2001:db8::33)"),
    (("--mac-address",), {}, "Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    (("--link",), _M, "Add link to another container"),
    (("-p", "--publish"), _M, "Publish a container's port(s) to the host"),
    (("-P", "--publish-all"), _FLAG, "Publish all exposed ports to random ports"),
    (("--expose",), _M, "Expose a port or a range of ports"),
    (("--runtime",), {}, "Runtime to use for this container"),
    (("--isolation",), {}, "Container isolation technology: process, vm (hyperv) or default"),
    (("--platform",), {}, "Set platform if server is multi-platform capable"),
    (("--pull",), {"default": "missing"}, "Pull image before running (always, missing, never)"),
    (("-q", "--quiet"), _FLAG, "Suppress the pull output"),
    (("--detach-keys",), {}, "Override the key sequence for detaching a container"),
    (("--cidfile",), {}, "Write the container ID to the file"),
    (("--ipc",), {}, "IPC mode to use"),
    (("--pid",), {}, "PID namespace to use"),
    (("--uts",), {}, "UTS namespace to use"),
    (("--userns",), {}, "User namespace to use"),
    (("--cgroupns",), {}, "Cgroup namespace to use (host|private)"),
    (("--cgroup-parent",), {}, "Optional parent cgroup for the container"),
    (("--sysctl",), _M, "Sysctl options"),
    (("--storage-opt",), _M, "Storage driver options for the container"),
]
_RUN_ONLY = frozenset({"--detach", "--sig-proxy/--no-sig-proxy", "--detach-keys"})


def _decorate(f: F, *, run: bool) -> F:
    for decls, kwargs, help_text in reversed(_OPTIONS):
        if not run and decls[-1] in _RUN_ONLY:
            continue
        f = click.option(*decls, help=help_text, **kwargs)(f)
    if isinstance(f, click.Command):  # applied above @click.command: fix -h
        f.context_settings = {**RUN_CONTEXT_SETTINGS, **f.context_settings}
    return f


def run_options(f: F) -> F:
    """Every ``docker run`` flag, as click options (values stay raw strings)."""
    return _decorate(f, run=True)


def create_options(f: F) -> F:
    """``docker create``'s flags: ``run``'s without -d, --sig-proxy, --detach-keys."""
    return _decorate(f, run=False)


class RunCommand(click.Command):
    """A command taking Docker's run flags (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {**RUN_CONTEXT_SETTINGS,
                                      **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalize_bool_flags(self, args))


def normalize_bool_flags(command: click.Command, args: Sequence[str]) -> list[str]:
    """Rewrite ``--rm=false``/``--sig-proxy=false`` (pflag's boolean syntax)
    into what click parses, up to the first positional argument."""
    flags: dict[str, str | None] = {}
    takes_value: set[str] = set()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if param.is_flag:
            off = param.secondary_opts[0] if param.secondary_opts else None
            for opt in param.opts:
                flags[opt] = off
        else:
            takes_value.update(param.opts)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            out += [arg, *args[i:]]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if eq and name in flags:
                try:
                    on = p.parse_bool(value)
                except ValueError as exc:
                    raise FlagError(f"invalid argument \"{value}\" for \"{name}\" flag: "
                                    f"{exc}") from None
                if on:
                    out.append(name)
                elif flags[name] is not None:
                    out.append(str(flags[name]))
                continue
            out.append(arg)
            if not eq and name in takes_value and i < len(args):
                out.append(args[i])
                i += 1
            continue
        out.append(arg)
        for j, ch in enumerate(arg[1:], start=1):
            if "-" + ch in takes_value:
                if j == len(arg) - 1 and i < len(args):
                    out.append(args[i])
                    i += 1
                break
    return out
