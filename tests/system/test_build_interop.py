"""A corpus of Dockerfiles built by ``isobox build`` and by dockerd's classic builder
(``DOCKER_BUILDKIT=0``, a private dockerd from ``isobox.tools.private_dockerd``):
the same files (paths, modes, owners, link targets, content) and the same
config (Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Volumes,
Labels, StopSignal, Healthcheck). Our image goes to dockerd with ``isobox
save`` → ``docker load``, and dockerd exports both file systems, so both
are read the same way. Skipped when dockerd cannot start."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dockerd_support import running_dockerd

from isobox.tools.private_dockerd import PrivateDockerd

ISOBOX = str(Path(sys.executable).parent / "isobox")

DOCKERFILE = """\
FROM busybox AS first
RUN mkdir -p /made && echo made > /made/file && chmod 0640 /made/file

FROM busybox
ARG WHO=world
ENV A=1 B="two words" WHO=$WHO
WORKDIR /app
COPY --chown=1:2 a.txt sub ./
COPY b.sh /usr/local/bin/
COPY --from=first /made /from-first
RUN chmod 0750 /usr/local/bin/b.sh && mkdir -p /data/deep && echo hi > /data/x \\
    && ln -s /data/x /data/link && rm /bin/wget
USER 1000:1000
EXPOSE 80/tcp 53/udp
VOLUME ["/data"]
LABEL a=b c="d e"
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD ["true"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $WHO"]
"""

def _tar_gz(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: name -> (Dockerfile, context files {path: bytes}, build args, the command the image runs)
CORPUS: dict[str, tuple[str, dict[str, bytes], tuple[str, ...], str]] = {
    "everything": (DOCKERFILE, {}, ("WHO=isobox",), "isobox\n"),
    "dockerignore": ("FROM busybox\nCOPY . /ctx/\nCMD [\"ls\", \"-R\", \"/ctx\"]\n", {
        ".dockerignore": b"**/*.tmp\n!keep.tmp\ndocs/\n*.md\n!README.md\n",
        "a.tmp": b"x", "keep.tmp": b"k", "deep/b.tmp": b"x", "deep/c.txt": b"c",
        "docs/guide.txt": b"g", "NOTES.md": b"n", "README.md": b"r"}, (), ""),
    "arg-scoping": ("ARG V=outer\nFROM busybox\nARG V\nRUN echo \"v=$V\" > /v\n"
                    "ARG W=dflt\nENV X=$W-x\nRUN echo \"$X $W\" > /x\n"
                    "CMD [\"cat\", \"/v\", \"/x\"]\n", {}, ("W=given",),
                    "v=outer\ngiven-x given\n"),
    "add-extraction": ("FROM busybox\nADD pkg.tar.gz /opt/\nADD plain.txt /opt/plain/\n"
                       "COPY pkg.tar.gz /kept/\nCMD [\"/opt/pkg/run\"]\n", {
        "pkg.tar.gz": _tar_gz({"pkg/run": b"#!/bin/sh\necho packed\n", "pkg/data": b"d"}),
        "plain.txt": b"plain\n"}, (), "packed\n"),
}

CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels", "StopSignal", "Healthcheck")


@pytest.fixture(scope="module")
def docker() -> Iterator[PrivateDockerd]:
    yield from running_dockerd(timeout=60)


def _isobox(root: Path, home: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "ISOBOX_CONFIG": str(home / ".isobox")}
    result = subprocess.run([ISOBOX, "--root", str(root), *args], env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"isobox {args}: {result.stdout}{result.stderr}"
    return result.stdout


def _files(docker: PrivateDockerd, image: str, out: Path) -> dict[str, Any]:
    cid = docker.docker("create", "--network", "none", image).stdout.strip()
    try:
        docker.docker("export", "-o", str(out), cid)
    finally:
        docker.docker("rm", "-f", cid, check=False)
    found: dict[str, Any] = {}
    with tarfile.open(out) as tar:
        for m in tar:
            content = None
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                content = hashlib.sha256(f.read()).hexdigest()
            found[m.name.rstrip("/")] = (m.type, oct(m.mode), m.uid, m.gid, m.linkname,
                                         content)
    return found


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_same_files_and_config_as_dockerds_classic_builder(
        docker: PrivateDockerd, tmp_path: Path, case: str) -> None:
    dockerfile, files, build_args, output = CORPUS[case]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    if case == "everything":
        (ctx / "sub" / "inner").mkdir(parents=True)
        (ctx / "a.txt").write_text("a\n")
        (ctx / "sub" / "s.txt").write_text("s\n")
        (ctx / "sub" / "inner" / "deep.txt").write_text("deep\n")
        (ctx / "b.sh").write_text("#!/bin/sh\necho b\n")
        os.chmod(ctx / "b.sh", 0o755)
        os.chmod(ctx / "sub" / "s.txt", 0o600)
        (ctx / "skipped.log").write_text("ignored\n")
        (ctx / ".dockerignore").write_text("*.log\n")
    for name, data in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_bytes(data)
    args = [a for arg in build_args for a in ("--build-arg", arg)]

    root, home = tmp_path / "root", tmp_path / "home"
    try:
        _isobox(root, home, "image", "bootstrap", "busybox")
        _isobox(root, home, "save", "-o", str(tmp_path / "busybox.tar"), "busybox")
        docker.docker("load", "-i", str(tmp_path / "busybox.tar"))
        _isobox(root, home, "build", "--network", "none", *args, "-t", "interop/ours:1",
                str(ctx))
        _isobox(root, home, "save", "-o", str(tmp_path / "ours.tar"), "interop/ours:1")
        docker.docker("load", "-i", str(tmp_path / "ours.tar"))
        docker.docker("build", "--network", "none", *args, "-t", "interop/theirs:1",
                      str(ctx), extra_env={"DOCKER_BUILDKIT": "0"})

        ours = json.loads(docker.docker("image", "inspect", "interop/ours:1").stdout)[0]
        theirs = json.loads(docker.docker("image", "inspect", "interop/theirs:1").stdout)[0]
        for key in CONFIG_KEYS:
            assert ours["Config"].get(key) == theirs["Config"].get(key), key
        assert len(ours["RootFS"]["Layers"]) == len(theirs["RootFS"]["Layers"])

        mine = _files(docker, "interop/ours:1", tmp_path / "ours-fs.tar")
        other = _files(docker, "interop/theirs:1", tmp_path / "theirs-fs.tar")
        assert sorted(set(mine) ^ set(other)) == []
        differ = {p: (mine[p], other[p]) for p in mine if mine[p] != other[p]}
        assert differ == {}
        # It runs there as built.
        ran = docker.docker("run", "--rm", "--network", "none", "interop/ours:1").stdout
        assert ran == docker.docker("run", "--rm", "--network", "none", "interop/theirs:1"
                                    ).stdout
        if output:
            assert ran == output
    finally:
        docker.docker("rmi", "-f", "interop/ours:1", "interop/theirs:1", check=False)
        subprocess.run([ISOBOX, "--root", str(root), "rm", "-f", *subprocess.run(
            [ISOBOX, "--root", str(root), "ps", "-aq"], capture_output=True, text=True,
            check=False).stdout.split()], capture_output=True, check=False)
