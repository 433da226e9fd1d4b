"""System-test options: the ``slow`` marker (tests that take minutes, such as
debootstrap), skipped unless ISOBOX_SLOW_TESTS=1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes minutes; runs only with ISOBOX_SLOW_TESTS=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ISOBOX_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set ISOBOX_SLOW_TESTS=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def no_launchers_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The CLI's shared shim launchers (one per root, detached, kept while
    used) of this session's temporary roots are stopped, by pid, at its end."""
    yield
    from tests.system.cli_containers_support import stop_launchers

    stop_launchers(tmp_path_factory.getbasetemp())
