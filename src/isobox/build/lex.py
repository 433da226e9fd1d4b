"""Docker's word rules for Dockerfiles (BuildKit's ``shell/lex.go``): variable
substitution (``$V``, ``${V}``, ``${V:-w}``, ``${V-w}``, ``${V:+w}``,
``${V+w}``, ``${V:?msg}``, ``${V?msg}``), quotes (removed, single quotes
literal, double quotes expanding) and the escape character, plus the raw
word splitting of the parser (quotes kept). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping

from isobox.errors import InvalidArgument

__all__ = ["Lexer", "split_raw_words"]


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch


def _is_name_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


class Lexer:
    """Expands words with Docker's rules; ``escape`` is the Dockerfile's
    escape character (``\\`` or a backtick)."""

    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape

    def word(self, text: str, env: Mapping[str, str]) -> str:
        """One word: quotes removed, variables substituted (ProcessWord)."""
        words = self._process(text, env, split=False)
        return words[0] if words else ""

    def words(self, text: str, env: Mapping[str, str]) -> list[str]:
        """Words split on unquoted whitespace, then expanded (ProcessWords)."""
        return self._process(text, env, split=True)

    # -- the scanner -----------------------------------------------------------

    def _process(self, text: str, env: Mapping[str, str], split: bool) -> list[str]:
        sc = _Scanner(text)
        words: list[str] = []
        current: list[str] = []
        in_word = False
        while True:
            ch = sc.peek()
            if ch == "":
                break
            if split and ch in " \t\r\n":
                sc.next()
                if in_word:
                    words.append("".join(current))
                    current, in_word = [], False
                continue
            in_word = True
            if ch == "'":
                sc.next()
                current.append(self._single_quoted(sc))
            elif ch == '"':
                sc.next()
                current.append(self._double_quoted(sc, env))
            elif ch == "$":
                sc.next()
                value = self._dollar(sc, env)
                if split and value:
                    # an unquoted expansion is split into words, as Docker does
                    pieces = value.split()
                    if not pieces:
                        continue
                    if value[0].isspace() and current:
                        words.append("".join(current))
                        current = []
                    current.append(pieces[0])
                    for piece in pieces[1:]:
                        words.append("".join(current))
                        current = [piece]
                    if value[-1].isspace():
                        words.append("".join(current))
                        current, in_word = [], False
                else:
                    current.append(value)
            elif ch == self.escape:
                sc.next()
                nxt = sc.next()
                if nxt == "":
                    break  # a trailing escape is dropped, as BuildKit does
                current.append(nxt)
            else:
                current.append(sc.next())
        if in_word:
            words.append("".join(current))
        return words if split else ["".join(current)] if (in_word or current) else [""]

    def _single_quoted(self, sc: _Scanner) -> str:
        out: list[str] = []
        while True:
            ch = sc.next()
            if ch == "":
                raise InvalidArgument("unexpected end of statement while looking for "
                                      "matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double_quoted(self, sc: _Scanner, env: Mapping[str, str]) -> str:
        out: list[str] = []
        while True:
            ch = sc.next()
            if ch == "":
                raise InvalidArgument("unexpected end of statement while looking for "
                                      "matching double-quote")
            if ch == '"':
                return "".join(out)
            if ch == "$":
                out.append(self._dollar(sc, env))
                continue
            if ch == self.escape:
                nxt = sc.peek()
                if nxt == "":
                    raise InvalidArgument("unexpected end of statement while looking for "
                                          "matching double-quote")
                if nxt in ('"', "$", self.escape):
                    out.append(sc.next())
                    continue
            out.append(ch)

    def _dollar(self, sc: _Scanner, env: Mapping[str, str]) -> str:
        ch = sc.peek()
        if ch != "{":
            name = self._name(sc)
            if not name:
                return "$"
            return env.get(name, "")
        sc.next()
        name = self._name(sc)
        if not name:
            raise InvalidArgument(f"bad substitution: missing variable name at "
                                  f"{sc.text[sc.pos:]!r}")
        ch = sc.next()
        if ch == "}":
            return env.get(name, "")
        if ch == "":
            raise InvalidArgument("syntax error: missing '}'")
        colon = ch == ":"
        if colon:
            ch = sc.next()
        if ch not in ("-", "+", "?"):
            raise InvalidArgument(f"unsupported modifier ({ch or 'end of text'}) in "
                                  f"substitution of ${{{name}...}}")
        word = self._until_brace(sc, env)
        value = env.get(name)
        is_set = value is not None
        nonempty = bool(value)
        if ch == "-":
            use_word = not nonempty if colon else not is_set
            return word if use_word else (value or "")
        if ch == "+":
            use_word = nonempty if colon else is_set
            return word if use_word else ""
        failed = not nonempty if colon else not is_set
        if failed:
            raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
        return value or ""

    def _name(self, sc: _Scanner) -> str:
        out: list[str] = []
        first = sc.peek()
        if first.isascii() and first.isdigit():
            return sc.next()  # $1 ... positional: one digit, as a shell
        while _is_name_char(sc.peek()):
            out.append(sc.next())
        return "".join(out)

    def _until_brace(self, sc: _Scanner, env: Mapping[str, str]) -> str:
        out: list[str] = []
        while True:
            ch = sc.peek()
            if ch == "":
                raise InvalidArgument("syntax error: missing '}'")
            if ch == "}":
                sc.next()
                return "".join(out)
            if ch == "'":
                sc.next()
                out.append(self._single_quoted(sc))
            elif ch == '"':
                sc.next()
                out.append(self._double_quoted(sc, env))
            elif ch == "$":
                sc.next()
                out.append(self._dollar(sc, env))
            elif ch == self.escape:
                sc.next()
                out.append(sc.next())
            else:
                out.append(sc.next())


def split_raw_words(text: str, escape: str = "\\") -> list[str]:
    """The parser's word split (BuildKit's ``parseWords``): on unquoted
    whitespace, quotes and escapes kept for the later expansion."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and i + 1 < len(text):
            current.append(ch + text[i + 1])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
            current.append(ch)
        elif ch in ("'", '"'):
            quote = ch
            current.append(ch)
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
        i += 1
    if current:
        words.append("".join(current))
    return words
