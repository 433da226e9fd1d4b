"""Containers with Docker's semantics: create, start, stop, kill, remove,
list, inspect, wait, logs. Each running container has a monitor (the shim)
that outlives this process; its state file is the truth about the process,
the SQLite record the truth about the configuration."""

from __future__ import annotations

import json
import os
import shutil
import signal as signals
import time
from collections.abc import Iterator
from typing import Any

from isobox.engine import naming
from isobox.engine.config import EngineConfig
from isobox.engine.container_store import ContainerRecord, ContainerStore
from isobox.engine.images import ImageService
from isobox.errors import Conflict, InvalidArgument, IsoboxError, NotFound, Unavailable
from isobox.linux import proc
from isobox.linux.files import atomic_write

#: A monitor's statuses before its final one.
_UNFINISHED = ("running", "created", "restarting")


def _read_shim_state(path: str) -> dict[str, Any] | None:
    """A monitor's ``state.json``: None if there is none; {} if torn by a
    crash of the host (the monitor's intermediate states are not fsynced:
    that monitor is gone with the host)."""
    try:
        with open(path, "rb") as f:
            shim_state = json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return shim_state if isinstance(shim_state, dict) else {}


class ContainerService:
    def __init__(self, config: EngineConfig, images: ImageService) -> None:
        self.config = config
        self.images = images
        os.makedirs(os.path.join(config.root, "containers"), mode=0o711, exist_ok=True)
        self.store = ContainerStore(os.path.join(config.root, "containers.db"))
        images.in_use = self.store.using_image
        from isobox.engine.networking import Networking

        self.networking = Networking(config.root)

    def close(self) -> None:
        self.store.close()
        self.networking.close()

    # -- paths ------------------------------------------------------------------

    def dir(self, container_id: str) -> str:
        return os.path.join(self.config.root, "containers", container_id)

    @property
    def runtime_root(self) -> str:
        return os.path.join(self.config.run_root, "runtime")

    def log_path(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), f"{container_id}-json.log")

    # -- events -------------------------------------------------------------------

    def event(self, record: ContainerRecord, action: str, **extra: str) -> None:
        attrs = {"image": record.image, "name": record.name, **extra}
        self.store.add_event("container", action, record.id, attrs)

    # -- lookups and reconciliation --------------------------------------------------

    def get(self, ref: str) -> ContainerRecord:
        return self.reconcile(self.store.lookup(ref))

    def reconcile(self, record: ContainerRecord) -> ContainerRecord:
        """Merge what the monitor last wrote with what is really running."""
        path = os.path.join(self.dir(record.id), "state.json")
        shim_state = _read_shim_state(path)
        if shim_state is None:
            return record  # never launched (or launched again: its monitor writes one)
        state = dict(record.state)
        shim_alive = proc.is_alive(int(shim_state.get("shim_pid") or 0))
        if not shim_alive and shim_state.get("status", "created") in _UNFINISHED:
            # It may have written its final state and exited since the read:
            # gone now, it writes no more, so a second read is its last word.
            shim_state = _read_shim_state(path) or shim_state
        status = shim_state.get("status", "created")
        pid = int(shim_state.get("pid") or 0)
        if not shim_alive and status in _UNFINISHED:
            # The monitor died (killed, host crash...): ask the kernel.
            if pid and proc.is_alive(pid):
                status = "running"
            else:
                status = "exited"
                shim_state = self._monitor_lost(record, shim_state, path)
        state.update({
            "Status": status,
            "Running": status in ("running", "paused"),
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": bool(shim_state.get("oom_killed")),
            "Pid": pid if status in ("running", "paused") else 0,
            "ExitCode": int(shim_state.get("exit_code") or 0),
            "Error": shim_state.get("error") or "",
            "StartedAt": shim_state.get("started_at") or state["StartedAt"],
            "FinishedAt": shim_state.get("finished_at") or state["FinishedAt"],
            "RestartCount": int(shim_state.get("restart_count") or 0),
        })
        if status == "running" and (bool(shim_state.get("paused")) if record.isolation == "vm"
                                    else self._frozen(record)):
            state.update({"Status": "paused", "Paused": True})  # a VM: frozen whole by QEMU
        if state != record.state:
            self.store.set_state(record.id, state)
            record.state = state
        if status in ("exited", "dead") and self.networking.attached(self.dir(record.id)):
            self.networking.detach(self.dir(record.id))
        return record

    def _frozen(self, record: ContainerRecord) -> bool:
        path = f"/sys/fs/cgroup/freezer/isobox/{record.id}/freezer.state"
        try:
            with open(path) as f:
                return f.read().strip() == "FROZEN"
        except OSError:
            return False

    def _monitor_lost(self, record: ContainerRecord, shim_state: dict[str, Any],
                      path: str, exit_code: int = 255) -> dict[str, Any]:
        """The monitor died before the container's end: clean up for it, and
        record the end once (the exit status is lost: 255 unless we killed it)
        so that every later look agrees on it."""
        self._cleanup_after_monitor(record)
        shim_state = {**shim_state, "status": "exited", "pid": 0, "exit_code": exit_code,
                      "finished_at": _now_rfc3339(),
                      "error": shim_state.get("error") or "the container's monitor died"}
        try:
            atomic_write(path, json.dumps(shim_state).encode() + b"\n", 0o644)
        except OSError:
            pass
        return shim_state

    def _cleanup_after_monitor(self, record: ContainerRecord) -> None:
        """A monitor that died cannot unmount or delete: do it for it."""
        self._runtime_delete(record)
        self._unmount_rootfs(record)

    def _runtime_delete(self, record: ContainerRecord) -> None:
        """``delete --force`` through the container's own runtime (runc keeps
        its state in its own format)."""
        if record.runtime == "isobox-runtime":
            from isobox.runtime.lifecycle import delete

            try:
                delete(self.runtime_root, record.id, force=True)
            except IsoboxError:
                pass
            return
        from isobox.engine.execs import runtime_binary
        from isobox.linux.run import run

        try:
            run([runtime_binary(record.runtime), "--root", self.runtime_root, "delete",
                 "--force", record.id], check=False)
        except (IsoboxError, OSError, TimeoutError):
            pass

    def _unmount_rootfs(self, record: ContainerRecord) -> None:
        from isobox.images.snapshots import unmount

        rootfs = os.path.join(self.dir(record.id), "bundle", "rootfs")
        try:
            unmount(rootfs, detach=True)
        except (OSError, IsoboxError):
            return
        self._clear_volatile(record)

    def _clear_volatile(self, record: ContainerRecord) -> None:
        """The monitor's rootfs was unmounted for it (in this boot): its
        volatile overlay (--rm) may be mounted again (see isobox.shim.rootfs)."""
        from isobox.shim.rootfs import clear_volatile

        try:
            with open(os.path.join(self.dir(record.id), "shim.json"), "rb") as f:
                mounts = json.loads(f.read()).get("rootfs_mounts") or []
            for m in mounts:
                clear_volatile([str(o) for o in m.get("options") or []])
        except (OSError, ValueError, AttributeError):
            pass

    def monitor_alive(self, record: ContainerRecord) -> bool:
        """Whether this container has a live monitor (one may be left from a
        CLI killed between launching it and starting the container). A
        monitor that wrote its final state is done with the container, even
        in the moment before it exits."""
        shim = self._shim_state(record)
        return shim.get("status") != "exited" and proc.is_alive(int(shim.get("shim_pid") or 0))

    def launch_failed(self, record: ContainerRecord) -> bool:
        """Whether this container's last monitor could not create it (it
        reports so in its state before it exits)."""
        from isobox.shim.client import read_state

        try:
            state = read_state(self.dir(record.id)) or {}
        except (OSError, ValueError):
            return False
        return state.get("status") == "exited" and bool(state.get("error"))

    def ensure_monitor(self, record: ContainerRecord) -> None:
        """Launch the monitor unless a live one already holds the container."""
        if record.isolation == "vm":
            if not self.monitor_alive(record):
                self._launch_vm(record)
            return
        if not self.monitor_alive(record):
            self.launch(record)
        self._attach_network(record)

    def _launch_vm(self, record: ContainerRecord) -> None:
        """A VM's NICs exist before it boots: attach first, then launch."""
        from isobox.engine import vmspec
        from isobox.engine.networking import network_of

        d = self.dir(record.id)
        # Endpoints left from a monitor that died keep their taps: reuse them.
        reuse = self.networking.attached(d)
        nics: list[dict[str, Any]] = []
        if network_of(record.request) is not None and not reuse:
            nics = self.networking.attach_vm(record, d)
        try:
            vmspec.refresh_files(d)
            path = os.path.join(d, "shim.json")
            with open(path, "rb") as f:
                shim = json.loads(f.read())
            if not reuse:
                shim["vm"]["nics"] = nics
            atomic_write(path, json.dumps(shim).encode(), 0o600)
            self.launch(record)
        except BaseException:
            self.networking.detach(d)
            raise

    def reattach_network(self, ref: str, pid: int) -> None:
        """A restart made a new namespace (init ``pid``): old endpoints out, new in."""
        from isobox.engine.networking import network_of

        record = self.store.lookup(ref)  # no reconcile: the monitor is mid-restart
        if network_of(record.request) is None:
            return
        d = self.dir(record.id)
        self.networking.detach(d)
        self.networking.attach(record, d, pid)

    def _attach_network(self, record: ContainerRecord) -> None:
        """Connect the created container to its network before it starts;
        on failure the container is killed and left created."""
        from isobox.engine.networking import network_of

        d = self.dir(record.id)
        if network_of(record.request) is None or self.networking.attached(d):
            return
        try:
            with open(os.path.join(d, "state.json"), "rb") as f:
                pid = int(json.loads(f.read()).get("pid") or 0)
            if not pid:
                raise IsoboxError("the container has no init process to connect")
            self.networking.attach(record, d, pid)
        except BaseException:
            try:
                self.shim(record).stop(signals.SIGKILL, 0)
            except IsoboxError:
                self._kill_without_monitor(record)
            self._wait_monitor_gone(record)
            raise

    # -- create ------------------------------------------------------------------------

    def create(self, request: dict[str, Any], *, name: str | None = None,
               pull: str = "missing", platform: str | None = None,
               progress: Any = None) -> str:
        """Docker's POST /containers/create: ``request`` is its body (Config
        fields, HostConfig, NetworkingConfig). Returns the container id."""
        from isobox.engine import bundle, vmspec

        image_name = request.get("Image") or ""
        if not image_name:
            raise InvalidArgument("an image name is required")
        host = request.get("HostConfig") or {}
        isolation = vmspec.isolation_of(host.get("Isolation") or "",
                                        str(self.config.settings.get("default-isolation") or ""))
        if isolation == "vm" and host.get("Runtime") not in (None, "", "isobox-runtime"):
            raise InvalidArgument(f"--runtime {host.get('Runtime')} cannot run a VM-isolated "
                                  "container: the VM's agent uses isobox's own runtime")
        runtime = host.get("Runtime") or "isobox-runtime"
        if runtime not in ("isobox-runtime", "runc", "crun", "runsc"):
            raise InvalidArgument(f"unknown or invalid runtime name: {runtime}")
        if runtime != "isobox-runtime" and shutil.which(runtime) is None:
            raise Unavailable(f"runtime {runtime} is not installed")
        self.networking.validate(request, isolation=isolation)
        record = self._image_for(image_name, pull, platform, progress)
        cid = naming.new_id()
        snapshot = f"ctr-{cid}"
        if name:
            self.store.insert(id=cid, name=naming.validate_name(name), image=image_name,
                              image_id=record.id, request=request, snapshot=snapshot,
                              runtime=runtime, isolation=isolation)
        else:
            # Two commands may draw the same free name at once: the loser of
            # the UNIQUE constraint draws again (a chosen name is never retried).
            for attempt in range(10):
                try:
                    self.store.insert(
                        id=cid, name=naming.random_name(lambda n: self._name_taken(n)),
                        image=image_name, image_id=record.id, request=request,
                        snapshot=snapshot, runtime=runtime, isolation=isolation)
                    break
                except Conflict:
                    if attempt == 9:
                        raise
        try:
            mounts = self.images.snapshots.prepare(snapshot, self.images.top_layer(record))
            bundle.write(self, self.store.get(cid), record, mounts)
        except BaseException:
            self._forget(cid, snapshot)
            raise
        self.event(self.store.get(cid), "create")
        return cid

    def _name_taken(self, name: str) -> bool:
        try:
            self.store.lookup(name)
        except NotFound:
            return False
        return True

    def _image_for(self, name: str, pull: str, platform: str | None, progress: Any) -> Any:
        if pull not in ("missing", "always", "never"):
            raise InvalidArgument(f"invalid pull option {pull!r}: want missing, always or never")
        if pull == "always":
            self.images.pull(name, platform=platform, progress=progress)
        try:
            record = self.images.get(name)
        except NotFound:
            if pull == "never":
                raise NotFound(f"No such image: {name}") from None
            self.images.pull(name, platform=platform, progress=progress)
            record = self.images.get(name)
        self.images.ensure_unpacked(record)
        return record

    def _forget(self, cid: str, snapshot: str) -> None:
        try:
            self.images.snapshots.remove(snapshot)
        except (IsoboxError, OSError):
            pass
        shutil.rmtree(self.dir(cid), ignore_errors=True)
        self.store.delete(cid)

    # -- lifecycle ------------------------------------------------------------------------

    def shim(self, record: ContainerRecord) -> Any:
        from isobox.shim.client import ShimClient

        return ShimClient(self.dir(record.id))

    def launch(self, record: ContainerRecord) -> None:
        """Start the monitor; the container is then created (not yet started)."""
        from isobox.shim.client import launch

        state_file = os.path.join(self.dir(record.id), "state.json")
        if os.path.exists(state_file):
            os.unlink(state_file)  # a previous run's; the new monitor writes its own
        launch(self.dir(record.id), zygote=self.config.shim_zygote,
               zygote_keep=self.config.shim_zygote_keep)

    def start(self, ref: str) -> ContainerRecord:
        record = self.get(ref)
        status = record.state["Status"]
        if status in ("running", "paused", "restarting"):
            return record
        self.ensure_monitor(record)
        self.shim(record).start()
        record = self.get(record.id)
        self.event(record, "start")
        return record

    def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        record = self.get(ref)
        if record.state["Status"] not in ("running", "paused", "restarting"):
            return
        config = record.request
        if timeout is None:
            timeout = config.get("StopTimeout") or 10
        sig = parse_signal(signal or config.get("StopSignal") or "SIGTERM")
        if record.state["Status"] == "paused":
            self.shim(record).resume()
        try:
            self.shim(record).stop(sig, timeout)
        except IsoboxError:
            self._kill_without_monitor(record)
        record = self.get(record.id)
        self.networking.detach(self.dir(record.id))
        self.event(record, "kill", signal=str(sig))
        self.event(record, "die", exitCode=str(record.state["ExitCode"]))
        self.event(record, "stop")

    def _kill_without_monitor(self, record: ContainerRecord) -> None:
        """The monitor is gone: kill and delete through the runtime, and record
        the end (SIGKILL: 137)."""
        self._runtime_delete(record)
        path = os.path.join(self.dir(record.id), "state.json")
        try:
            with open(path, "rb") as f:
                shim_state = json.loads(f.read())
        except (OSError, ValueError):
            shim_state = {}
        if shim_state.get("status") != "exited" and not self.monitor_alive(record):
            self._monitor_lost(record, shim_state, path, 128 + signals.SIGKILL)
        else:
            self._unmount_rootfs(record)

    def kill(self, ref: str, signal: str = "KILL") -> None:
        record = self.get(ref)
        if record.state["Status"] not in ("running", "paused", "restarting"):
            raise Conflict(f"Cannot kill container: {record.id}: Container {record.id} is "
                           "not running")
        sig = parse_signal(signal)
        self.shim(record).kill(sig)
        self.event(record, "kill", signal=str(sig))

    def restart(self, ref: str, timeout: int | None = None) -> None:
        self.stop(ref, timeout)
        self.start(ref)
        self.event(self.get(ref), "restart")

    def pause(self, ref: str) -> None:
        record = self.get(ref)
        if record.state["Status"] != "running":
            raise Conflict(f"Container {record.id} is not running")
        self.shim(record).pause()
        self.event(record, "pause")

    def unpause(self, ref: str) -> None:
        record = self.get(ref)
        if record.state["Status"] != "paused":
            raise Conflict(f"Container {record.id} is not paused")
        self.shim(record).resume()
        self.event(record, "unpause")

    def wait(self, ref: str, condition: str = "not-running") -> int:
        record = self.get(ref)
        if record.state["Status"] in ("running", "paused", "restarting"):
            try:
                code, _ = self.shim(record).wait()
                record = self.get(record.id)
                return int(record.state["ExitCode"]) if code is None else int(code)
            except IsoboxError:
                record = self.get(record.id)
        return int(record.state["ExitCode"])

    def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> str:
        record = self.get(ref)
        status = record.state["Status"]
        running = status in ("running", "paused", "restarting")
        if running and not force:
            raise Conflict(f"You cannot remove a running container {record.id}. Stop the "
                           "container before attempting removal or force remove")
        # A created container has a monitor when the CLI that started it was
        # killed before the start; an exited one while its monitor finishes.
        if running or (status == "created" and self.monitor_alive(record)):
            try:
                self.shim(record).stop(signals.SIGKILL, 0)
            except IsoboxError:
                self._kill_without_monitor(record)
        # Container deleted, rootfs unmounted; the monitor may still be exiting.
        monitor = self._wait_monitor_done(record)
        lock = self._take_monitor_lock(record)
        try:
            self._unmount_rootfs(record)  # left by a create killed while it looked at the image
            self.networking.detach(self.dir(record.id))
            self._forget(record.id, record.snapshot)
            self.event(record, "destroy")
        finally:
            if lock >= 0:
                os.close(lock)
            if monitor >= 0:  # gone by now, as a rule: no monitor outlives rm
                _exited(monitor, 5.0)
                os.close(monitor)
        return record.id

    def _take_monitor_lock(self, record: ContainerRecord) -> int:
        """The container's monitor lock (``isobox.shim.config.SHIM_LOCK``),
        held and unlinked: from now on no monitor touches the container (a
        later one finds it gone and gives up). A monitor holds it until its
        final state. One still being launched (its CLI killed, or another
        command racing this one) is let finish its create, which only it can
        undo, and is then stopped like any other. Its fd, or -1 for a
        container never launched."""
        from isobox.linux.files import flock_within
        from isobox.shim.client import LAUNCH_TIMEOUT
        from isobox.shim.config import SHIM_LOCK

        path = os.path.join(self.dir(record.id), SHIM_LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return -1
        stopped: list[bool] = []

        def stop_once_it_serves() -> None:
            # No pidfd to wait on: the holder may not have said who it is yet.
            if not stopped and self.monitor_alive(record):
                try:
                    self.shim(record).stop(signals.SIGKILL, 0)
                    stopped.append(True)
                except (IsoboxError, OSError):
                    pass

        if not flock_within(fd, LAUNCH_TIMEOUT, stop_once_it_serves):
            os.close(fd)
            raise Unavailable(f"container {record.id[:12]}: its monitor does not let go of it")
        os.unlink(path)
        return fd

    def _wait_monitor_done(self, record: ContainerRecord, timeout: float = 15) -> int:
        """Until the monitor is done with the container: its final state
        written (it writes "exited" only once the runtime has deleted the
        container, the rootfs is unmounted and its socket closed: what is left
        of it is exiting, and touches nothing of the container's), or the
        monitor gone. Returns a pidfd of a monitor still exiting (-1 if none),
        for the caller to wait on once it has done its own work; waits on a
        pidfd too, never by sleeps (a 5 ms poll here was a fifth of ``run
        --rm``'s time after the container's start)."""
        deadline = time.monotonic() + timeout
        while True:
            self.reconcile(record)  # a monitor that died: the end recorded for it
            shim = self._shim_state(record)
            pidfd = _pidfd(int(shim.get("shim_pid") or 0))
            if pidfd < 0 or shim.get("status") == "exited":
                return pidfd
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    return -1
                _exited(pidfd, min(left, 0.05))  # its exit, or a look at its state again
            finally:
                os.close(pidfd)

    def _wait_monitor_gone(self, record: ContainerRecord) -> None:
        monitor = self._wait_monitor_done(record)
        if monitor >= 0:
            _exited(monitor, 5.0)
            os.close(monitor)

    def _shim_state(self, record: ContainerRecord) -> dict[str, Any]:
        try:
            return _read_shim_state(os.path.join(self.dir(record.id), "state.json")) or {}
        except OSError:
            return {}

    def rename(self, ref: str, new_name: str) -> None:
        record = self.get(ref)
        new_name = naming.validate_name(new_name)
        self.store.rename(record.id, new_name)
        self.event(record, "rename", oldName="/" + record.name)

    # -- listing -----------------------------------------------------------------------

    def records(self, *, all_containers: bool = False) -> list[ContainerRecord]:
        records = [r for r in map(self.reconcile, self.store.all())
                   if not self._auto_removed(r)]
        if not all_containers:
            records = [r for r in records if r.state["Running"]]
        return records

    def _auto_removed(self, record: ContainerRecord) -> bool:
        """``run -d --rm``: Docker's daemon removes the container when it
        exits; without a daemon the next listing does, once its monitor is gone."""
        host = record.request.get("HostConfig") or {}
        if (not host.get("AutoRemove") or record.state["Status"] != "exited"
                or self.monitor_alive(record)):
            return False
        try:
            self.remove(record.id, force=True)
        except IsoboxError:
            return False
        return True

    def inspect(self, ref: str) -> dict[str, Any]:
        from isobox.engine import views

        record = self.get(ref)
        out = views.inspect(record, self.dir(record.id), record.image_id,
                            self.log_path(record.id), self._merged_config(record))
        settings = self.networking.settings(self.dir(record.id))
        if settings is not None:
            out["NetworkSettings"] = settings
        return out

    def _merged_config(self, record: ContainerRecord) -> dict[str, Any] | None:
        """The request's Config over the image's, as Docker's inspect shows it."""
        from isobox.engine import api_types, runspec

        try:
            image = self.images.config_of(self.images.get(record.image_id))
            merged = runspec.merge_config(api_types.decode_create(record.request), image)
        except (IsoboxError, OSError, ValueError):
            return None  # the image is gone: the request alone
        out: dict[str, Any] = json.loads(api_types.encode(merged))
        return out

    def size(self, ref: str) -> int:
        """Bytes in the container's writable layer."""
        record = self.store.lookup(ref)
        try:
            return int(self.images.snapshots.usage(record.snapshot))
        except (IsoboxError, OSError):
            return 0

    def prune(self) -> tuple[list[str], int]:
        removed, freed = [], 0
        for record in self.records(all_containers=True):
            if record.state["Status"] in ("exited", "created", "dead"):
                freed += self.size(record.id)
                self.remove(record.id)
                removed.append(record.id)
        return removed, freed

    # -- logs -----------------------------------------------------------------------

    def log_entries(self, ref: str, *, follow: bool = False, tail: int | None = None,
                    since: float | None = None, until: float | None = None
                    ) -> Iterator[tuple[str, str, str]]:
        """(stream, text, RFC3339 time) records of the json-file log."""
        from isobox.engine.logs import read_log

        record = self.get(ref)
        def running() -> bool:
            return self.reconcile(self.store.get(record.id)).state["Status"] in (
                "running", "paused", "restarting")
        yield from read_log(self.log_path(record.id), follow=follow, tail=tail, since=since,
                            until=until, running=running)


def _pidfd(pid: int) -> int:
    """A pidfd of live process ``pid`` (a zombie is not live), or -1."""
    if pid <= 0:
        return -1
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    if proc.is_alive(pid):  # after the open: the pidfd names this process
        return pidfd
    os.close(pidfd)
    return -1


def _exited(pidfd: int, timeout: float) -> bool:
    """Whether the pidfd's process exits within ``timeout`` seconds (a pidfd
    is readable once its process has exited, reaped or not)."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _now_rfc3339() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def parse_signal(text: str | int) -> int:
    if isinstance(text, int):
        return text
    raw = text.strip().upper()
    if raw.isdigit():
        return int(raw)
    if not raw.startswith("SIG"):
        raw = "SIG" + raw
    try:
        return int(signals.Signals[raw])
    except KeyError:
        raise InvalidArgument(f"invalid signal: {text}") from None
