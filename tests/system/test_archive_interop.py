"""Archives against the real Docker and skopeo: our busybox image, saved by
us, loads and runs in dockerd; what dockerd saves, we load unchanged.

A private dockerd (its own data root, exec root, socket, no bridge, no
iptables) runs in its own mount namespace for this module; DOCKER_HOST
points at it, never at a system daemon. Skipped when dockerd cannot start.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerd_support import running_dockerd

from isobox.images import archive
from isobox.images.bootstrap import bootstrap_busybox
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords
from isobox.oci import image_spec as spec
from isobox.tools.private_dockerd import PrivateDockerd

SKOPEO = shutil.which("skopeo")
IMAGE = "isobox-interop/busybox:latest"


Docker = PrivateDockerd


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    yield from running_dockerd(timeout=30)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContentStore, ImageRecords, str]:
    if shutil.which("busybox") is None:
        pytest.skip("needs busybox-static")
    base = tmp_path_factory.mktemp("ours")
    store, records = ContentStore(str(base / "store")), ImageRecords(str(base / "db"))
    return store, records, bootstrap_busybox(store, records, ref=IMAGE)


def _save_file(store: ContentStore, records: ImageRecords, names: list[str], path: Path,
               fmt: archive.Format = "docker") -> Path:
    with open(path, "wb") as f:
        archive.save(store, records, names, f, format=fmt)
    return path


def test_our_archive_loads_and_runs_in_docker(
        docker: Docker, ours: tuple[ContentStore, ImageRecords, str], tmp_path: Path) -> None:
    store, records, image_id = ours
    path = _save_file(store, records, [IMAGE], tmp_path / "ours.tar")
    assert f"Loaded image: {IMAGE}" in docker("load", "-i", str(path)).stdout
    assert docker("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip() == image_id
    run = docker("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "echo ok")
    assert run.stdout == "ok\n"


def test_docker_saved_images_load_unchanged(
        docker: Docker, ours: tuple[ContentStore, ImageRecords, str], tmp_path: Path) -> None:
    store, records, image_id = ours
    docker("load", "-i", str(_save_file(store, records, [IMAGE], tmp_path / "ours.tar")))
    derived = "isobox-interop/derived:1"
    docker("run", "--name", "isobox-interop-c1", "--network", "none", IMAGE,
           "sh", "-c", "echo hi > /hello && rm /etc/group && mkdir -p /opt/x")
    try:
        docker("commit", "--change", "CMD [\"cat\", \"/hello\"]", "isobox-interop-c1", derived)
    finally:
        docker("rm", "-f", "isobox-interop-c1", check=False)
    saved = tmp_path / "docker.tar"
    docker("save", "-o", str(saved), IMAGE, derived)

    base = tmp_path / "loaded"
    store2, records2 = ContentStore(str(base / "store")), ImageRecords(str(base / "db"))
    with open(saved, "rb") as f:
        loaded = {tags: image for image in archive.load(store2, records2, f)
                  for tags in image.tags}
    assert loaded["isobox-interop/busybox:latest"].id == image_id
    assert store2.read(image_id) == store.read(image_id)  # the config, byte for byte
    derived_id = docker("image", "inspect", "-f", "{{.Id}}", derived).stdout.strip()
    assert loaded[derived].id == derived_id
    config = spec.decode_config(store2.read(derived_id))
    assert config.config is not None and config.config.cmd == ["cat", "/hello"]
    manifest = spec.decode_manifest(store2.read(loaded[derived].manifest))
    assert [d.digest for d in manifest.layers] == config.rootfs.diff_ids
    assert len(manifest.layers) == 2 and all(store2.exists(d.digest) for d in manifest.layers)

    # ...and back: our save of Docker's two-layer image runs in Docker again.
    docker("rmi", derived)
    docker("load", "-i", str(_save_file(store2, records2, [derived], tmp_path / "back.tar")))
    assert docker("run", "--rm", "--network", "none", derived).stdout == "hi\n"
    check = docker("run", "--rm", "--network", "none", derived, "sh", "-c",
                   "test -e /etc/group && echo present || echo gone")
    assert check.stdout == "gone\n"


@pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")
def test_skopeo_reads_our_archives(ours: tuple[ContentStore, ImageRecords, str],
                                   tmp_path: Path) -> None:
    store, records, image_id = ours
    docker_tar = _save_file(store, records, [IMAGE], tmp_path / "d.tar")
    oci_tar = _save_file(store, records, [IMAGE], tmp_path / "o.tar", "oci")
    diff_ids = spec.decode_config(store.read(image_id)).rootfs.diff_ids
    for transport in (f"docker-archive:{docker_tar}", f"oci-archive:{docker_tar}",
                      f"oci-archive:{oci_tar}"):
        result = subprocess.run([SKOPEO or "skopeo", "inspect", transport], capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{transport}: {result.stderr}"
        doc = json.loads(result.stdout)
        assert (doc["Os"], doc["Architecture"]) == ("linux", "amd64")
        if transport.startswith("docker-archive") or transport.endswith("d.tar"):
            assert doc["Layers"] == diff_ids  # uncompressed: layer digest == diff_id
        else:
            assert doc["Digest"] == records.get(image_id).manifest
    raw = subprocess.run([SKOPEO or "skopeo", "inspect", "--config", "--raw",
                          f"docker-archive:{docker_tar}"], capture_output=True, timeout=60,
                         stdin=subprocess.DEVNULL, check=True).stdout
    assert raw == store.read(image_id)


def test_our_archive_loads_through_a_pipe(ours: tuple[ContentStore, ImageRecords, str],
                                          tmp_path: Path) -> None:
    """load reads a non-seekable stream, as from ``docker save | isobox load``."""
    store, records, image_id = ours
    data = io.BytesIO()
    archive.save(store, records, [IMAGE], data)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as pipe_in:
            pipe_in.write(data.getvalue())

    feeder = threading.Thread(target=feed)
    feeder.start()
    base = tmp_path / "piped"
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            (loaded,) = archive.load(ContentStore(str(base / "s")),
                                     ImageRecords(str(base / "db")), pipe)
    finally:
        feeder.join(timeout=30)
    assert loaded.id == image_id
