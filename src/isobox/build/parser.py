"""The Dockerfile parser, as BuildKit's ``frontend/dockerfile/parser`` reads
a file: parser directives (``# syntax=``, ``# escape=``, ``# check=``), comments,
line continuations (comment and empty lines inside one are dropped),
heredocs for RUN, COPY and ADD, flags (``--from=x``), the JSON (exec) and
shell forms. Pure: text in, instructions out; errors name the line.

Variable substitution is not done here: it depends on the build's state
(ENV, ARG) and happens when an instruction is run (see ``lex``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from isobox.build.lex import split_raw_words
from isobox.errors import InvalidArgument

__all__ = ["Dockerfile", "DockerfileError", "Heredoc", "Instruction", "parse",
           "parse_instruction_line"]

KNOWN = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
         "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
         "WORKDIR")
_HEREDOC_COMMANDS = ("RUN", "COPY", "ADD")
_JSON_COMMANDS = ("RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([a-zA-Z_][a-zA-Z0-9_]*)\2")
_FLAG = re.compile(r"--([a-zA-Z][a-zA-Z0-9-]*)(?:=(.*))?$", re.S)


class DockerfileError(InvalidArgument):
    """A Dockerfile that Docker would refuse; ``line`` is 1-based (0: none)."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.message = message
        self.line = line
        super().__init__(f"Dockerfile parse error on line {line}: {message}" if line
                         else f"Dockerfile parse error: {message}")


@dataclass(frozen=True)
class Heredoc:
    name: str          #: the delimiter word
    content: str       #: the lines, each ending with a newline
    expand: bool       #: an unquoted delimiter: variables are expanded
    chomp: bool        #: ``<<-``: leading tabs were stripped


@dataclass(frozen=True)
class Instruction:
    cmd: str                                  #: upper case: "RUN"
    rest: str                                 #: the text after flags, continuations joined
    line: int                                 #: first line, 1-based
    end_line: int
    flags: tuple[tuple[str, str | None], ...] = ()
    args: tuple[str, ...] = ()                #: JSON form: the list; else the raw words
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""                        #: "RUN echo hi", as Docker prints it

    def flag(self, name: str) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value if value is not None else "true"
        return None

    def flag_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.flags if key == name]


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> Dockerfile:
    """Parse a whole Dockerfile."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None or match[1].lower() not in _DIRECTIVES:
            break
        key = match[1].lower()
        if key in directives:
            raise DockerfileError(f"only one {key} parser directive can be used", i + 1)
        directives[key] = match[2]
        i += 1
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token '{escape}' does not match ` or \\",
                              1)
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    while i < len(lines):
        start = i
        first = lines[i].lstrip(" \t")
        i += 1
        if not first or first.startswith("#"):
            continue
        logical = first
        ended = continuation.search(logical) is None
        if not ended:
            logical = continuation.sub("", logical)
        while not ended and i < len(lines):
            raw = lines[i]
            i += 1
            stripped = raw.strip(" \t")
            if stripped.startswith("#") or not stripped:
                continue
            ended = continuation.search(raw) is None
            logical += raw if ended else continuation.sub("", raw)
        heredocs: list[Heredoc] = []
        cmd_word = logical.split(None, 1)[0].upper() if logical.strip() else ""
        if cmd_word in _HEREDOC_COMMANDS and "<<" in logical:
            for match in _HEREDOC.finditer(logical):
                body: list[str] = []
                chomp, quoted, name = match[1] == "-", bool(match[2]), match[3]
                while True:
                    if i >= len(lines):
                        raise DockerfileError(f"unterminated heredoc {name!r}", start + 1)
                    raw = lines[i]
                    i += 1
                    check = raw.lstrip("\t") if chomp else raw
                    if check == name:
                        break
                    body.append(check + "\n")
                heredocs.append(Heredoc(name, "".join(body), not quoted, chomp))
        out.append(parse_instruction_line(logical, start + 1, i, escape, tuple(heredocs)))
    if not out:
        raise DockerfileError("file with no instructions")
    return Dockerfile(tuple(out), escape, directives)


def parse_instruction_line(logical: str, line: int, end_line: int | None = None,
                           escape: str = "\\", heredocs: tuple[Heredoc, ...] = ()
                           ) -> Instruction:
    """One logical line (continuations joined) into an Instruction."""
    text = logical.strip()
    parts = text.split(None, 1)
    cmd = parts[0].upper()
    rest = parts[1].strip() if len(parts) > 1 else ""
    if cmd not in KNOWN:
        raise DockerfileError(f"unknown instruction: {parts[0]}", line)
    flags: list[tuple[str, str | None]] = []
    if cmd not in ("ONBUILD",):
        while rest.startswith("--"):
            word, _, remainder = _cut_word(rest)
            if word == "--":
                rest = remainder
                break
            match = _FLAG.match(word)
            if match is None:
                raise DockerfileError(f"invalid flag {word!r}", line)
            flags.append((match[1], match[2]))
            rest = remainder
    args: tuple[str, ...] = ()
    is_json = False
    if cmd in _JSON_COMMANDS and rest.startswith("["):
        listed = _json_list(rest)
        if listed is not None:
            args, is_json = tuple(listed), True
    if not is_json:
        if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "MAINTAINER", "WORKDIR", "USER",
                   "STOPSIGNAL") or cmd == "ONBUILD":
            args = (rest,) if rest else ()
        else:
            args = tuple(split_raw_words(rest, escape))
    original = " ".join([cmd, *(f"--{k}={v}" if v is not None else f"--{k}" for k, v in flags),
                         rest]).strip()
    inst = Instruction(cmd, rest, line, end_line if end_line is not None else line,
                       tuple(flags), args, is_json, heredocs, original)
    _check(inst)
    return inst


def _cut_word(text: str) -> tuple[str, str, str]:
    match = re.match(r"(\S+)\s*(.*)$", text, re.S)
    assert match is not None
    return match[1], " ", match[2]


def _json_list(rest: str) -> list[str] | None:
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


_ALLOWED_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "RUN": ("mount", "network", "security"),
    "COPY": ("from", "chown", "chmod", "link", "parents", "exclude"),
    "ADD": ("chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}


def _check(inst: Instruction) -> None:
    """Docker's per-instruction argument checks, at parse time."""
    allowed = _ALLOWED_FLAGS.get(inst.cmd, ())
    for name, _ in inst.flags:
        if name not in allowed:
            raise DockerfileError(f"unknown flag: --{name}", inst.line)
    n = len(inst.args)
    cmd = inst.cmd
    if cmd in ("ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "ONBUILD", "MAINTAINER",
               "WORKDIR", "USER", "STOPSIGNAL", "SHELL", "FROM") and n == 0:
        what = "one argument" if cmd in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER") \
            else "at least one argument"
        raise DockerfileError(f"{cmd} requires {what}", inst.line)
    if cmd == "RUN" and n == 0 and not inst.heredocs:
        raise DockerfileError("RUN requires at least one argument", inst.line)
    if cmd in ("COPY", "ADD") and n < 2:
        raise DockerfileError(f"{cmd} requires at least two arguments", inst.line)
    if cmd == "FROM" and n not in (1, 3):
        raise DockerfileError("FROM requires either one or three arguments", inst.line)
    if cmd == "FROM" and n == 3 and inst.args[1].upper() != "AS":
        raise DockerfileError("FROM requires either one or three arguments", inst.line)
    if cmd == "ENV" and n == 1 and "=" not in inst.args[0]:
        raise DockerfileError("ENV must have two arguments", inst.line)
    if cmd in ("ENV", "LABEL") and n and "=" in inst.args[0]:
        for word in inst.args:
            if "=" not in word:
                raise DockerfileError(f"Syntax error - can't find = in {word!r}. Must be of "
                                      "the form: name=value", inst.line)
            if word.startswith("="):
                raise DockerfileError(f"{cmd} names can not be blank", inst.line)
    if cmd == "SHELL" and not inst.json:
        raise DockerfileError("SHELL requires the arguments to be in JSON form", inst.line)
    if cmd == "ONBUILD":
        trigger = inst.rest.split(None, 1)[0].upper()
        if trigger in ("ONBUILD", "FROM", "MAINTAINER"):
            raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger", inst.line)
        parse_instruction_line(inst.rest, inst.line)
    if cmd == "HEALTHCHECK":
        word = inst.rest.split(None, 1)[0].upper() if inst.rest else ""
        if word not in ("CMD", "NONE"):
            raise DockerfileError("HEALTHCHECK requires CMD or NONE", inst.line)
        if word == "NONE" and (inst.rest.strip().upper() != "NONE" or inst.flags):
            raise DockerfileError("HEALTHCHECK NONE takes no arguments", inst.line)
