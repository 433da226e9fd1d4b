"""The Dockerfile instructions that only change the image config (ENV,
LABEL, CMD, ENTRYPOINT, EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL,
HEALTHCHECK, SHELL, ONBUILD, MAINTAINER), with Docker's substitution rules:
variables are expanded in ENV, LABEL, EXPOSE, VOLUME, USER, WORKDIR and
STOPSIGNAL, not in CMD, ENTRYPOINT, SHELL, HEALTHCHECK or ONBUILD. Pure."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

import msgspec

from isobox.build.lex import Lexer
from isobox.build.parser import DockerfileError, Instruction
from isobox.errors import InvalidArgument
from isobox.oci import image_spec as spec

__all__ = ["DEFAULT_SHELL", "apply_config", "command_argv", "env_dict", "parse_duration"]

DEFAULT_SHELL = ("/bin/sh", "-c")
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", re.I)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def env_dict(config: spec.ContainerConfig) -> dict[str, str]:
    pairs = (item.partition("=") for item in config.env or [])
    return {key: value for key, _, value in pairs}


def command_argv(inst: Instruction, config: spec.ContainerConfig) -> list[str]:
    """The exec form as given, or the shell form behind the config's SHELL."""
    if inst.json:
        return list(inst.args)
    return [*(config.shell or DEFAULT_SHELL), inst.rest]


def parse_duration(text: str, line: int) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if pos != len(text) or not text:
        raise DockerfileError(f"time: invalid duration {text!r}", line)
    return int(total)


def apply_config(inst: Instruction, config: spec.ContainerConfig, lexer: Lexer,
                 scope: Mapping[str, str], *, cmd_set: bool) -> spec.ContainerConfig:
    """``config`` after the metadata instruction ``inst``; ``scope`` holds the
    variables substitution sees (ARGs under ENV); ``cmd_set``: this stage set
    CMD already (a new ENTRYPOINT drops only an inherited CMD)."""
    line = inst.line
    cmd = inst.cmd

    def replace(**fields: object) -> spec.ContainerConfig:
        return msgspec.structs.replace(config, **fields)

    def expand(word: str) -> str:
        try:
            return lexer.word(word, scope)
        except DockerfileError:
            raise
        except InvalidArgument as exc:
            raise DockerfileError(str(exc), line) from None

    if cmd in ("ENV", "LABEL"):
        pairs = _name_values(inst, expand)
        if cmd == "ENV":
            env = env_dict(config)
            for key, value in pairs:
                env.pop(key, None)
                env[key] = value
            return replace(env=[f"{k}={v}" for k, v in env.items()])
        labels = dict(config.labels or {})
        labels.update(pairs)
        return replace(labels=labels)
    if cmd == "CMD":
        return replace(cmd=command_argv(inst, config) if inst.args else None)
    if cmd == "ENTRYPOINT":
        entry = command_argv(inst, config) if inst.args and (inst.json or inst.rest) else None
        return replace(entrypoint=entry or None, cmd=config.cmd if cmd_set else None)
    if cmd == "EXPOSE":
        ports = dict(config.exposed_ports or {})
        for raw in inst.args:
            word = expand(raw)
            match = _PORT.fullmatch(word)
            if match is None:
                raise DockerfileError(f"invalid containerPort: {word}", line)
            first, last = int(match[1]), int(match[2] or match[1])
            if not 0 < first <= last <= 65535:
                raise DockerfileError(f"invalid port range: {word}", line)
            proto = (match[3] or "tcp").lower()
            for port in range(first, last + 1):
                ports[f"{port}/{proto}"] = {}
        return replace(exposed_ports=ports)
    if cmd == "VOLUME":
        volumes = dict(config.volumes or {})
        for raw in inst.args:
            path = expand(raw) if not inst.json else lexer.word(raw, scope)
            if not path.strip():
                raise DockerfileError("VOLUME specified can not be an empty string", line)
            volumes[path] = {}
        return replace(volumes=volumes)
    if cmd == "USER":
        return replace(user=expand(inst.rest))
    if cmd == "WORKDIR":
        path = expand(inst.rest)
        if not path.startswith("/"):
            path = posixpath.join(config.working_dir or "/", path)
        return replace(working_dir=posixpath.normpath(path).replace("//", "/"))
    if cmd == "STOPSIGNAL":
        return replace(stop_signal=expand(inst.rest))
    if cmd == "SHELL":
        if not inst.args:
            raise DockerfileError("SHELL requires at least one argument", line)
        return replace(shell=list(inst.args))
    if cmd == "ONBUILD":
        return replace(on_build=[*(config.on_build or []), inst.rest])
    if cmd == "HEALTHCHECK":
        return replace(healthcheck=_healthcheck(inst))
    if cmd == "MAINTAINER":
        return config
    raise DockerfileError(f"{cmd} does not change the config", line)


def _name_values(inst: Instruction, expand: object) -> list[tuple[str, str]]:
    assert callable(expand)
    args = list(inst.args)
    if "=" not in args[0]:  # legacy: NAME VALUE... (the rest of the line)
        name = args[0]
        value = inst.rest[len(name):].strip()
        if not value:
            raise DockerfileError(f"{inst.cmd} must have two arguments", inst.line)
        return [(expand(name), expand(value))]
    pairs = []
    for word in args:
        name, _, value = word.partition("=")
        pairs.append((expand(name), expand(value)))
    return pairs


def _healthcheck(inst: Instruction) -> spec.HealthConfig:
    word, _, rest = inst.rest.partition(" ")
    if word.upper() == "NONE":
        return spec.HealthConfig(test=["NONE"])
    rest = rest.strip()
    sub = _json(rest)
    test = ["CMD", *sub] if sub is not None else ["CMD-SHELL", rest]
    fields: dict[str, int] = {}
    for name, key in (("interval", "interval"), ("timeout", "timeout"),
                      ("start-period", "start_period"), ("start-interval", "start_interval")):
        value = inst.flag(name)
        if value:
            fields[key] = parse_duration(value, inst.line)
    retries = inst.flag("retries")
    if retries:
        try:
            fields["retries"] = int(retries)
        except ValueError:
            raise DockerfileError(f"invalid --retries {retries!r}", inst.line) from None
    return spec.HealthConfig(test=test, **fields)  # type: ignore[arg-type]


def _json(text: str) -> list[str] | None:
    import json

    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None
