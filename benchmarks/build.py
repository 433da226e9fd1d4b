"""``isobox build`` against ``docker build`` (classic builder,
``DOCKER_BUILDKIT=0``) on a private dockerd, and ``buildah bud`` when it is
installed, all in one run, on the same multi-stage Dockerfile and context.

The Dockerfile (busybox only): two stages, several RUN, COPY of a context of
a few hundred small files, COPY --from the first stage, and metadata
instructions. Two measurements per tool, wall time of the whole command:

- cold: no cache (``--no-cache`` for isobox and docker, ``--layers=false``
  for buildah) — every step runs;
- cached: the same build again with the cache — every step a hit.

Median of ``--cold`` (3) and ``--cached`` (5) runs; a warm-up build first.
The busybox image is isobox's ``image bootstrap busybox``, saved and loaded
into dockerd (and buildah's storage), so every tool starts from the same
image. A tool that cannot start is skipped with a note.

Usage (as root):  .venv/bin/python benchmarks/build.py [--cold 3] [--cached 5] [--files 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from run import PATH, Dockerd, log, not_root, remove_base

ISOBOX = str(Path(sys.executable).parent / "isobox")

DOCKERFILE = """\
FROM busybox AS builder
WORKDIR /src
COPY files/ ./files/
RUN find files -type f | sort > manifest.txt && wc -l manifest.txt
RUN cat files/*/* | md5sum > digest.txt
RUN mkdir -p /out && cp manifest.txt digest.txt /out/ && tar -cf /out/files.tar files

FROM busybox
LABEL org.example.bench=build
ENV APP_HOME=/app PATH=/app/bin:$PATH
WORKDIR /app
COPY --from=builder /out/ /app/data/
COPY files/ /app/files/
RUN mkdir -p bin && printf '#!/bin/sh\\necho hello\\n' > bin/hello && chmod +x bin/hello
RUN echo 'app:x:1000:1000::/app:/bin/sh' >> /etc/passwd && chown -R 1000 /app/data
USER app
EXPOSE 8080
CMD ["hello"]
"""


def make_context(base: Path, files: int) -> Path:
    ctx = base / "context"
    for i in range(files):
        path = ctx / "files" / f"d{i % 10}" / f"f{i:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * (1 + i % 7))
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / ".dockerignore").write_text("*.tmp\n")
    return ctx


def sh(argv: list[str], env: dict[str, str], timeout: float = 600) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n"
                           f"{result.stdout.decode(errors='replace')[-2000:]}"
                           f"{result.stderr.decode(errors='replace')[-2000:]}")


@dataclass
class Tool:
    name: str
    cold_cmd: list[str]
    cached_cmd: list[str]
    env: dict[str, str]
    cold: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)

    def timed(self, argv: list[str]) -> float:
        start = time.perf_counter()
        sh(argv, self.env)
        return time.perf_counter() - start


def isobox_tool(base: Path, ctx: Path) -> tuple[Tool, Path]:
    root = base / "isobox"
    env = {"PATH": PATH, "HOME": str(base), "ISOBOX_CONFIG": str(base / "isobox-config"),
           "LANG": "C.UTF-8"}
    cmd = [ISOBOX, "--root", str(root)]
    sh([*cmd, "image", "bootstrap", "busybox"], env)
    archive = base / "busybox.tar"
    sh([*cmd, "save", "-o", str(archive), "busybox"], env)
    build = [*cmd, "build", "-q", "--network", "none", "-t", "bench/build:1", str(ctx)]
    return Tool("isobox build", [*build[:3], *build[3:4], "--no-cache", *build[4:]], build,
                env), archive


def docker_tool(base: Path, ctx: Path, archive: Path, notes: list[str]
                ) -> tuple[Tool | None, Dockerd]:
    daemon = Dockerd(base)
    why = daemon.start()
    if why is not None:
        notes.append(f"docker skipped: {why}")
        return None, daemon
    daemon.docker("load", "-i", str(archive))
    env = {**daemon.env, "DOCKER_BUILDKIT": "0"}
    build = ["docker", "build", "-q", "--network", "none", "-t", "bench/build:1", str(ctx)]
    return Tool(f"docker build (classic, {daemon.version})",
                [*build[:2], "--no-cache", *build[2:]], build, env), daemon


def buildah_tool(base: Path, ctx: Path, archive: Path, notes: list[str]) -> Tool | None:
    buildah = shutil.which("buildah")
    if buildah is None:
        notes.append("buildah skipped: not installed (apt-get install buildah)")
        return None
    env = {"PATH": PATH, "HOME": str(base), "BUILDAH_ISOLATION": "chroot"}
    store = ["--root", str(base / "storage"), "--runroot", str(base / "run"),
             "--storage-driver", "overlay"]
    try:
        sh([buildah, *store, "pull", f"docker-archive:{archive}"], env)
        sh([buildah, *store, "tag", "localhost/busybox:latest", "busybox"], env)
    except RuntimeError as exc:
        notes.append(f"buildah skipped: {exc}")
        return None
    version = subprocess.run([buildah, "--version"], capture_output=True, text=True,
                             check=False).stdout.split()
    build = [buildah, *store, "bud", "-q", "--layers", "--network", "none",
             "--pull-never", "-t", "bench/build:1", str(ctx)]
    cold = [*build[:-1], "--no-cache", build[-1]]
    return Tool(f"buildah bud ({version[2] if len(version) > 2 else '?'})", cold, build, env)


def measure(tools: list[Tool], cold: int, cached: int,
            log: Callable[[str], None]) -> None:
    for tool in tools:
        log(f"{tool.name}: warm-up")
        tool.timed(tool.cold_cmd)
    # Rounds rotate over the tools, so that noise falls on all alike.
    for i in range(cold):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            tool.cold.append(tool.timed(tool.cold_cmd))
            log(f"{tool.name}: cold {tool.cold[-1]:.2f}s")
    for tool in tools:
        tool.timed(tool.cached_cmd)  # the cache holds this very build
    for i in range(cached):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            tool.cached.append(tool.timed(tool.cached_cmd))
            log(f"{tool.name}: cached {tool.cached[-1]:.2f}s")


def render(tools: list[Tool], notes: list[str], files: int) -> str:
    lines = [f"multi-stage Dockerfile, {DOCKERFILE.count(chr(10))} lines, context of {files} "
             "files; wall time of the whole command",
             "",
             "| tool | cold (median) | cold runs | cached (median) | cached runs |"
             " cached / cold |",
             "|---|---|---|---|---|---|"]
    for t in tools:
        c, w = statistics.median(t.cold), statistics.median(t.cached)
        lines.append(f"| {t.name} | {c:.2f} s | {' '.join(f'{x:.2f}' for x in t.cold)} | "
                     f"{w:.3f} s | {' '.join(f'{x:.2f}' for x in t.cached)} | "
                     f"{100 * w / c:.0f}% |")
    ours = tools[0]
    peers = tools[1:]
    cold_ours, cached_ours = statistics.median(ours.cold), statistics.median(ours.cached)
    lines.append("")
    if peers:
        fastest = min(peers, key=lambda t: statistics.median(t.cold))
        ok = cold_ours <= statistics.median(fastest.cold)
        lines.append(f"- cold no slower than the fastest peer ({fastest.name}, "
                     f"{statistics.median(fastest.cold):.2f} s): {'met' if ok else 'NOT met'}")
    lines.append(f"- cached under 15% of our cold ({100 * cached_ours / cold_ours:.1f}%): "
                 f"{'met' if cached_ours < 0.15 * cold_ours else 'NOT met'}")
    docker = next((t for t in peers if t.name.startswith("docker")), None)
    if docker is not None:
        ok = cached_ours < statistics.median(docker.cached)
        lines.append(f"- cached faster than docker's cached "
                     f"({statistics.median(docker.cached):.3f} s): "
                     f"{'met' if ok else 'NOT met'}")
    lines += [f"- note: {n.splitlines()[0]}" for n in notes]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--cached", type=int, default=5)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--no-buildah", action="store_true")
    args = parser.parse_args()
    if not_root():
        return 2

    notes: list[str] = []
    # A short path: dockerd's unix sockets under it must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="isobox-build-bench-", dir="/tmp"))
    daemon: Dockerd | None = None
    try:
        for sub in ("isobox", "docker", "buildah"):
            (base / sub).mkdir()
        ctx = make_context(base, args.files)
        log("isobox: bootstrap busybox")
        ours, archive = isobox_tool(base / "isobox", ctx)
        tools = [ours]
        if not args.no_docker:
            log("docker: private dockerd, load the same busybox")
            docker, daemon = docker_tool(base / "docker", ctx, archive, notes)
            if docker is not None:
                tools.append(docker)
        if not args.no_buildah:
            buildah = buildah_tool(base / "buildah", ctx, archive, notes)
            if buildah is not None:
                tools.append(buildah)
        measure(tools, args.cold, args.cached, log)
        print(render(tools, notes, args.files))
    finally:
        if daemon is not None:
            daemon.stop()
        remove_base(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
