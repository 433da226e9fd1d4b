"""Container names and ids, by Docker's rules."""

from __future__ import annotations

import random
import re

import pytest

from isobox.engine import naming
from isobox.errors import InvalidArgument


@pytest.mark.parametrize(("name", "bare"), [
    ("web", "web"), ("/web", "web"), ("a1", "a1"), ("My_app.v2-x", "My_app.v2-x"),
    ("0xdead", "0xdead"),
])
def test_valid_names(name: str, bare: str) -> None:
    assert naming.validate_name(name) == bare


@pytest.mark.parametrize("name", ["", "/", "a", "_web", "-web", ".web", "web app", "we/b",
                                  "//web", "wéb", "web!"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument,
                       match=r"^Invalid container name \(.*\), only \[a-zA-Z0-9\]"
                             r"\[a-zA-Z0-9_\.-\] are allowed$"):
        naming.validate_name(name)


def test_word_lists() -> None:
    for words in (naming.ADJECTIVES, naming.SURNAMES):
        assert 55 <= len(words) <= 70
        assert len(set(words)) == len(words)
        assert all(re.fullmatch(r"[a-z]+", w) for w in words)


def test_random_name_shape() -> None:
    for _ in range(50):
        name = naming.random_name(lambda n: False)
        adjective, _, surname = name.partition("_")
        assert adjective in naming.ADJECTIVES and surname in naming.SURNAMES
        assert naming.validate_name(name) == name


def test_random_name_avoids_taken_names() -> None:
    seen: list[str] = []

    def taken(name: str) -> bool:
        seen.append(name)
        return len(seen) <= 3

    name = naming.random_name(taken, random.Random(1))
    assert name == seen[-1] and len(seen) == 4


def test_random_name_appends_a_number_when_crowded() -> None:
    plain = re.compile(r"[a-z]+_[a-z]+")
    name = naming.random_name(lambda n: bool(plain.fullmatch(n)), random.Random(2))
    assert re.fullmatch(r"[a-z]+_[a-z]+[0-9]{1,2}", name)
    everything_but_long = naming.random_name(lambda n: n.count("_") < 2, random.Random(3))
    assert re.fullmatch(r"[a-z]+_[a-z]+_[0-9a-f]{8}", everything_but_long)


def test_new_id() -> None:
    ident = naming.new_id()
    assert re.fullmatch(r"[0-9a-f]{64}", ident)
    assert naming.new_id() != ident
    # an all-digit short id is skipped, as Docker does
    draws = iter([bytes.fromhex("12" * 32), bytes.fromhex("ab" * 32)])
    assert naming.new_id(lambda n: next(draws)) == "ab" * 32
    assert naming.short_id("ab" * 32) == "abababababab"
