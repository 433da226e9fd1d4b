"""Pull + unpack of a multi-layer image of about 100 MB, isobox against
skopeo + umoci and dockerd; and ``isobox load`` against ``docker load``.

The image is made without the internet, once, and cached under
``benchmarks/.cache/`` (git-ignored):

1. ``isobox image bootstrap debian`` (debootstrap, about a minute), saved as
   ``debian-bookworm.tar``;
2. its rootfs split into four layers: the base without ``usr/lib`` and
   ``usr/share`` (~32 MB), ``usr/lib`` (~41 MB), ``usr/share`` without the
   locales (~16 MB), and an "app" layer (5 MB of files under ``/opt/app``
   and a whiteout of ``/usr/share/doc``); saved as ``bench-image-v1.tar``
   (``docker save`` format, plain layer tars) and ``bench-image-v1-oci.tar``
   (OCI layout, the gzip layers, which are what the registry serves).

Each run starts Debian's docker-registry on loopback, pushes the image, and a
private dockerd (own data root, exec root and socket, ``--bridge=none
--iptables=false``, in its own mount namespace, as in
``tests/system/test_archive_interop.py``). Then, interleaved, in an order
that rotates every round, with an empty destination every round:

  isobox pull     ``isobox --root <root> pull -q HOST/bench:latest`` (unpacks
                  every layer into the snapshotter); the root is kept, as
                  dockerd's data root is, and emptied after each round by
                  ``isobox image prune -a -f`` (checked: no blob, no layer left)
  isobox pull, new root
                  the same into a brand-new ``--root`` every round
  skopeo+umoci    ``skopeo copy docker://... oci:<dir>:latest`` then
                  ``umoci unpack --image <dir>:latest <bundle>``, new dirs
  docker pull     ``docker pull`` into the private dockerd (overlay2), the
                  image removed and pruned after each round
  isobox load     ``isobox --root <root> load -i bench.tar`` (kept root, emptied)
  isobox load, new root
  docker load     ``docker load -i bench.tar``

After each round the destination is removed and ``sync`` runs (untimed):
no tool pays for the write-back of the one before. MB/s is the image's
uncompressed size (the layers' tar bytes) over the
median time; the ratio is to the fastest tool of the same group.
``--profile`` adds a cProfile of one in-process ``ImageService.pull``.

Usage (as root):  .venv/bin/python benchmarks/images.py [--rounds 5] [--json] [--profile]
                  [--workdir DIR]  (where every tool writes; default /tmp)
Apt packages: docker-registry, skopeo, umoci, docker.io, debootstrap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isobox.tools.private_dockerd import PrivateDockerd

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
BIN = Path(sys.executable).parent
ISOBOX = str(BIN / "isobox")
BASE_ARCHIVE = CACHE / "debian-bookworm.tar"
BENCH_ARCHIVE = CACHE / "bench-image-v1.tar"          # docker save: plain layer tars
BENCH_OCI_ARCHIVE = CACHE / "bench-image-v1-oci.tar"  # OCI layout: the gzip layers
BENCH_TAG = "bench:latest"

sys.path.insert(0, str(HERE.parent / "tests"))


# ---------------------------------------------------------------- subprocesses


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        quiet: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, timeout=timeout,
                            stdout=subprocess.PIPE if quiet else None,
                            stderr=subprocess.PIPE)
    if result.returncode != 0:
        out = (result.stdout or b"") + (result.stderr or b"")
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n"
                           f"{out.decode(errors='replace')[-2000:]}")
    return result


def isobox_env(work: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(work), "ISOBOX_CONFIG": str(work / "isobox-config"),
            "LANG": "C.UTF-8"}


def isobox(root: Path, *args: str, work: Path) -> subprocess.CompletedProcess[bytes]:
    return run([ISOBOX, "--root", str(root), *args], env=isobox_env(work))


# ---------------------------------------------------------------- the image


def base_archive(log: Callable[[str], None]) -> Path:
    """debian:bookworm from debootstrap, saved once."""
    if BASE_ARCHIVE.exists():
        return BASE_ARCHIVE
    CACHE.mkdir(exist_ok=True)
    log("bootstrapping debian:bookworm with debootstrap (about a minute, cached after)")
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        isobox(root, "image", "bootstrap", "debian", work=Path(tmp))
        part = BASE_ARCHIVE.with_suffix(".part")
        isobox(root, "save", "-o", str(part), "debian:bookworm", work=Path(tmp))
        part.rename(BASE_ARCHIVE)
    return BASE_ARCHIVE


def bench_archive(log: Callable[[str], None]) -> Path:
    """The four-layer image, built once from the debian archive."""
    if BENCH_ARCHIVE.exists() and BENCH_OCI_ARCHIVE.exists():
        return BENCH_ARCHIVE
    source = base_archive(log)
    log("splitting the debian rootfs into four layers (cached after)")
    from isobox.engine.config import load_config
    from isobox.engine.images import ImageService
    from isobox.images.builder import ImageAssembler, now_rfc3339, register
    from isobox.oci import image_spec as spec

    with tempfile.TemporaryDirectory(prefix="build-", dir=CACHE) as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        _extract_single_layer(source, rootfs, work)
        parts = _split_rootfs(rootfs, work)
        service = ImageService(load_config(str(work / "root"), env={}))
        try:
            asm = ImageAssembler(service.store, tmpdir=str(work))
            created = now_rfc3339()
            history = []
            for name, path in parts:
                asm.add_layer_from_dir(str(path), mtime=int(time.time()))
                history.append(spec.History(created=created, created_by=f"bench: {name}"))
            config = spec.ImageConfig(
                architecture="amd64", os="linux", created=created,
                config=spec.ContainerConfig(env=["PATH=/usr/local/sbin:/usr/local/bin:"
                                                 "/usr/sbin:/usr/bin:/sbin:/bin"],
                                            cmd=["bash"], working_dir="/opt/app"),
                rootfs=spec.RootFS())
            register(service.records, asm.finish(config, history), [BENCH_TAG])
            for path, fmt in ((BENCH_OCI_ARCHIVE, "oci"), (BENCH_ARCHIVE, "docker")):
                part = path.with_suffix(".part")
                with open(part, "wb") as out:
                    service.save([BENCH_TAG], out, format=fmt)
                part.rename(path)
        finally:
            service.close()
    return BENCH_ARCHIVE


def _extract_single_layer(archive: Path, rootfs: Path, work: Path) -> None:
    """The one layer of a ``docker save`` archive, unpacked by GNU tar as root
    (owners, modes, xattrs kept)."""
    import tarfile

    layer = work / "layer.tar"
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        (name,) = manifest[0]["Layers"]
        member = tar.extractfile(name)
        assert member is not None
        with open(layer, "wb") as out:
            shutil.copyfileobj(member, out, 1 << 20)
    rootfs.mkdir()
    run(["tar", "-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-f", str(layer), "-C", str(rootfs)])
    layer.unlink()


def _split_rootfs(rootfs: Path, work: Path) -> list[tuple[str, Path]]:
    """base, usr/lib, usr/share (no locales), app: directories to make layers of."""
    layers = []
    for name, sub in (("usr/lib", "usr/lib"), ("usr/share", "usr/share")):
        dest = work / name.replace("/", "-")
        (dest / "usr").mkdir(parents=True)
        shutil.copystat(rootfs / "usr", dest / "usr")
        os.rename(rootfs / sub, dest / sub)
        layers.append((name, dest))
    shutil.rmtree(layers[1][1] / "usr/share/locale")
    app = work / "app"
    (app / "opt/app").mkdir(parents=True)
    (app / "usr/share").mkdir(parents=True)
    (app / "usr/share/.wh.doc").touch()  # RUN rm -rf /usr/share/doc
    rng = random.Random(42)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(4096)]
    for i in range(50):
        text = b" ".join(rng.choices(words, k=20_000))[:100_000]
        (app / f"opt/app/data-{i:02d}.txt").write_bytes(text)
    return [("base", rootfs), *layers, ("app", app)]


def image_facts(archive: Path) -> dict[str, Any]:
    """Layer count, uncompressed size and compressed size of the bench image."""
    import tarfile

    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        sizes = [tar.getmember(name).size for name in manifest[0]["Layers"]]
    return {"layers": len(sizes), "archive_bytes": archive.stat().st_size,
            "layer_bytes": sizes}


# ---------------------------------------------------------------- private dockerd


class Dockerd(PrivateDockerd):
    """The private dockerd (``isobox.tools.private_dockerd``), trusting our
    registry, emptied between rounds."""

    def __init__(self, base: Path, insecure: str) -> None:
        super().__init__(base, (f"--insecure-registry={insecure}",))

    def reset(self) -> None:
        """Remove every image (and so every layer) between rounds."""
        ids = self.docker("images", "-q", "--no-trunc").stdout.split()
        if ids:
            self.docker("rmi", "-f", *sorted(set(ids)))
        self.docker("image", "prune", "-a", "-f")


# ---------------------------------------------------------------- the contenders


@dataclass
class Tool:
    group: str
    name: str
    command: str
    #: one timed round into a fresh destination under the given folder
    timed: Callable[[Path], None]
    #: what to undo after a round (not timed)
    reset: Callable[[Path], None] = lambda folder: None
    samples: list[float] = field(default_factory=list)


def contenders(host: str, archive: Path, work: Path,
               docker: Dockerd | None, notes: list[str]) -> list[Tool]:
    image = f"{host}/bench:latest"
    env = isobox_env(work)
    kept_pull, kept_load = work / "isobox-pull", work / "isobox-load"

    def emptied(root: Path) -> Callable[[Path], None]:
        def reset(folder: Path) -> None:
            run([ISOBOX, "--root", str(root), "image", "prune", "-a", "-f"], env=env)
            left = [p for sub in ("content/blobs/sha256", "snapshots/snapshots")
                    if (root / sub).is_dir() for p in (root / sub).iterdir()]
            if left:
                raise RuntimeError(f"prune left {left[:3]} in {root}")
        return reset

    def isobox_pull(d: Path) -> None:
        run([ISOBOX, "--root", str(kept_pull), "pull", "-q", image], env=env)

    def isobox_pull_new(d: Path) -> None:
        run([ISOBOX, "--root", str(d / "root"), "pull", "-q", image], env=env)

    tools = [Tool("pull + unpack", "isobox pull", f"isobox --root <root> pull -q {image}",
                  isobox_pull, emptied(kept_pull)),
             Tool("pull + unpack", "isobox pull, new root",
                  f"isobox --root <new> pull -q {image}", isobox_pull_new)]
    if shutil.which("skopeo") and shutil.which("umoci"):
        def skopeo_umoci(d: Path) -> None:
            run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image}",
                 f"oci:{d / 'oci'}:latest"])
            run(["umoci", "unpack", "--image", f"{d / 'oci'}:latest", str(d / "bundle")])

        tools.append(Tool("pull + unpack", "skopeo+umoci",
                          f"skopeo copy --src-tls-verify=false docker://{image} "
                          "oci:<fresh>:latest && umoci unpack --image <fresh>:latest <bundle>",
                          skopeo_umoci))
    else:
        notes.append("skopeo+umoci: not installed (apt-get install skopeo umoci), skipped")
    if docker is not None:
        def docker_pull(d: Path) -> None:
            docker("pull", "-q", image)

        tools.append(Tool("pull + unpack", "docker pull", f"docker pull -q {image}",
                          docker_pull, lambda d: docker.reset()))

    def isobox_load(d: Path) -> None:
        run([ISOBOX, "--root", str(kept_load), "load", "-i", str(archive)], env=env)

    def isobox_load_new(d: Path) -> None:
        run([ISOBOX, "--root", str(d / "root"), "load", "-i", str(archive)], env=env)

    tools.append(Tool("load", "isobox load", "isobox --root <root> load -i bench.tar",
                      isobox_load, emptied(kept_load)))
    tools.append(Tool("load", "isobox load, new root",
                      "isobox --root <new> load -i bench.tar", isobox_load_new))
    if docker is not None:
        def docker_load(d: Path) -> None:
            docker("load", "-q", "-i", str(archive))

        tools.append(Tool("load", "docker load", "docker load -i bench.tar", docker_load,
                          lambda d: docker.reset()))
    return tools


def one_round(tool: Tool, work: Path, record: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="round-", dir=work))
    try:
        start = time.perf_counter()
        tool.timed(folder)
        elapsed = time.perf_counter() - start
        if record:
            tool.samples.append(elapsed)
    finally:
        tool.reset(folder)
        shutil.rmtree(folder, ignore_errors=True)
        # Write back (and discard) what this round left, untimed, so that no
        # tool pays for the previous one's dirty pages.
        os.sync()


def summarise(tools: list[Tool], mbytes: float) -> list[dict[str, Any]]:
    rows = []
    for group in dict.fromkeys(t.group for t in tools):
        members = [t for t in tools if t.group == group and t.samples]
        fastest = min(statistics.median(t.samples) for t in members)
        for t in members:
            median = statistics.median(t.samples)
            rows.append({"group": group, "tool": t.name, "n": len(t.samples),
                         "median_s": round(median, 3), "min_s": round(min(t.samples), 3),
                         "max_s": round(max(t.samples), 3),
                         "mb_per_s": round(mbytes / median, 1),
                         "ratio_to_fastest": round(median / fastest, 2),
                         "command": t.command})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"| {'group':<13} | {'tool':<21} | {'median s':>8} | {'min s':>6} | "
             f"{'max s':>6} | {'MB/s':>6} | {'ratio to fastest':>16} |",
             f"|{'-' * 15}|{'-' * 23}|{'-' * 9}:|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|{'-' * 17}:|"]
    for r in rows:
        lines.append(f"| {r['group']:<13} | {r['tool']:<21} | {r['median_s']:>8.2f} | "
                     f"{r['min_s']:>6.2f} | {r['max_s']:>6.2f} | {r['mb_per_s']:>6.1f} | "
                     f"{r['ratio_to_fastest']:>15.2f}x |")
    return "\n".join(lines)


# ---------------------------------------------------------------- profile


def profile_pull(host: str, work: Path, top: int = 25) -> str:
    """cProfile of one in-process ImageService.pull into a fresh root."""
    import cProfile
    import io
    import pstats

    from isobox.engine.config import load_config
    from isobox.engine.images import ImageService

    service = ImageService(load_config(str(work / "profile-root"), env={}))
    profiler = cProfile.Profile()
    try:
        start = time.perf_counter()
        profiler.runcall(service.pull, f"{host}/bench:latest")
        wall = time.perf_counter() - start
    finally:
        service.close()
        shutil.rmtree(work / "profile-root", ignore_errors=True)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"in-process pull: {wall:.2f} s wall (main thread profiled; download "
              "threads run beside it)\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def registry(work: Path) -> Iterator[str]:
    from registry_server import REGISTRY_BINARY, missing_tools, registry_server

    if missing_tools(REGISTRY_BINARY):
        raise SystemExit(missing_tools(REGISTRY_BINARY))
    with registry_server(work / "registry") as server:
        yield server.host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one in-process ImageService.pull")
    parser.add_argument("--no-docker", action="store_true", help="leave dockerd out")
    parser.add_argument("--workdir", default="/tmp",
                        help="where every tool writes (default /tmp; keep the path short)")
    a = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark needs root", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(f"# {message}", file=sys.stderr, flush=True)

    archive = bench_archive(log)
    facts = image_facts(archive)
    mbytes = sum(facts["layer_bytes"]) / 1e6
    notes: list[str] = []
    # Short path: dockerd's unix sockets under it must fit in 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="isobox-bench-img-", dir=a.workdir))
    docker: Dockerd | None = None
    profile = ""
    try:
        with registry(work) as host:
            source = work / "source"
            isobox(source, "load", "-i", str(BENCH_OCI_ARCHIVE), work=work)  # gzip layers
            isobox(source, "tag", BENCH_TAG, f"{host}/bench:latest", work=work)
            isobox(source, "push", "-q", f"{host}/bench:latest", work=work)
            shutil.rmtree(source)
            if not a.no_docker:
                (work / "docker").mkdir()
                docker = Dockerd(work / "docker", host)
                problem = docker.start()
                if problem:
                    notes.append(f"docker: skipped, {problem}")
                    docker = None
            tools = contenders(host, archive, work, docker, notes)
            log(f"image: {facts['layers']} layers, {mbytes:.1f} MB uncompressed; "
                f"{a.warmup} warm-up + {a.rounds} rounds of {', '.join(t.name for t in tools)}")
            for i in range(a.warmup + a.rounds):
                shift = i % len(tools)
                for tool in tools[shift:] + tools[:shift]:
                    one_round(tool, work, record=i >= a.warmup)
                log(f"round {i + 1}/{a.warmup + a.rounds} done")
            rows = summarise(tools, mbytes)
            if a.profile:
                profile = profile_pull(host, work)
    finally:
        if docker is not None:
            docker.stop()
        shutil.rmtree(work, ignore_errors=True)

    meta = {"date": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"kernel {platform.release()}",
            "python": platform.python_version(), "rounds": a.rounds, "warmup": a.warmup,
            "image": {"layers": facts["layers"], "uncompressed_mb": round(mbytes, 1),
                      "layer_mb": [round(s / 1e6, 1) for s in facts["layer_bytes"]]},
            "workdir": a.workdir, "filesystem": _filesystem(os.path.realpath(a.workdir)),
            "versions": _versions(docker), "notes": notes}
    if a.json:
        print(json.dumps({"meta": meta, "results": rows, "profile": profile or None},
                         indent=2))
        return 0
    print(f"{meta['date']}  {meta['machine']}  python {meta['python']}  "
          f"rounds={a.rounds} warmup={a.warmup}  {a.workdir}: {meta['filesystem']}")
    print(f"image: {facts['layers']} layers, {mbytes:.1f} MB uncompressed "
          f"({', '.join(f'{s:.1f}' for s in meta['image']['layer_mb'])} MB)")
    for name, version in meta["versions"].items():
        print(f"  {name}: {version}")
    for note in notes:
        print(f"  note: {note}")
    print(render(rows))
    if profile:
        print(profile)
    return 0


def _filesystem(path: str) -> str:
    """The filesystem type of ``path``, and for ext4 whether it has a journal:
    without one, ext4 skips recently freed inodes one by one on every file it
    creates, which makes file creation much slower right after a big delete
    (see docs/benchmarks.md)."""
    best, fstype, device = "", "?", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4]
            rest = fields[fields.index("-") + 1:]
            if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) \
                    and len(mount_point) >= len(best):
                best, fstype, device = mount_point, rest[0], rest[1]
    if fstype != "ext4":
        return fstype
    try:
        with open(f"/sys/fs/ext4/{os.path.basename(device)}/journal_task") as f:
            task = f.read().strip()
    except OSError:
        return "ext4"
    return "ext4, no journal" if task in ("", "<none>") else "ext4, journaled"


def _versions(docker: Dockerd | None) -> dict[str, str]:
    out = {}
    for name, argv in (("skopeo", ["skopeo", "--version"]), ("umoci", ["umoci", "--version"]),
                       ("docker-registry", ["docker-registry", "--version"])):
        if shutil.which(argv[0]):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            out[name] = (p.stdout or p.stderr).strip().splitlines()[0] if (
                p.stdout or p.stderr) else "?"
    out["dockerd"] = docker.version if docker is not None else "not used"
    return out


if __name__ == "__main__":
    sys.exit(main())
