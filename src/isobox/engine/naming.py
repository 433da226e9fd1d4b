"""Container names and ids, by Docker's rules.

Names match ``[a-zA-Z0-9][a-zA-Z0-9_.-]+`` (a leading ``/``, as the API
shows names, is accepted and stripped). Unnamed containers get
``adjective_surname`` from the two lists below (our own, not Docker's),
with a number appended once the plain pairs keep colliding. Ids are 64 hex
digits from the kernel's CSPRNG whose 12-digit short form is never all
digits (Docker's rule: an all-numeric short id breaks as a hostname).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable

from isobox.errors import InvalidArgument

__all__ = ["ADJECTIVES", "SURNAMES", "new_id", "random_name", "short_id", "validate_name"]

NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")

ADJECTIVES = (
    "agile", "amber", "ample", "ardent", "balmy", "bold", "brave", "breezy", "bright",
    "calm", "candid", "cheerful", "civic", "clever", "cosmic", "crisp", "curious",
    "dapper", "deft", "diligent", "eager", "earnest", "elated", "fearless", "festive",
    "fluent", "frank", "gallant", "gentle", "glad", "golden", "hardy", "hearty", "humble",
    "jolly", "jovial", "keen", "kind", "lively", "lucid", "mellow", "merry", "mighty",
    "nimble", "noble", "patient", "placid", "plucky", "polite", "quiet", "radiant",
    "rapid", "serene", "sincere", "spry", "steady", "sunny", "tidy", "upbeat", "vivid",
    "witty", "zesty",
)

SURNAMES = (
    "agnesi", "ampere", "babbage", "bardeen", "bernoulli", "bohr", "boole", "brahe",
    "cantor", "carnot", "cauchy", "chandrasekhar", "clausius", "coulomb", "dedekind",
    "dijkstra", "dirac", "euler", "faraday", "fermat", "fibonacci", "fourier", "fresnel",
    "galois", "gauss", "germain", "gibbs", "hamming", "heaviside", "hertz", "hilbert",
    "hopper", "huygens", "jacobi", "joule", "kelvin", "kepler", "knuth", "lagrange",
    "laplace", "leibniz", "lovelace", "maxwell", "meitner", "mendel", "noether", "ohm",
    "pascal", "pauli", "planck", "poisson", "ramanujan", "riemann", "shannon", "somerville",
    "tesla", "turing", "volta", "watt", "wiener", "yalow", "zuse",
)

_ATTEMPTS = 16


def validate_name(name: str) -> str:
    """The name without its leading ``/``; InvalidArgument if Docker would refuse it."""
    bare = name[1:] if name.startswith("/") else name
    if not NAME_PATTERN.fullmatch(bare):
        raise InvalidArgument(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return bare


def random_name(taken: Callable[[str], bool], rng: random.Random | None = None) -> str:
    """A free ``adjective_surname``; after some collisions, with a number appended."""
    rng = rng or random.SystemRandom()
    for attempt in range(_ATTEMPTS * 4):
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
        if attempt >= _ATTEMPTS:
            name += str(rng.randint(0, 99))
        if not taken(name):
            return name
    while True:  # practically unreachable: fall back to a long random suffix
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}_{rng.getrandbits(32):08x}"
        if not taken(name):
            return name


def new_id(urandom: Callable[[int], bytes] = os.urandom) -> str:
    """64 hex digits whose short form (first 12) is not all decimal digits."""
    while True:
        ident = urandom(32).hex()
        if not ident[:12].isdigit():
            return ident


def short_id(ident: str) -> str:
    return ident[:12]
