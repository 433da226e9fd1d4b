"""isoboxd's prune endpoints with Docker's filters, through the docker CLI:
``until`` and ``label``/``label!`` for containers, images and networks,
``label``/``label!``/``all`` for volumes, Docker's 400 for any other key or
a bad value."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from daemon_support import DOCKER, Daemon, needs_docker, running_daemon

pytestmark = needs_docker

NONE = ("--network", "none")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("isoboxd-prune")) as d:
        yield d


def _names(daemon: Daemon, *args: str) -> set[str]:
    return set(daemon.docker(*args).stdout.split())


def test_container_prune_filters(daemon: Daemon) -> None:
    try:
        daemon.docker("create", "--name", "old-keep", "--label", "keep=yes", *NONE, "busybox")
        daemon.docker("create", "--name", "old-tier", "--label", "tier=a", *NONE, "busybox")
        time.sleep(2.2)
        daemon.docker("create", "--name", "new", *NONE, "busybox")
        daemon.docker("run", "-d", "--name", "running", *NONE, "busybox", "sleep", "60")
        every = ("ps", "-a", "--format", "{{.Names}}")
        # until: only what was created before then (2 s ago), never a running one
        out = daemon.docker("container", "prune", "-f", "--filter", "until=2s").stdout
        assert "Deleted Containers:" in out
        assert _names(daemon, *every) == {"new", "running"}
        # label!: every stopped one but those labelled keep=yes
        daemon.docker("create", "--name", "keep2", "--label", "keep=no", *NONE, "busybox")
        daemon.docker("create", "--name", "keep3", "--label", "keep=yes", *NONE, "busybox")
        daemon.docker("container", "prune", "-f", "--filter", "label!=keep=yes")
        assert _names(daemon, *every) == {"keep3", "running"}
        daemon.docker("create", "--name", "tier-a", "--label", "tier=a", *NONE, "busybox")
        daemon.docker("container", "prune", "-f", "--filter", "label=tier")
        assert _names(daemon, *every) == {"keep3", "running"}
        daemon.docker("container", "prune", "-f", "--filter", "label=keep=no")
        assert _names(daemon, *every) == {"keep3", "running"}  # no such value: none went
        # bad filters: Docker's 400 and message
        with daemon.http() as http:
            r = http.post("/containers/prune", params={"filters": '{"foo":["bar"]}'})
            assert r.status_code == 400 and r.json() == {"message": "invalid filter 'foo'"}
            r = http.post("/containers/prune", params={"filters": '{"until":["abc"]}'})
            assert r.status_code == 400
            assert r.json()["message"] == ("invalid value for 'until' filter: failed to parse "
                                           'value as time or duration: "abc"')
            r = http.post("/containers/prune", params={"filters": '{"until":["1h","2h"]}'})
            assert r.status_code == 400
            assert r.json()["message"] == "more than one until filter specified"
        assert _names(daemon, *every) == {"keep3", "running"}
    finally:
        daemon.remove_all()


def _build_untagged(daemon: Daemon, dockerfile: str) -> str:
    """A dangling image (``docker build -q -`` with no tag): its id."""
    assert DOCKER is not None
    result = subprocess.run([DOCKER, "build", "-q", "--network", "none", "-"],
                            env={**daemon.env, "DOCKER_BUILDKIT": "0"}, capture_output=True,
                            input=dockerfile.encode(), timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def test_image_prune_filters(daemon: Daemon) -> None:
    try:
        labelled = _build_untagged(daemon, "FROM busybox\nLABEL prune=me\n")
        plain = _build_untagged(daemon, "FROM busybox\nLABEL other=1\n")
        images = ("images", "-q", "--no-trunc")
        assert {labelled, plain} <= _names(daemon, *images)
        # made just now: not before an hour ago
        daemon.docker("image", "prune", "-f", "--filter", "until=1h")
        assert {labelled, plain} <= _names(daemon, *images)
        daemon.docker("image", "prune", "-f", "--filter", "label!=prune=me")
        assert labelled in _names(daemon, *images) and plain not in _names(daemon, *images)
        daemon.docker("image", "prune", "-f", "--filter", "label=prune")
        assert labelled not in _names(daemon, *images)
        assert "busybox:latest" in _names(daemon, "images", "--format",
                                          "{{.Repository}}:{{.Tag}}")
        with daemon.http() as http:
            r = http.post("/images/prune", params={"filters": '{"dangling":["maybe"]}'})
            assert r.status_code == 400
            assert r.json() == {"message": "invalid filter 'dangling=maybe'"}
            r = http.post("/images/prune", params={"filters": '{"name":["x"]}'})
            assert r.status_code == 400 and r.json() == {"message": "invalid filter 'name'"}
    finally:
        daemon.remove_all()


def test_network_prune_filters(daemon: Daemon) -> None:
    for name, label in (("net-a", "team=a"), ("net-b", "team=b"), ("net-c", "other=1")):
        daemon.docker("network", "create", "--label", label, name)
    try:
        nets = ("network", "ls", "--format", "{{.Name}}")
        daemon.docker("network", "prune", "-f", "--filter", "until=1h")
        assert {"net-a", "net-b", "net-c"} <= _names(daemon, *nets)
        out = daemon.docker("network", "prune", "-f", "--filter", "label=team",
                            "--filter", "label!=team=a").stdout
        assert "net-b" in out
        assert {"net-a", "net-c"} <= _names(daemon, *nets) and "net-b" not in _names(
            daemon, *nets)
        daemon.docker("network", "prune", "-f", "--filter", "label=other=1")
        assert "net-c" not in _names(daemon, *nets)
        assert {"bridge", "host", "none", "net-a"} <= _names(daemon, *nets)
        with daemon.http() as http:
            r = http.post("/networks/prune", params={"filters": '{"dangling":["true"]}'})
            assert r.status_code == 400
            assert r.json() == {"message": "invalid filter 'dangling'"}
    finally:
        daemon.docker("network", "rm", "net-a", "net-b", "net-c", check=False)


def test_volume_prune_filters(daemon: Daemon) -> None:
    for name, label in (("vol-a", "team=a"), ("vol-b", "team=b"), ("vol-c", "other=1")):
        daemon.docker("volume", "create", "--label", label, name)
    try:
        vols = ("volume", "ls", "-q")
        daemon.docker("volume", "prune", "-f", "--filter", "label=team")
        assert {"vol-a", "vol-b", "vol-c"} <= _names(daemon, *vols)  # named: only with all
        daemon.docker("volume", "prune", "-af", "--filter", "label=team",
                      "--filter", "label!=team=a")
        assert _names(daemon, *vols) >= {"vol-a", "vol-c"} and "vol-b" not in _names(
            daemon, *vols)
        with daemon.http() as http:
            r = http.post("/volumes/prune", params={"filters": '{"until":["1h"]}'})
            assert r.status_code == 400 and r.json() == {"message": "invalid filter 'until'"}
            r = http.post("/volumes/prune", params={"filters": '{"all":["sure"]}'})
            assert r.status_code == 400
            assert r.json() == {"message": "invalid filter 'all=sure'"}
        assert {"vol-a", "vol-c"} <= _names(daemon, *vols)
    finally:
        daemon.docker("volume", "rm", "-f", "vol-a", "vol-b", "vol-c", check=False)
