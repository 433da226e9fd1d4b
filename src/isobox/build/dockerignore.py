""".dockerignore with Docker's rules (moby/patternmatcher): one pattern a line,
``#`` comments, patterns cleaned (``/a/../b`` is ``b``; a leading ``/`` is
dropped), Go's ``filepath.Match`` syntax plus ``**`` (any number of
directories), ``!`` re-includes, the last matching line wins, and a pattern
that matches a directory matches everything below it. Pure."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from isobox.errors import InvalidArgument

__all__ = ["Pattern", "PatternMatcher", "parse_dockerignore"]


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool                 #: a "!" line: matches re-include
    regex: re.Pattern[str]


def _translate(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":  # "**/": zero or more directories
                    i += 1
                    out.append("(.*/)?")
                elif i >= n:
                    out.append(".*")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1:j]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.S)


def _clean(text: str) -> str:
    cleaned = posixpath.normpath(text)
    if cleaned.startswith("/"):
        cleaned = cleaned.lstrip("/") or "."
    return cleaned


def parse_dockerignore(text: str) -> list[Pattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
            if not line:
                raise InvalidArgument('illegal exclusion pattern: "!"')
        line = _clean(line)
        patterns.append(Pattern(line, exclusion, _translate(line)))
    return patterns


class PatternMatcher:
    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = list(patterns)
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """Is the context path (relative, "/"-separated) left out?"""
        path = _clean(path)
        parents = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # cannot change the outcome
            hit = bool(pattern.regex.match(path))
            if not hit:
                for k in range(1, len(parents) + 1):
                    if pattern.regex.match("/".join(parents[:k])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched
