"""``POST /build`` against the real docker CLI's classic builder
(``DOCKER_BUILDKIT=0 docker build``) and docker-py: multi-stage, the cache
on a rebuild, a failing RUN's exit code and message, ``--build-arg``,
``-f``, the streamed JSON messages; and ``images`` hiding the build's
intermediate images as Docker does (``-a`` shows them)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_support import DOCKER, Daemon, needs_docker, running_daemon

pytestmark = [needs_docker,
              pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers: needs root")]

MULTISTAGE = """\
FROM busybox AS builder
ARG GREETING=hello
WORKDIR /src
COPY hello.txt .
RUN echo "$GREETING from the builder" > made.txt && cat hello.txt >> made.txt
FROM busybox
LABEL stage=final
COPY --from=builder /src/made.txt /out/made.txt
ENV WHO=isobox
CMD ["cat", "/out/made.txt"]
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("dbuild")) as d:
        yield d


def _ctx(base: Path, files: dict[str, str]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)
    return base


def build(daemon: Daemon, *args: str, check: bool = True) -> tuple[int, str]:
    """``DOCKER_BUILDKIT=0 docker build --network none ...``: exit code, output."""
    assert DOCKER is not None
    result = subprocess.run([DOCKER, "build", "--network", "none", *args],
                            env={**daemon.env, "DOCKER_BUILDKIT": "0"},
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=180)
    out = (result.stdout + result.stderr).decode(errors="replace")
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{out}")
    return result.returncode, out


def test_multistage_build_runs_and_rebuild_uses_cache(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "ctx", {"Dockerfile": MULTISTAGE, "hello.txt": "the context\n"})
    _, out = build(daemon, "-t", "dbuild/multi:1", "-t", "dbuild/multi:also",
                      "--build-arg", "GREETING=hi", str(ctx))
    assert "Step 1/10 : FROM busybox AS builder" in out
    assert "Successfully built " in out
    assert "Successfully tagged dbuild/multi:1" in out
    assert "Successfully tagged dbuild/multi:also" in out
    assert daemon.docker("run", "--rm", "--network", "none", "dbuild/multi:1"
                         ).stdout == "hi from the builder\nthe context\n"
    info = json.loads(daemon.docker("image", "inspect", "dbuild/multi:1").stdout)[0]
    assert info["Config"]["Labels"] == {"stage": "final"}
    assert "WHO=isobox" in info["Config"]["Env"]
    # The same build again: every step from the cache, the same image.
    _, again = build(daemon, "-t", "dbuild/multi:2", "--build-arg", "GREETING=hi",
                        str(ctx))
    assert again.count("Using cache") >= 6, again
    assert info["Id"] == json.loads(daemon.docker("image", "inspect", "dbuild/multi:2"
                                                  ).stdout)[0]["Id"]
    # Another build arg: the RUN misses the cache.
    _, other = build(daemon, "-t", "dbuild/multi:3", "--build-arg", "GREETING=yo", str(ctx))
    assert "Using cache" in other  # the steps before the RUN
    assert daemon.docker("run", "--rm", "--network", "none", "dbuild/multi:3"
                         ).stdout.startswith("yo from the builder")
    daemon.docker("rmi", "dbuild/multi:1", "dbuild/multi:also", "dbuild/multi:2",
                  "dbuild/multi:3")


def test_failing_run_exits_with_its_code_and_message(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo about to fail\n"
                                                "RUN exit 42\nRUN echo never\n"})
    code, out = build(daemon, "-t", "dbuild/fails:1", str(ctx), check=False)
    assert code == 42, out
    assert "about to fail" in out
    assert "The command '/bin/sh -c exit 42' returned a non-zero code: 42" in out
    assert "never" not in out.replace("RUN echo never", "")
    # Nothing half-built is tagged.
    assert daemon.docker("image", "inspect", "dbuild/fails:1", check=False).returncode != 0
    assert daemon.isobox("ps", "-aq").stdout == ""


def test_dockerfile_flag_and_missing_copy_source(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "ctx", {"build/Other.dockerfile": "FROM busybox\nCOPY a.txt /a\n"
                                                            "CMD [\"cat\", \"/a\"]\n",
                                  "a.txt": "from -f\n"})
    build(daemon, "-f", str(ctx / "build" / "Other.dockerfile"), "-t", "dbuild/f:1", str(ctx))
    assert daemon.docker("run", "--rm", "--network", "none", "dbuild/f:1").stdout == "from -f\n"
    # A Dockerfile outside the context: the CLI sends it inside the tar.
    outside = tmp_path / "Outside.df"
    outside.write_text("FROM busybox\nCOPY a.txt /b\n")
    build(daemon, "-f", str(outside), "-t", "dbuild/f:2", str(ctx))
    assert daemon.docker("run", "--rm", "--network", "none", "dbuild/f:2", "cat", "/b"
                         ).stdout == "from -f\n"
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY missing.txt /\n")
    code, out = build(daemon, "-t", "dbuild/f:3", str(ctx), check=False)
    assert code != 0
    assert "missing.txt" in out
    daemon.docker("rmi", "dbuild/f:1", "dbuild/f:2")


def test_streamed_messages_over_http(daemon: Daemon, tmp_path: Path) -> None:
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        text = b"FROM busybox\nARG N\nRUN echo line-$N\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    with daemon.http() as client:
        response = client.post("/v1.41/build", content=data.getvalue(), params={
            "t": "dbuild/http:1", "buildargs": json.dumps({"N": "7"}), "networkmode": "none",
            "rm": "1", "forcerm": "1", "pull": "0", "labels": json.dumps({"k": "v"})},
            headers={"Content-Type": "application/x-tar"}, timeout=120)
        assert response.status_code == 200, response.text
        messages = [json.loads(line) for line in response.text.splitlines() if line]
        streams = "".join(m.get("stream", "") for m in messages)
        assert streams.startswith("Step 1/4 : FROM busybox\n")
        assert "line-7\n" in streams
        aux = [m["aux"]["ID"] for m in messages if "aux" in m]
        assert len(aux) == 1 and aux[0].startswith("sha256:")
        assert streams.endswith(f"Successfully built {aux[0][7:19]}\n"
                                "Successfully tagged dbuild/http:1\n")
        # Quiet: only the image id.
        response = client.post("/build", content=data.getvalue(), params={
            "t": "dbuild/http:1", "buildargs": json.dumps({"N": "7"}), "q": "1",
            "networkmode": "none", "labels": json.dumps({"k": "v"})}, timeout=120)
        messages = [json.loads(line) for line in response.text.splitlines() if line]
        assert messages == [{"aux": {"ID": aux[0]}}, {"stream": aux[0] + "\n"}]
        # A bad Dockerfile: an error status before any message.
        bad = io.BytesIO()
        with tarfile.open(fileobj=bad, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"RUN x"))
        response = client.post("/build", content=bad.getvalue(), timeout=60)
        assert response.status_code >= 400
        assert response.json()["message"]
        # A failing RUN: an errorDetail message with the exit code.
        response = client.post("/build", content=_tar({"Dockerfile": b"FROM busybox\n"
                                                                      b"RUN exit 3\n"}),
                               params={"networkmode": "none"}, timeout=60)
        last = json.loads(response.text.splitlines()[-1])
        assert last["errorDetail"] == {
            "message": "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
            "code": 3}
        assert last["error"] == last["errorDetail"]["message"]
    daemon.docker("rmi", "dbuild/http:1")


def _tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def test_docker_py_build(daemon: Daemon, tmp_path: Path) -> None:
    import docker

    ctx = _ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY . /ctx\n"
                                                "RUN ls /ctx > /listing\n",
                                  "one.txt": "1\n", "two.txt": "2\n"})
    client = docker.DockerClient(base_url=f"unix://{daemon.sock}")
    try:
        image, logs = client.images.build(path=str(ctx), tag="dbuild/py:1",
                                          network_mode="none", rm=True)
        assert "dbuild/py:1" in image.tags
        assert any("Successfully built" in chunk.get("stream", "") for chunk in logs)
        out = client.containers.run("dbuild/py:1", ["cat", "/listing"], remove=True,
                                    network_mode="none")
        assert out == b"Dockerfile\none.txt\ntwo.txt\n"
        with pytest.raises(docker.errors.BuildError) as failed:
            client.images.build(fileobj=_tar_file(b"FROM busybox\nRUN exit 5\n"),
                                custom_context=True, network_mode="none")
        assert "returned a non-zero code: 5" in str(failed.value)
        client.images.remove("dbuild/py:1")
    finally:
        client.close()


def _tar_file(dockerfile: bytes) -> object:
    import io

    return io.BytesIO(_tar({"Dockerfile": dockerfile}))


def _ids(daemon: Daemon, *args: str, docker: bool = False) -> set[str]:
    if docker:
        return set(daemon.docker("images", "-q", "--no-trunc", *args).stdout.split())
    return set(daemon.isobox("images", "-q", "--no-trunc", *args).stdout.split())


def test_images_hide_intermediate_images(daemon: Daemon, tmp_path: Path) -> None:
    # Earlier failed builds leave dangling images (as Docker's do): look at
    # what this build adds only.
    before, before_all = _ids(daemon), _ids(daemon, "-a")
    ctx = _ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo 1 > /one\n"
                                                "RUN echo 2 > /two\nENV X=1\n"})
    build(daemon, "-t", "dbuild/layers:1", str(ctx))
    final = json.loads(daemon.docker("image", "inspect", "dbuild/layers:1").stdout)[0]["Id"]
    assert _ids(daemon) - before == {final}
    steps = _ids(daemon, "-a") - before_all
    assert len(steps) == 3 and final in steps  # two RUN images and the final one
    # The API: the same, with and without ``all``.
    assert _ids(daemon, docker=True) - before == {final}
    assert _ids(daemon, "-a", docker=True) - before_all == steps
    # Removing the final image but not its parents (``--no-prune``): the last
    # RUN's image has no child any more and shows, dangling; the first does not.
    daemon.docker("rmi", "--no-prune", "dbuild/layers:1")
    shown = _ids(daemon) - before
    assert len(shown) == 1 and shown < steps - {final}
    assert _ids(daemon, "--filter", "dangling=true") - before == shown
    left = steps - {final} - shown
    daemon.isobox("rmi", *shown)
    daemon.isobox("rmi", *left, check=False)  # gone already when it was pruned
