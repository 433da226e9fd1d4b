"""Fixtures for the registry client's unit tests: a fake registry behind
httpx.MockTransport, a content store in tmp_path, and a client factory that
never sleeps."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for registry_server
sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_fake import FakeRegistry

from isobox.images.content import ContentStore
from isobox.registry import CredentialStore, RegistryClient, RegistryOptions


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(str(tmp_path / "content"))


@pytest.fixture
def creds(tmp_path: Path) -> CredentialStore:
    return CredentialStore(str(tmp_path / "config" / "config.json"))


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(fake: FakeRegistry, sleeps: Sleeps) -> Iterator[Callable[..., RegistryClient]]:
    made: list[RegistryClient] = []

    def make(*, credentials: CredentialStore | None = None, **options: Any) -> RegistryClient:
        client = RegistryClient(RegistryOptions(**options), credentials=credentials,
                                transport=fake.transport(), sleep=sleeps)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., RegistryClient]) -> RegistryClient:
    return make_client()
