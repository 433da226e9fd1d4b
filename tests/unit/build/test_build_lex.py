"""Docker's substitution and quoting rules (BuildKit's shell lexer)."""

from __future__ import annotations

import pytest

from isobox.build.lex import Lexer, split_raw_words
from isobox.errors import InvalidArgument

ENV = {"A": "a", "EMPTY": "", "SP": "x y"}


@pytest.mark.parametrize(("word", "expected"), [
    ("$A", "a"), ("${A}", "a"), ("pre${A}post", "preapost"),
    ("$UNSET", ""), ("${UNSET:-dflt}", "dflt"), ("${EMPTY:-dflt}", "dflt"),
    ("${EMPTY-dflt}", ""), ("${UNSET-dflt}", "dflt"), ("${A:-dflt}", "a"),
    ("${A:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""), ("${UNSET:-${A}}", "a"), ("${UNSET:-'lit $A'}", "lit $A"),
    ("\\$A", "$A"), ("'$A'", "$A"), ('"$A"', "a"), ('"\\$A"', "$A"), ('"a\\b"', "a\\b"),
    ('"say \\"hi\\""', 'say "hi"'), ("a\\ b", "a b"), ("$", "$"), ("a$", "a$"),
    ("$A$A", "aa"), ("${A}_x", "a_x"), ("$A_x", ""),
])
def test_word(word: str, expected: str) -> None:
    assert Lexer().word(word, ENV) == expected


def test_backtick_escape() -> None:
    lexer = Lexer("`")
    assert lexer.word("`$A", ENV) == "$A"
    assert lexer.word("c:\\dir", ENV) == "c:\\dir"


def test_words_split_unquoted_expansion() -> None:
    lexer = Lexer()
    assert lexer.words('one "two three" $SP', ENV) == ["one", "two three", "x", "y"]
    assert lexer.words('"$SP"', ENV) == ["x y"]


def test_errors() -> None:
    with pytest.raises(InvalidArgument, match="single-quote"):
        Lexer().word("'open", ENV)
    with pytest.raises(InvalidArgument, match="double-quote"):
        Lexer().word('"open', ENV)
    with pytest.raises(InvalidArgument, match="missing '}'"):
        Lexer().word("${A", ENV)
    with pytest.raises(InvalidArgument, match="EMPTY: must be set"):
        Lexer().word("${EMPTY:?must be set}", ENV)
    assert Lexer().word("${EMPTY?must be set}", ENV) == ""


def test_raw_words_keep_quotes() -> None:
    assert split_raw_words('a="x y" b=\'1 2\' c=\\ d') == ['a="x y"', "b='1 2'", "c=\\ d"]
