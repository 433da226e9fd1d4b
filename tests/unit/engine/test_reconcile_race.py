"""The engine's reconcile reads a monitor's state.json, then asks whether
the monitor lives. A monitor that wrote its final state and exited in
between must not be taken for one that died: its exit code stands (it used
to be overwritten with 255, "the container's monitor died")."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from isobox.engine import containers as containers_module
from isobox.engine.config import load_config
from isobox.engine.containers import ContainerService
from isobox.engine.images import ImageService

CID = "c" * 64


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ContainerService]:
    config = load_config(str(tmp_path / "root"))
    svc = ContainerService(config, ImageService(config))
    svc.store.insert(id=CID, name="racer", image="busybox", image_id="sha256:" + "0" * 64,
                     request={}, snapshot=CID, runtime="isobox-runtime", isolation="process")
    os.makedirs(svc.dir(CID), exist_ok=True)
    yield svc
    svc.close()


def _write_state(svc: ContainerService, **fields: object) -> None:
    Path(svc.dir(CID), "state.json").write_text(json.dumps(fields))


def test_a_monitor_that_finished_between_the_read_and_the_check_keeps_its_code(
        service: ContainerService, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = 4_000_000  # no such pid: the monitor is gone when asked
    _write_state(service, status="running", pid=12345, shim_pid=monitor)

    def finish_then_answer(pid: int, expected_start: int | None = None) -> bool:
        if pid == monitor:  # it wrote its final state just before it exited
            _write_state(service, status="exited", pid=0, shim_pid=monitor, exit_code=3,
                         finished_at="2026-11-28T00:00:00Z")
        return False

    monkeypatch.setattr(containers_module.proc, "is_alive", finish_then_answer)
    record = service.get(CID)
    assert (record.state["Status"], record.state["ExitCode"]) == ("exited", 3)
    on_disk = json.loads(Path(service.dir(CID), "state.json").read_text())
    assert on_disk["exit_code"] == 3 and "error" not in on_disk


def test_a_monitor_that_really_died_is_recorded_once_as_255(
        service: ContainerService, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_state(service, status="running", pid=4_000_001, shim_pid=4_000_000)
    monkeypatch.setattr(containers_module.proc, "is_alive", lambda pid, expected_start=None: False)
    monkeypatch.setattr(ContainerService, "_cleanup_after_monitor", lambda self, record: None)
    record = service.get(CID)
    assert (record.state["Status"], record.state["ExitCode"]) == ("exited", 255)
    assert "monitor died" in record.state["Error"]
