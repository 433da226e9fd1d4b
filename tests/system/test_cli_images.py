"""The image commands as a Docker user drives them: the real ``isobox``
binary in a subprocess, a private ``--root`` per module (or per test where a
test needs a clean slate), and Docker's output shapes asserted.

Every run gets an explicit environment: ``HOME`` and ``ISOBOX_CONFIG`` in a
temporary folder (credentials never touch the real ``~/.isobox``), no
inherited ``ISOBOX_ROOT``. The registry parts use Debian's docker-registry on
loopback (``tests/registry_server.py``) and skip, saying why, without it.
Nothing here mounts: the leak check of ``tests/conftest.py`` holds as is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli_containers_support import Isobox as SharedIsobox
from cli_containers_support import table

from registry_server import (
    REGISTRY_BINARY,
    RegistryServer,
    missing_tools,
    registry_server,
)

ISOBOX = str(Path(sys.executable).parent / "isobox")
SHORT_ID = re.compile(r"[0-9a-f]{12}")
FULL_ID = re.compile(r"sha256:[0-9a-f]{64}")
DOCKER_SIZE = re.compile(r"\d+(\.\d+)?(B|kB|MB|GB)")

needs_busybox = pytest.mark.skipif(shutil.which("busybox") is None,
                                   reason="needs the host's busybox (apt-get install "
                                          "busybox-static)")
needs_registry = pytest.mark.skipif(missing_tools(REGISTRY_BINARY) is not None,
                                    reason=missing_tools(REGISTRY_BINARY) or "")
needs_htpasswd = pytest.mark.skipif(missing_tools("htpasswd") is not None,
                                    reason=missing_tools("htpasswd") or "")
pytestmark = needs_busybox


# ---------------------------------------------------------------- driving the binary


class Isobox(SharedIsobox):
    """The shared ``isobox`` driver (cli_containers_support), with the image
    tests' longer default timeout (pulls, pushes) and views of the store."""

    def __init__(self, root: Path, config: Path) -> None:
        super().__init__(root, config.parent)
        self.config = config
        self.env["ISOBOX_CONFIG"] = str(config)

    def __call__(self, *args: str, check: bool = True, input: bytes | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return super().__call__(*args, check=check, input=input, timeout=timeout)

    def image_id(self, name: str) -> str:
        return self("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()

    def blobs(self) -> set[str]:
        folder = self.root / "content" / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in folder.iterdir()} if folder.is_dir() else set()

    def layer_dirs(self) -> set[str]:
        folder = self.root / "snapshots" / "snapshots"
        return {f"sha256:{p.name}" for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-images")


@pytest.fixture
def new_root(base: Path, tmp_path: Path) -> Iterator[Any]:
    """Make empty roots (sharing one config dir per test) on demand."""
    made = []

    def make(name: str = "root") -> Isobox:
        box = Isobox(tmp_path / name, tmp_path / "home" / "isobox-config")
        made.append(box)
        return box

    yield make
    for box in made:
        shutil.rmtree(box.root, ignore_errors=True)


@pytest.fixture
def busybox(new_root: Any) -> Isobox:
    """A fresh root holding busybox:latest, for tests that change things."""
    box: Isobox = new_root()
    box("image", "bootstrap", "busybox")
    return box


@pytest.fixture(scope="module")
def shared(base: Path) -> Iterator[Isobox]:
    """One root for the read-only tests: busybox, a labelled image and a
    dangling one."""
    box = Isobox(base / "shared", base / "home" / "isobox-config")
    box("image", "bootstrap", "busybox")
    archive = docker_archive([
        ("labelled:1", [layer({"etc/team": b"blue\n"})], {"Labels": {"com.example.team": "blue"}}),
        (None, [layer({"etc/orphan": b"x\n"})], {}),
    ])
    box("load", input=archive)
    yield box
    shutil.rmtree(box.root, ignore_errors=True)


# ---------------------------------------------------------------- images made here


def layer(files: dict[str, bytes]) -> bytes:
    """A reproducible, uncompressed layer tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            parts = name.split("/")
            for i in range(1, len(parts)):
                info = tarfile.TarInfo("/".join(parts[:i]))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                if info.name not in tar.getnames():
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(files[name]), 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return raw.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256(f"{out[-1]} {diff_id}".encode()))
    return out


def image_config(layers: list[bytes], extra: dict[str, Any]) -> bytes:
    config = {"Cmd": ["sh"], "Env": ["PATH=/bin"], **extra}
    doc = {"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
           "config": config,
           "rootfs": {"type": "layers", "diff_ids": [sha256(x) for x in layers]},
           "history": [{"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"}
                       for i in range(len(layers))]}
    return json.dumps(doc, sort_keys=True).encode()


def docker_archive(images: list[tuple[str | None, list[bytes], dict[str, Any]]]) -> bytes:
    """A ``docker save`` archive (legacy layout) of (tag or None, layers, config)."""
    files: dict[str, bytes] = {}
    manifest = []
    for tag, layers, extra in images:
        config = image_config(layers, extra)
        config_name = f"{sha256(config)[7:]}.json"
        files[config_name] = config
        names = []
        for data in layers:
            name = f"{sha256(data)[7:]}/layer.tar"
            files[name] = data
            names.append(name)
        manifest.append({"Config": config_name, "RepoTags": [tag] if tag else None,
                         "Layers": names})
    files["manifest.json"] = json.dumps(manifest).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    return layer(files)


# ---------------------------------------------------------------- images, image ls


def test_images_lists_the_bootstrapped_busybox(busybox: Isobox) -> None:
    rows = table(busybox("images").stdout)
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert len(rows) == 2
    repo, tag, short, created, size = rows[1]
    assert (repo, tag) == ("busybox", "latest")
    assert SHORT_ID.fullmatch(short) and busybox.image_id("busybox").startswith(
        f"sha256:{short}")
    assert created.endswith(" ago")
    assert DOCKER_SIZE.fullmatch(size)
    assert busybox("image", "ls").stdout == busybox("images").stdout


def test_images_quiet_and_no_trunc(shared: Isobox) -> None:
    full = shared.image_id("busybox")
    quiet = shared("images", "-q").stdout.splitlines()
    assert full[7:19] in quiet and all(SHORT_ID.fullmatch(q) for q in quiet)
    assert len(quiet) == len(set(quiet)) == 3
    assert full in shared("images", "-q", "--no-trunc").stdout.splitlines()
    rows = table(shared("images", "--no-trunc", "busybox").stdout)
    assert rows[1][:3] == ["busybox", "latest", full]
    assert FULL_ID.fullmatch(rows[1][2])


def test_images_digests_column(shared: Isobox) -> None:
    rows = table(shared("images", "--digests", "busybox").stdout)
    assert rows[0] == ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    assert rows[1][:3] == ["busybox", "latest", "<none>"]  # never pushed or pulled


def test_images_filters(shared: Isobox) -> None:
    def names(*args: str) -> list[str]:
        out = shared("images", "--format", "{{.Repository}}:{{.Tag}}", *args).stdout
        return sorted(out.splitlines())

    assert names() == ["<none>:<none>", "busybox:latest", "labelled:1"]
    assert names("--filter", "dangling=true") == ["<none>:<none>"]
    assert names("--filter", "dangling=false") == ["busybox:latest", "labelled:1"]
    assert names("--filter", "reference=busybox") == ["busybox:latest"]
    assert names("--filter", "reference=lab*") == ["labelled:1"]
    assert names("--filter", "reference=busybox:latest") == ["busybox:latest"]
    assert names("--filter", "label=com.example.team") == ["labelled:1"]
    assert names("--filter", "label=com.example.team=blue") == ["labelled:1"]
    assert names("--filter", "label=com.example.team=red") == []
    assert names("labelled") == ["labelled:1"]
    bad = shared("images", "--filter", "colour=blue", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ")


def test_reference_filter_lists_only_the_matching_tags(busybox: Isobox) -> None:
    busybox("tag", "busybox", "other:2")
    out = busybox("images", "--format", "{{.Repository}}:{{.Tag}}",
                  "--filter", "reference=other").stdout
    assert out == "other:2\n"


def test_images_format(shared: Isobox) -> None:
    plain = shared("images", "--format", "{{.Repository}}:{{.Tag}}", "busybox").stdout
    assert plain == "busybox:latest\n"
    rows = table(shared("images", "--format", "table {{.Repository}}\t{{.Tag}}\t{{.ID}}",
                        "busybox").stdout)
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE ID"]
    assert rows[1][:2] == ["busybox", "latest"] and SHORT_ID.fullmatch(rows[1][2])
    (line,) = shared("images", "--format", "{{json .}}", "busybox").stdout.splitlines()
    doc = json.loads(line)
    assert {"Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository",
            "SharedSize", "Size", "Tag", "UniqueSize", "VirtualSize"} <= set(doc)
    assert (doc["Repository"], doc["Tag"], doc["Digest"]) == ("busybox", "latest", "<none>")
    # Docker's CreatedAt, also for an image made at the epoch
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", doc["CreatedAt"])


# ---------------------------------------------------------------- inspect, history


def test_image_inspect_has_dockers_keys(shared: Isobox) -> None:
    (doc,) = json.loads(shared("image", "inspect", "busybox").stdout)
    assert FULL_ID.fullmatch(doc["Id"])
    assert doc["RepoTags"] == ["busybox:latest"]
    assert doc["RepoDigests"] == []
    assert doc["Config"]["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in doc["Config"]["Env"])
    assert doc["RootFS"]["Type"] == "layers"
    assert len(doc["RootFS"]["Layers"]) == 1 and FULL_ID.fullmatch(doc["RootFS"]["Layers"][0])
    assert (doc["Os"], doc["Architecture"]) == ("linux", "amd64")
    assert isinstance(doc["Size"], int) and doc["Size"] > 0
    # the same image by short id, and several at once
    both = json.loads(shared("image", "inspect", doc["Id"][7:19], "labelled:1").stdout)
    assert [d["Id"] for d in both] == [doc["Id"], shared.image_id("labelled:1")]
    labelled = json.loads(shared("image", "inspect", "labelled:1").stdout)[0]
    assert labelled["Config"]["Labels"] == {"com.example.team": "blue"}


def test_image_inspect_format(shared: Isobox) -> None:
    out = shared("image", "inspect", "--format",
                 "{{.Os}}/{{.Architecture}} {{json .Config.Cmd}} {{json .RepoTags}}",
                 "busybox").stdout
    assert out == 'linux/amd64 ["sh"] ["busybox:latest"]\n'
    assert shared("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip() == \
        shared.image_id("busybox")
    missing = shared("image", "inspect", "nosuch", check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: No such image: nosuch")


def test_history(shared: Isobox) -> None:
    rows = table(shared("history", "labelled:1").stdout)
    assert rows[0] == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    assert rows[1][0] == shared.image_id("labelled:1")[7:19]
    assert rows[1][2] == "layer 0" and DOCKER_SIZE.fullmatch(rows[1][3])
    rows = table(shared("history", "busybox").stdout)
    assert len(rows) == 2 and "bootstrap busybox" in rows[1][2]
    quiet = shared("history", "-q", "--no-trunc", "busybox").stdout
    assert quiet == shared.image_id("busybox") + "\n"


# ---------------------------------------------------------------- tag, rmi


def test_tag_then_rmi_one_tag_only_untags(busybox: Isobox) -> None:
    image_id = busybox.image_id("busybox")
    busybox("tag", "busybox", "example.com/team/tool:1.0")
    assert busybox.image_id("example.com/team/tool:1.0") == image_id
    out = busybox("rmi", "example.com/team/tool:1.0").stdout
    assert out == "Untagged: example.com/team/tool:1.0\n"
    assert busybox.image_id("busybox") == image_id

    out = busybox("rmi", "busybox").stdout
    assert out == f"Untagged: busybox:latest\nDeleted: {image_id}\n"
    assert busybox("images", "-q").stdout == ""
    assert busybox.blobs() == set() and busybox.layer_dirs() == set()


def test_rmi_of_a_missing_image(busybox: Isobox) -> None:
    result = busybox("rmi", "nosuch", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: No such image: nosuch")
    assert result.stderr.count("\n") == 1


def test_rmi_by_short_id_with_several_tags_needs_force(busybox: Isobox) -> None:
    image_id = busybox.image_id("busybox")
    busybox("tag", "busybox", "second:1")
    refused = busybox("rmi", image_id[7:19], check=False)
    assert refused.returncode == 1
    assert refused.stderr == (f"Error: conflict: unable to delete {image_id[7:19]} (must be "
                              "forced) - image is referenced in multiple repositories\n")
    assert len(table(busybox("images").stdout)) == 3
    forced = busybox("rmi", "-f", image_id[7:19]).stdout.splitlines()
    assert sorted(forced[:-1]) == ["Untagged: busybox:latest", "Untagged: second:1"]
    assert forced[-1] == f"Deleted: {image_id}"
    assert busybox("images", "-q").stdout == ""


def test_rmi_force_by_name_keeps_the_other_tags(busybox: Isobox) -> None:
    """As Docker: ``rmi -f NAME`` removes that name; the image stays while
    another name refers to it."""
    busybox("tag", "busybox", "second:1")
    assert busybox("rmi", "-f", "busybox").stdout == "Untagged: busybox:latest\n"
    assert busybox("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == "second:1\n"


# ---------------------------------------------------------------- save, load, import


def test_save_rmi_load_round_trip(busybox: Isobox, tmp_path: Path) -> None:
    image_id = busybox.image_id("busybox")
    saved = tmp_path / "busybox.tar"
    assert busybox("save", "-o", str(saved), "busybox").stdout == ""
    with tarfile.open(saved) as tar:
        assert "manifest.json" in tar.getnames()
    busybox("rmi", "busybox")
    assert busybox.blobs() == set()
    assert busybox("load", "-i", str(saved)).stdout == "Loaded image: busybox:latest\n"
    assert busybox.image_id("busybox") == image_id
    assert len(busybox.layer_dirs()) == 1  # unpacked again


def test_save_to_a_pipe_and_load_from_stdin(busybox: Isobox, new_root: Any) -> None:
    other: Isobox = new_root("other")
    saver = busybox.popen("save", "busybox", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    loader = other.popen("load", stdin=saver.stdout, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert saver.stdout is not None
    saver.stdout.close()  # the loader holds the pipe now
    out, err = loader.communicate(timeout=120)
    saver.wait(timeout=30)
    assert saver.returncode == 0, saver.stderr.read() if saver.stderr else b""
    if saver.stderr:
        saver.stderr.close()
    assert loader.returncode == 0, err
    assert out == b"Loaded image: busybox:latest\n"
    assert other.image_id("busybox") == busybox.image_id("busybox")


def test_save_without_a_name_is_a_usage_error(busybox: Isobox) -> None:
    result = busybox("save", check=False)
    assert result.returncode == 2 and "Usage:" in result.stderr


def test_import_tarball_with_changes(new_root: Any, tmp_path: Path) -> None:
    box: Isobox = new_root()
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(rootfs_tar({"etc/hello": b"hi\n", "bin/tool": b"#!/bin/sh\n"}))
    out = box("import", "-c", 'CMD ["sh"]', "-c", "ENV A=1", str(tarball), "imported:1").stdout
    assert FULL_ID.fullmatch(out.strip())
    (doc,) = json.loads(box("image", "inspect", "imported:1").stdout)
    assert doc["Id"] == out.strip()
    assert doc["Config"]["Cmd"] == ["sh"]
    assert "A=1" in doc["Config"]["Env"]
    assert len(doc["RootFS"]["Layers"]) == 1

    from_stdin = box("import", "-", "piped:2", input=tarball.read_bytes()).stdout.strip()
    assert FULL_ID.fullmatch(from_stdin)
    assert box.image_id("piped:2") == from_stdin
    assert box("images", "--format", "{{.Repository}}:{{.Tag}}",
               "--filter", "reference=piped").stdout == "piped:2\n"


def test_import_of_a_missing_file_fails_cleanly(new_root: Any, tmp_path: Path) -> None:
    box: Isobox = new_root()
    result = box("import", str(tmp_path / "nothere.tar"), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1


# ---------------------------------------------------------------- prune and GC


def test_image_prune_dangling_then_all(busybox: Isobox, tmp_path: Path) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(rootfs_tar({"etc/dangling": os.urandom(4096)}))
    dangling = busybox("import", str(tarball)).stdout.strip()
    out = busybox("image", "prune", "-f").stdout.splitlines()
    assert out[0] == "Deleted Images:"
    assert f"deleted: {dangling}" in out
    assert re.fullmatch(r"Total reclaimed space: " + DOCKER_SIZE.pattern, out[-1])
    assert out[-1] != "Total reclaimed space: 0B"
    assert busybox("images", "--format", "{{.Repository}}").stdout == "busybox\n"

    again = busybox("image", "prune", "-f").stdout
    assert again == "Total reclaimed space: 0B\n"

    image_id = busybox.image_id("busybox")
    out = busybox("image", "prune", "-a", "-f").stdout.splitlines()
    assert out[:3] == ["Deleted Images:", "untagged: busybox:latest", f"deleted: {image_id}"]
    assert out[-1].startswith("Total reclaimed space: ") and out[-1] != "Total reclaimed space: 0B"
    assert busybox("images", "-q").stdout == ""
    assert busybox.blobs() == set() and busybox.layer_dirs() == set()


def test_rmi_collects_what_no_image_uses(new_root: Any) -> None:
    box: Isobox = new_root()
    shared_layer = layer({"etc/shared": b"both\n" * 1000})
    only_a, only_b = layer({"etc/a": b"a\n"}), layer({"etc/b": b"b\n"})
    box("load", input=docker_archive([("gc/a:1", [shared_layer, only_a], {}),
                                      ("gc/b:1", [shared_layer, only_b], {})]))
    a_id, b_id = box.image_id("gc/a:1"), box.image_id("gc/b:1")
    diff = {name: sha256(data) for name, data in
            (("shared", shared_layer), ("a", only_a), ("b", only_b))}
    chain_a = chain_ids([diff["shared"], diff["a"]])
    chain_b = chain_ids([diff["shared"], diff["b"]])
    assert {a_id, b_id, *diff.values()} <= box.blobs()
    assert len(box.blobs()) == 7  # two configs, two manifests, three layers
    assert box.layer_dirs() == {*chain_a, *chain_b}

    box("rmi", "gc/a:1")
    blobs = box.blobs()
    assert a_id not in blobs and diff["a"] not in blobs
    assert {b_id, diff["shared"], diff["b"]} <= blobs and len(blobs) == 4
    assert box.layer_dirs() == set(chain_b)  # the shared bottom layer stays

    box("rmi", "gc/b:1")
    assert box.blobs() == set() and box.layer_dirs() == set()


# ---------------------------------------------------------------- registry


@pytest.fixture(scope="module")
def registry(base: Path) -> Iterator[RegistryServer]:
    if missing_tools(REGISTRY_BINARY):
        pytest.skip(missing_tools(REGISTRY_BINARY) or "")
    with registry_server(base / "registry") as server:
        yield server


PUSH_DIGEST = re.compile(r"(\S+): digest: (sha256:[0-9a-f]{64}) size: (\d+)")


@needs_registry
def test_push_then_pull_into_a_fresh_root(busybox: Isobox, registry: RegistryServer,
                                          new_root: Any) -> None:
    name = f"{registry.host}/isobox/busybox:v1"
    busybox("tag", "busybox", name)
    flag = ("--insecure-registry", registry.host)
    pushed = busybox(*flag, "push", name).stdout.splitlines()
    assert pushed[0] == f"The push refers to repository [{registry.host}/isobox/busybox]"
    assert sum(line.startswith("The push refers") for line in pushed) == 1
    assert any(re.fullmatch(r"[0-9a-f]{12}: Pushed", line) for line in pushed)
    match = PUSH_DIGEST.fullmatch(pushed[-1])
    assert match and match.group(1) == "v1"
    digest = match.group(2)
    # pushing again transfers nothing
    again = busybox(*flag, "push", name).stdout
    assert "Layer already exists" in again and digest in again

    fresh: Isobox = new_root("fresh")
    pulled = fresh(*flag, "pull", name).stdout.splitlines()
    assert pulled[0] == "v1: Pulling from isobox/busybox"
    assert any(re.fullmatch(r"[0-9a-f]{12}: Pull complete", line) for line in pulled)
    assert pulled[-3:] == [f"Digest: {digest}",
                           f"Status: Downloaded newer image for {name}", name]
    assert fresh.image_id(name) == busybox.image_id("busybox")
    rows = table(fresh("images", "--digests").stdout)
    assert rows[1][:3] == [f"{registry.host}/isobox/busybox", "v1", digest]
    (doc,) = json.loads(fresh("image", "inspect", name).stdout)
    assert doc["RepoDigests"] == [f"{registry.host}/isobox/busybox@{digest}"]
    assert doc["RepoTags"] == [name]
    # the pushing side now knows the digest too
    assert f"{registry.host}/isobox/busybox@{digest}" in json.loads(
        busybox("image", "inspect", name).stdout)[0]["RepoDigests"]
    # pull by digest, quietly, over loopback HTTP without the flag
    by_digest = f"{registry.host}/isobox/busybox@{digest}"
    assert fresh("pull", "-q", by_digest).stdout == f"{by_digest}\n"


@needs_registry
def test_pulling_a_missing_tag_is_one_error_line(registry: RegistryServer,
                                                 new_root: Any) -> None:
    box: Isobox = new_root()
    for name in (f"{registry.host}/isobox/busybox:no-such-tag",
                 f"{registry.host}/isobox/no-such-repo"):
        result = box("pull", name, check=False)
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("Error: ") and "not found" in result.stderr
    assert box("images", "-q").stdout == ""
    assert box.blobs() == set()


@needs_registry
def test_concurrent_pulls_into_one_root(registry: RegistryServer, new_root: Any) -> None:
    source: Isobox = new_root("source")
    layers = [layer({f"data/{i}.bin": os.urandom(3 << 20)}) for i in range(3)]
    name = f"{registry.host}/isobox/concurrent:1"
    source("load", input=docker_archive([(name, layers, {})]))
    source("push", "-q", name)

    box: Isobox = new_root("target")
    pulls = [box.popen("pull", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in pulls]
    for p, (out, err) in zip(pulls, results, strict=True):
        assert p.returncode == 0, (out + err).decode()
    assert box("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout == \
        f"{name} {source.image_id(name)[7:19]}\n"
    assert len(box.blobs()) == 5  # config, manifest, three layers: one copy each
    assert box.layer_dirs() == set(chain_ids([sha256(x) for x in layers]))
    assert list((box.root / "content" / "ingest").iterdir()) == []
    assert list((box.root / "snapshots" / "tmp").iterdir()) == []


def test_first_commands_on_a_fresh_root_race_cleanly(new_root: Any) -> None:
    """Two commands that both create a root's database at once both work
    (SQLite refused one of them while the other switched it to WAL)."""
    for i in range(15):
        box: Isobox = new_root(f"race-{i}")
        procs = [box.popen("images", "-q", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert (p.returncode, out, err) == (0, b"", b"")


@needs_registry
@needs_htpasswd
def test_login_and_logout(busybox: Isobox, new_root: Any, tmp_path: Path) -> None:
    with registry_server(tmp_path / "auth-registry", auth=("alice", "s3cret")) as server:
        name = f"{server.host}/private/busybox:1"
        busybox("tag", "busybox", name)
        denied = busybox("push", name, check=False)
        assert denied.returncode == 1 and "unauthorized" in denied.stderr

        wrong = busybox("login", "-u", "alice", "--password-stdin", server.host,
                        input=b"wrong\n", check=False)
        assert wrong.returncode == 1
        assert wrong.stderr.startswith("Error: ") and wrong.stderr.count("\n") == 1
        assert not (busybox.config / "config.json").exists() or server.host not in \
            json.loads((busybox.config / "config.json").read_text()).get("auths", {})

        ok = busybox("login", "-u", "alice", "--password-stdin", server.host,
                     input=b"s3cret\n")
        assert ok.stdout.splitlines()[-1] == "Login Succeeded"
        creds = busybox.config / "config.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert server.host in json.loads(creds.read_text())["auths"]
        assert not (Path(busybox.env["HOME"]) / ".docker").exists()

        busybox("push", "-q", name)
        other: Isobox = new_root("other")  # same config dir: logged in
        other("pull", "-q", name)
        assert other.image_id(name) == busybox.image_id("busybox")

        out = busybox("logout", server.host).stdout
        assert out == f"Removing login credentials for {server.host}\n"
        assert server.host not in json.loads(creds.read_text()).get("auths", {})
        assert busybox("logout", server.host).stdout == f"Not logged in to {server.host}\n"
        third: Isobox = new_root("third")
        refused = third("pull", name, check=False)
        assert refused.returncode == 1 and "Error: " in refused.stderr
        assert refused.stderr.count("\n") == 1


@needs_registry
def test_build_pull_fetches_the_base_image_again(busybox: Isobox, registry: RegistryServer,
                                                 tmp_path: Path) -> None:
    name = f"{registry.host}/isobox/base:pull"
    flag = ("--insecure-registry", registry.host)
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "Dockerfile").write_text("FROM busybox\nRUN echo v2 > /version\n")
    busybox(*flag, "build", "--network", "none", "-t", name, str(newer))
    busybox(*flag, "push", name)  # the registry has the newer base
    busybox("tag", "busybox", name)  # while the local tag is the older one
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(f'FROM {name}\nCMD ["cat", "/version"]\n')
    busybox(*flag, "build", "--network", "none", "-t", "app:old", str(app))
    assert busybox("run", "--rm", "--network", "none", "app:old", check=False).returncode != 0
    busybox(*flag, "build", "--pull", "--network", "none", "-t", "app:new", str(app))
    assert busybox("run", "--rm", "--network", "none", "app:new").stdout == "v2\n"
