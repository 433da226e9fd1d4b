"""The subset of Go's text/template that ``docker --format`` users write.

Supported: text; ``{{.Field.Sub}}``, ``{{.}}``; pipelines with ``|``;
functions json, index, join, upper, lower, title, len, println, split,
truncate, pad; ``{{range .X}}...{{end}}``, ``{{if .X}}...{{else}}...{{end}}``,
``{{- ... -}}`` trimming; the ``table`` prefix is handled by the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from isobox.errors import InvalidArgument

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\||[^\s|]+')


def _field(value: Any, path: str) -> Any:
    if path == ".":
        return value
    for name in path.strip(".").split("."):
        if isinstance(value, Mapping):
            if name not in value:
                return None
            value = value[name]
        else:
            value = getattr(value, name, None)
    return value


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "index": lambda v, *keys: _index(v, keys),
    "join": lambda v, sep: sep.join(str(x) for x in v or ()),
    "upper": lambda v: str(v).upper(),
    "lower": lambda v: str(v).lower(),
    "title": lambda v: str(v).title(),
    "len": lambda v: len(v or ()),
    "println": lambda *v: " ".join(_text(x) for x in v) + "\n",
    "split": lambda v, sep: str(v).split(sep),
    "truncate": lambda v, n: str(v)[: int(n)],
    "pad": lambda v, left, right: " " * int(left) + str(v) + " " * int(right),
}


def _index(value: Any, keys: tuple[Any, ...]) -> Any:
    for key in keys:
        if value is None:
            return None
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _literal(token: str) -> Any:
    if token.startswith('"'):
        return json.loads(token)
    if token.startswith("`"):
        return token[1:-1]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token in ("true", "false"):
        return token == "true"
    return None


class _Node:
    pass


class _Text(_Node):
    def __init__(self, text: str) -> None:
        self.text = text


class _Expr(_Node):
    def __init__(self, source: str) -> None:
        self.commands: list[list[str]] = []
        current: list[str] = []
        for token in _TOKEN.findall(source):
            if token == "|":
                self.commands.append(current)
                current = []
            else:
                current.append(token)
        self.commands.append(current)
        if any(not c for c in self.commands):
            raise InvalidArgument(f"template: empty command in {{{{{source}}}}}")

    def eval(self, dot: Any) -> Any:
        result: Any = None
        for i, command in enumerate(self.commands):
            head, args = command[0], [self._arg(a, dot) for a in command[1:]]
            if i > 0:
                args.append(result)
            if head.startswith("."):
                result = _field(dot, head)
            elif head in FUNCS:
                try:
                    result = FUNCS[head](*args)
                except TypeError as exc:
                    raise InvalidArgument(f"template: wrong arguments for {head}: {exc}") from None
            elif (lit := _literal(head)) is not None:
                result = lit
            else:
                raise InvalidArgument(f'template: function "{head}" not defined')
        return result

    @staticmethod
    def _arg(token: str, dot: Any) -> Any:
        if token.startswith("."):
            return _field(dot, token)
        return _literal(token)


class _Block(_Node):
    def __init__(self, kind: str, expr: _Expr) -> None:
        self.kind = kind
        self.expr = expr
        self.body: list[_Node] = []
        self.orelse: list[_Node] = []


def _parse(source: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Block | None, list[_Node]]] = [(None, root)]
    pos = 0
    pending_trim = False
    for match in _ACTION.finditer(source):
        text = source[pos:match.start()]
        if pending_trim:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            stack[-1][1].append(_Text(text))
        pending_trim = bool(match.group(3))
        pos = match.end()
        body = match.group(2)
        word = body.split(None, 1)
        keyword = word[0] if word else ""
        if keyword in ("range", "if", "with"):
            block = _Block(keyword, _Expr(word[1] if len(word) > 1 else "."))
            stack[-1][1].append(block)
            stack.append((block, block.body))
        elif keyword == "else":
            current = stack[-1][0]
            if current is None:
                raise InvalidArgument("template: unexpected {{else}}")
            stack[-1] = (current, current.orelse)
        elif keyword == "end":
            if len(stack) == 1:
                raise InvalidArgument("template: unexpected {{end}}")
            stack.pop()
        elif body.startswith("/*"):
            continue
        else:
            stack[-1][1].append(_Expr(body))
    if len(stack) != 1:
        raise InvalidArgument("template: unexpected EOF (missing {{end}})")
    tail = source[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if tail:
        root.append(_Text(tail))
    return root


def _truthy(value: Any) -> bool:
    return bool(value)


def _render(nodes: list[_Node], dot: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Expr):
            out.append(_text(node.eval(dot)))
        elif isinstance(node, _Block):
            value = node.expr.eval(dot)
            if node.kind == "range":
                items = list(value.values() if isinstance(value, Mapping) else value or ())
                if items:
                    for item in items:
                        _render(node.body, item, out)
                else:
                    _render(node.orelse, dot, out)
            elif node.kind == "with":
                _render(node.body if _truthy(value) else node.orelse,
                        value if _truthy(value) else dot, out)
            else:
                _render(node.body if _truthy(value) else node.orelse, dot, out)


class Template:
    def __init__(self, source: str) -> None:
        self.source = source.replace("\\t", "\t").replace("\\n", "\n")
        self.nodes = _parse(self.source)

    def render(self, dot: Any) -> str:
        out: list[str] = []
        _render(self.nodes, dot, out)
        return "".join(out)


def is_table(fmt: str) -> bool:
    return fmt.startswith("table")


def table_body(fmt: str) -> str:
    return fmt[len("table"):].lstrip() if is_table(fmt) else fmt
