"""``isobox build`` end to end: the real binary, a private ``--root`` per
module with a bootstrapped busybox, RUN steps in real containers
(``--network none``), the results checked by running and inspecting the
images. The module's root is removed at the end, after checking that no
build container is left behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ISOBOX = str(Path(sys.executable).parent / "isobox")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers: needs root")


class Env:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                    "ISOBOX_CONFIG": str(home / ".isobox")}

    def run(self, *args: str, input: bytes | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([ISOBOX, "--root", str(self.root), *args], input=input,
                              capture_output=True, env=self.env, timeout=120)
        out = subprocess.CompletedProcess(proc.args, proc.returncode,
                                          proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def build(self, ctx: Path, *args: str, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
        return self.run("build", "--network", "none", *args, str(ctx), check=check)

    def inspect(self, image: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.run("image", "inspect", image).stdout)
        return data[0]

    def sh(self, image: str, script: str, *args: str) -> str:
        return self.run("run", "--rm", "--network", "none", *args, image, "sh", "-c",
                        script).stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("build")
    e = Env(base / "root", base / "home")
    e.run("image", "bootstrap", "busybox")
    yield e
    try:
        assert e.run("ps", "-aq").stdout.strip() == "", "a build left a container"
    finally:
        subprocess.run([ISOBOX, "--root", str(e.root), "rm", "-f",
                        *e.run("ps", "-aq", check=False).stdout.split()],
                       capture_output=True, env=e.env, check=False)
        shutil.rmtree(base, ignore_errors=True)


def write(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ctx


def test_multistage_config_and_user_workdir(env: Env, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"app.txt": "payload\n", "Dockerfile": """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS builder
WORKDIR /src
COPY app.txt .
RUN <<EOF
set -e
tr a-z A-Z < app.txt > out.txt
mkdir -p /home/app && chown 65534:65534 /home/app
EOF
FROM busybox
COPY --from=builder /src/out.txt /opt/out.txt
COPY --from=builder --chown=nobody /src/app.txt /opt/owned.txt
ENV GREETING="hello world" \\
    OTHER=${GREETING}-x
WORKDIR /opt/work
USER nobody
EXPOSE 8080 53/udp
VOLUME /data
LABEL org.example.k="v 1"
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD true
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /opt/out.txt; id -u; pwd"]
"""})
    out = env.build(ctx, "-t", "multi:1", "-t", "multi:2", "--label", "built-by=test").stdout
    assert "Step 1/" in out and " ---> " in out and "Successfully built " in out
    assert "Successfully tagged multi:1" in out and "Successfully tagged multi:2" in out
    run = env.run("run", "--rm", "--network", "none", "multi:1").stdout
    assert run.splitlines() == ["PAYLOAD", "65534", "/opt/work"]
    assert env.sh("multi:1", "stat -c '%u %a' /opt/owned.txt /opt/out.txt",
                  "--entrypoint", "").split("\n")[:2] == ["65534 644", "0 644"]
    c = env.inspect("multi:2")["Config"]
    assert "GREETING=hello world" in c["Env"] and "OTHER=-x" in c["Env"]
    assert c["WorkingDir"] == "/opt/work" and c["User"] == "nobody"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}}
    assert c["Labels"] == {"org.example.k": "v 1", "built-by": "test"}
    assert c["StopSignal"] == "SIGINT"
    assert c["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["cat /opt/out.txt; id -u; pwd"]
    history = env.run("history", "--no-trunc", "multi:1").stdout
    assert "COPY file:" in history and "WORKDIR /opt/work" in history


def test_cache_hit_then_miss_after_context_change(env: Env, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"data.txt": "one\n", "Dockerfile":
                           "FROM busybox\nCOPY data.txt /d\nRUN cat /d > /copy\n"})
    first = env.build(ctx, "-q").stdout.strip()
    again = env.build(ctx)
    assert again.stdout.count("Using cache") == 2
    assert first.removeprefix("sha256:")[:12] in again.stdout
    (ctx / "data.txt").write_text("two\n")
    changed = env.build(ctx, "-t", "cached:1", "--iidfile", str(tmp_path / "iid"))
    assert "Using cache" not in changed.stdout
    iid = (tmp_path / "iid").read_text()
    assert iid.startswith("sha256:") and iid != first
    assert env.sh("cached:1", "cat /copy") == "two\n"
    nocache = env.build(ctx, "--no-cache")
    assert "Using cache" not in nocache.stdout


def test_dockerignore(env: Env, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"keep.txt": "k", "skip.log": "s", "logs/a.log": "a",
                           "docs/README.md": "r", "docs/other.md": "o",
                           ".dockerignore": "**/*.log\ndocs\n!docs/README.md\n",
                           "Dockerfile": "FROM busybox\nCOPY . /ctx/\n"})
    env.build(ctx, "-t", "ignore:1")
    listing = env.sh("ignore:1", "cd /ctx && find . -type f | sort")
    assert listing.split() == ["./.dockerignore", "./Dockerfile", "./docs/README.md",
                               "./keep.txt"]


def test_arg_scoping_and_build_args(env: Env, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": """\
ARG V=global
FROM busybox
RUN echo "before:[$V]" > /before
ARG V
ARG W=default
RUN echo "after:[$V] w:[$W]" > /after
"""})
    env.build(ctx, "-t", "args:1", "--build-arg", "W=given")
    assert env.sh("args:1", "cat /before /after; echo env:[$V]") == \
        "before:[]\nafter:[global] w:[given]\nenv:[]\n"


def test_add_local_tarball_and_heredoc_copy(env: Env, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("pkg/bin/tool", b"#!/bin/sh\necho tool\n"), ("pkg/README", b"r")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    (tmp_path / "pkg.tar.gz").write_bytes(buf.getvalue())
    write(tmp_path, {"Dockerfile": """\
FROM busybox
ADD pkg.tar.gz /opt/
COPY --chmod=600 <<EOF /etc/conf.txt
name=${HOSTNAME:-none}
EOF
"""})
    env.build(tmp_path, "-t", "add:1")
    assert env.sh("add:1", "/opt/pkg/bin/tool; cat /etc/conf.txt; stat -c %a /etc/conf.txt") \
        == "tool\nname=none\n600\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1 (a thread of this process)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_add_from_a_url_and_a_context_from_a_url(env: Env, tmp_path: Path,
                                                 served: tuple[Path, str]) -> None:
    www, base = served
    (www / "notes.txt").write_text("downloaded\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("inside")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"tar"))
    (www / "pkg.tar.gz").write_bytes(buf.getvalue())
    ctx = tmp_path / "ctx"
    write(ctx, {"Dockerfile": f"""\
FROM busybox
ADD {base}/notes.txt /data/
ADD {base}/pkg.tar.gz /data/
ADD {base}/notes.txt /renamed.txt
"""})
    env.build(ctx, "-t", "url:1")
    # Docker's rules: a URL's file is 0600 and an archive is not unpacked.
    assert env.sh("url:1", "cat /data/notes.txt /renamed.txt; stat -c %a /data/notes.txt; "
                           "ls /data") == "downloaded\ndownloaded\n600\nnotes.txt\npkg.tar.gz\n"
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {base}/nope.txt /x\n")
    failed = env.build(ctx, "-t", "url:2", check=False)
    assert failed.returncode != 0 and "404" in failed.stderr
    # The whole context as a tarball's URL.
    ctx_tar = io.BytesIO()
    with tarfile.open(fileobj=ctx_tar, mode="w:gz") as tf:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY f /f\n"), ("f", b"remote-ctx")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (www / "ctx.tar.gz").write_bytes(ctx_tar.getvalue())
    env.run("build", "--network", "none", "-t", "url:3", f"{base}/ctx.tar.gz")
    assert env.sh("url:3", "cat /f") == "remote-ctx"


def test_failing_run_exit_code_and_nothing_tagged(env: Env, tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo visible-output && exit 42\n"})
    result = env.build(tmp_path, "-t", "broken:1", check=False)
    assert result.returncode == 42
    assert "visible-output" in result.stdout
    assert "returned a non-zero code: 42" in result.stderr
    assert env.run("image", "inspect", "broken:1", check=False).returncode != 0


def test_target_stdin_dockerfile_and_tar_context(env: Env, tmp_path: Path) -> None:
    text = ("FROM busybox AS a\nRUN echo a > /a\nFROM busybox AS b\nRUN echo b > /b\n"
            "FROM a\nRUN exit 9\n")
    out = env.run("build", "--network", "none", "--target", "b", "-t", "tgt:b", "-f", "-",
                  str(tmp_path), input=text.encode()).stdout
    assert "echo a" not in out and "exit 9" not in out
    assert env.sh("tgt:b", "cat /b") == "b\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY f /f\n"), ("f", b"from-tar")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    env.run("build", "-t", "tar:1", "-", input=buf.getvalue())
    assert env.sh("tar:1", "cat /f") == "from-tar"


def test_parse_error_names_the_line(env: Env, tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM busybox\n\nBOGUS x\n"})
    result = env.build(tmp_path, check=False)
    assert result.returncode == 1
    assert "line 3: unknown instruction: BOGUS" in result.stderr
