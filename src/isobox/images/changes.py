"""``--change`` for ``import`` and ``commit``: Dockerfile instructions that
edit an image config, as Docker applies them.

Supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER,
VOLUME, WORKDIR. CMD and ENTRYPOINT take the JSON (exec) form or the shell
form (``/bin/sh -c``, or the config's SHELL); ENV and LABEL take
``k=v k2="v 2"`` or the legacy ``k v``. Environment variables are expanded
(``$V``, ``${V}``, ``${V:-word}``, ``${V:+word}``) where Docker expands them:
not in CMD, ENTRYPOINT or ONBUILD.
"""

from __future__ import annotations

import json
import posixpath
import re
import signal
from collections.abc import Sequence

import msgspec

from isobox.errors import InvalidArgument
from isobox.oci.image_spec import ContainerConfig

__all__ = ["SUPPORTED", "apply_changes"]

SUPPORTED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL",
             "USER", "VOLUME", "WORKDIR")
DEFAULT_SHELL = ("/bin/sh", "-c")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])(.*))?", re.S)
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", re.I)
_SIGNAL = re.compile(r"(?:SIG)?(RTMIN|RTMAX)([+-]\d+)?")


def apply_changes(config: ContainerConfig | None, changes: Sequence[str]) -> ContainerConfig:
    """``config`` with each change applied in order; a change Docker would
    refuse is an InvalidArgument naming it."""
    state = _State(config or ContainerConfig())
    for change in changes:
        text = change.strip()
        if not text:
            continue
        instruction, _, rest = text.partition(" ")
        if "\t" in instruction:
            instruction, _, more = instruction.partition("\t")
            rest = f"{more} {rest}"
        instruction, rest = instruction.upper(), rest.strip()
        if instruction not in SUPPORTED:
            raise InvalidArgument(f"{instruction} is not a valid change command "
                                  f"(valid: {', '.join(SUPPORTED)})")
        try:
            getattr(state, instruction.lower())(rest)
        except InvalidArgument as exc:
            raise InvalidArgument(f"--change {text!r}: {exc}") from None
    return state.config


class _State:
    def __init__(self, config: ContainerConfig) -> None:
        self.config = config
        self.cmd_set = False

    def _set(self, **fields: object) -> None:
        self.config = msgspec.structs.replace(self.config, **fields)

    @property
    def variables(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.config.env or [])
        return {key: value for key, _, value in pairs}

    def _command(self, rest: str) -> list[str]:
        exec_form = _json_list(rest)
        if exec_form is not None:
            return exec_form
        if not rest:
            raise InvalidArgument("missing command")
        return [*(self.config.shell or DEFAULT_SHELL), rest]

    def cmd(self, rest: str) -> None:
        self._set(cmd=self._command(rest) or None)
        self.cmd_set = True

    def entrypoint(self, rest: str) -> None:
        self._set(entrypoint=self._command(rest) or None)
        if not self.cmd_set:  # Docker: a new ENTRYPOINT drops an inherited CMD
            self._set(cmd=None)

    def env(self, rest: str) -> None:
        env = self.variables
        for key, value in _name_values(rest, env, "ENV"):
            env[key] = value
        self._set(env=[f"{k}={v}" for k, v in env.items()])

    def label(self, rest: str) -> None:
        labels = dict(self.config.labels or {})
        labels.update(_name_values(rest, self.variables, "LABEL"))
        self._set(labels=labels)

    def expose(self, rest: str) -> None:
        ports = dict(self.config.exposed_ports or {})
        words = _lex(rest, self.variables)
        if not words:
            raise InvalidArgument("EXPOSE requires at least one argument")
        for word in words:
            match = _PORT.fullmatch(word)
            if match is None:
                raise InvalidArgument(f"invalid port {word!r}: want PORT[-END][/PROTO]")
            first, last = int(match[1]), int(match[2] or match[1])
            proto = (match[3] or "tcp").lower()
            if not 0 < first <= last <= 65535:
                raise InvalidArgument(f"invalid port range {word!r}")
            for port in range(first, last + 1):
                ports[f"{port}/{proto}"] = {}
        self._set(exposed_ports=ports)

    def volume(self, rest: str) -> None:
        listed = _json_list(rest)
        env = self.variables
        paths = ([w for item in listed for w in _lex(item, env, split=False)]
                 if listed is not None else _lex(rest, env))
        if not paths:
            raise InvalidArgument("VOLUME requires at least one argument")
        volumes = dict(self.config.volumes or {})
        for path in paths:
            if not path.strip():
                raise InvalidArgument("VOLUME specified can not be an empty string")
            volumes[path] = {}
        self._set(volumes=volumes)

    def workdir(self, rest: str) -> None:
        words = _lex(rest, self.variables, split=False)
        if not words or not words[0]:
            raise InvalidArgument("WORKDIR requires exactly one argument")
        path = words[0]
        if not path.startswith("/"):
            path = posixpath.join("/", self.config.working_dir or "/", path)
        self._set(working_dir=posixpath.normpath(path).replace("//", "/"))

    def user(self, rest: str) -> None:
        words = _lex(rest, self.variables)
        if len(words) != 1:
            raise InvalidArgument("USER requires exactly one argument")
        self._set(user=words[0])

    def stopsignal(self, rest: str) -> None:
        words = _lex(rest, self.variables)
        if len(words) != 1:
            raise InvalidArgument("STOPSIGNAL requires exactly one argument")
        _check_signal(words[0])
        self._set(stop_signal=words[0])

    def onbuild(self, rest: str) -> None:
        trigger = rest.split(None, 1)[0].upper() if rest else ""
        if not trigger:
            raise InvalidArgument("ONBUILD requires at least one argument")
        if trigger in ("ONBUILD", "FROM", "MAINTAINER"):
            raise InvalidArgument(f"{trigger} isn't allowed as an ONBUILD trigger")
        self._set(on_build=[*(self.config.on_build or []), rest])



def _json_list(rest: str) -> list[str] | None:
    """The exec (JSON) form, or None for the shell form (Docker falls back to
    the shell form when the text is not a JSON list of strings)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _name_values(rest: str, env: dict[str, str], what: str) -> list[tuple[str, str]]:
    first = rest.split(None, 1)[0] if rest.strip() else ""
    if not first:
        raise InvalidArgument(f"{what} requires at least one argument")
    if "=" not in first:  # legacy form: NAME VALUE (the rest of the line)
        name, _, value = rest.partition(" ")
        if "\t" in name:
            name, _, more = name.partition("\t")
            value = f"{more} {value}"
        if not value.strip():
            raise InvalidArgument(f"{what} must have two arguments")
        return [(name, "".join(_lex(value.strip(), env, split=False)))]
    pairs = []
    for word in _lex(rest, env):
        name, eq, value = word.partition("=")
        if not eq:
            raise InvalidArgument(f"Syntax error - can't find = in {word!r}. "
                                  "Must be of the form: name=value")
        if not name:
            raise InvalidArgument(f"{what} names can not be blank")
        pairs.append((name, value))
    return pairs


def _lex(text: str, env: dict[str, str], *, split: bool = True) -> list[str]:
    """Words of ``text`` with quotes removed, backslash escapes applied and
    variables expanded (not inside single quotes)."""
    words: list[str] = []
    cur: list[str] = []
    started = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if split and c in " \t":
            if started:
                words.append("".join(cur))
                cur, started = [], False
            i += 1
            continue
        started = True
        if c == "\\":
            cur.append(text[i + 1] if i + 1 < n else c)
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise InvalidArgument("unexpected end of statement while looking for "
                                      "matching single-quote")
            cur.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i = _double_quoted(text, i + 1, env, cur)
        elif c == "$":
            value, i = _dollar(text, i, env)
            cur.append(value)
        else:
            cur.append(c)
            i += 1
    if started:
        words.append("".join(cur))
    return words


def _double_quoted(text: str, i: int, env: dict[str, str], cur: list[str]) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n and text[i + 1] in '"$\\':
            cur.append(text[i + 1])
            i += 2
        elif c == "$":
            value, i = _dollar(text, i, env)
            cur.append(value)
        else:
            cur.append(c)
            i += 1
    raise InvalidArgument("unexpected end of statement while looking for matching "
                          "double-quote")


def _dollar(text: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    """Expand the variable at ``text[i] == '$'``; returns (value, next index)."""
    if text.startswith("${", i):
        end = text.find("}", i + 2)
        match = _BRACED.fullmatch(text, i + 2, end) if end >= 0 else None
        if match is None:
            raise InvalidArgument(f"bad substitution in {text!r}")
        name, op, word = match[1], match[2], match[3] or ""
        value = env.get(name, "")
        if op == ":-" and not value:
            value = "".join(_lex(word, env, split=False))
        elif op == ":+":
            value = "".join(_lex(word, env, split=False)) if value else ""
        return value, end + 1
    match = _NAME.match(text, i + 1)
    if match is None:
        return "$", i + 1
    return env.get(match[0], ""), match.end()


def _check_signal(text: str) -> None:
    if text.isdigit():
        if not 0 < int(text) <= 64:
            raise InvalidArgument(f"invalid signal: {text}")
        return
    name = text.upper()
    if _SIGNAL.fullmatch(name):
        return
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise InvalidArgument(f"invalid signal: {text}")
