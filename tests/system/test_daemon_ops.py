"""isoboxd as an operator runs it: containers outlive the daemon and a new
daemon serves them; TCP only with TLS client certificates (plain TCP only
when asked for, with a warning); a listening socket handed down as
systemd's socket activation does; the CLI and the daemon on one root."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from daemon_support import ISOBOXD, Daemon, base_env, needs_docker, running_daemon

pytestmark = needs_docker

NONE = ("--network", "none")


def test_containers_outlive_the_daemon(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon:
        daemon.docker("run", "-d", "--name", "survivor", *NONE, "busybox", "sh", "-c",
                      "echo before; sleep 60")
        launchers = _zygotes(daemon)
        assert len(launchers) == 1  # the warm shim launcher the daemon started
        daemon.stop(signal.SIGKILL)
        assert until_gone(launchers)  # it dies with its daemon; the container does not
        # The CLI, on the same root, sees it running without any daemon.
        assert daemon.isobox("ps", "--format", "{{.Names}}").stdout == "survivor\n"
        daemon.start()
        assert daemon.docker("ps", "--format", "{{.Names}}").stdout == "survivor\n"
        assert daemon.docker("logs", "survivor").stdout == "before\n"
        assert daemon.docker("exec", "survivor", "echo", "still here").stdout == "still here\n"
        daemon.stop()
        assert daemon.isobox("ps", "-q").stdout.strip()
        daemon.start()
        # What the CLI makes, the daemon sees, and the other way round.
        daemon.isobox("run", "-d", "--name", "from-cli", *NONE, "busybox", "sleep", "60")
        names = set(daemon.docker("ps", "--format", "{{.Names}}").stdout.split())
        assert names == {"survivor", "from-cli"}
        daemon.docker("rm", "-f", "from-cli", "survivor")
        assert daemon.isobox("ps", "-aq").stdout == ""


def _zygotes(daemon: Daemon) -> list[int]:
    """pids of the daemon's shim launchers (its children running isobox.shim.zygote;
    the shims they fork carry the same command line but are init's children)."""
    assert daemon.proc is not None
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError):
            continue
        if "isobox.shim.zygote" in argv and ppid == daemon.proc.pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def until_gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _daemon_exit(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISOBOXD, *args], env=base_env(home), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_plain_tcp_is_refused(tmp_path: Path) -> None:
    result = _daemon_exit(["--root", str(tmp_path / "root"), "-H", "tcp://127.0.0.1:0"],
                          tmp_path)
    assert result.returncode == 1
    assert "without TLS client verification" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "isoboxd exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("isoboxd did not listen")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_insecure_tcp_warns(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ISOBOXD, "--root", str(tmp_path / "root"), "-H",
                                 f"tcp://127.0.0.1:{port}", "--insecure-tcp"],
                                env=base_env(tmp_path), stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        assert "WITHOUT TLS" in log.read_text()
    finally:
        _stop(proc)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_client_certificates(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem",
             "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca", cwd=certs)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=certs)
        (certs / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
                 "ca-key.pem", "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                 "-extfile", f"{name}.ext", cwd=certs)
    port = _free_port()
    root, home = tmp_path / "root", tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [ISOBOXD, "--root", str(root), "-H", f"tcp://127.0.0.1:{port}", "--tlsverify",
         "--tlscacert", str(certs / "ca.pem"), "--tlscert", str(certs / "server.pem"),
         "--tlskey", str(certs / "server-key.pem")], env=base_env(home),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        docker_dir = home / "docker"
        docker_dir.mkdir()
        shutil.copy(certs / "ca.pem", docker_dir / "ca.pem")
        shutil.copy(certs / "client.pem", docker_dir / "cert.pem")
        shutil.copy(certs / "client-key.pem", docker_dir / "key.pem")
        env = {**base_env(home), "DOCKER_HOST": f"tcp://127.0.0.1:{port}",
               "DOCKER_CONFIG": str(docker_dir), "DOCKER_TLS_VERIFY": "1",
               "DOCKER_CERT_PATH": str(docker_dir)}
        ok = subprocess.run(["docker", "version", "--format", "{{.Server.APIVersion}}"],
                            env=env, capture_output=True, text=True, timeout=30)
        assert (ok.returncode, ok.stdout) == (0, "1.50\n"), ok.stderr
        (docker_dir / "cert.pem").unlink()
        (docker_dir / "key.pem").unlink()
        refused = subprocess.run(["docker", "version"], env=env, capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode != 0
    finally:
        _stop(proc)


def test_socket_activation(tmp_path: Path) -> None:
    """A listening socket at fd 3 with LISTEN_FDS=1, as systemd passes it."""
    sockdir = Path(subprocess.check_output(["mktemp", "-d", "/tmp/ibd-XXXXXX"], text=True)
                   .strip())
    path = sockdir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    root, home = tmp_path / "root", tmp_path / "home"
    home.mkdir()
    fd = listener.fileno()

    def as_systemd() -> None:
        os.dup2(fd, 3)

    env = {**base_env(home), "LISTEN_FDS": "1"}
    # LISTEN_PID must be the daemon's own pid: the shell's, which exec keeps.
    proc = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', ISOBOXD,
                             "--root", str(root), "-H", "fd://"], env=env,
                            preexec_fn=as_systemd, pass_fds=(3,),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    listener.close()
    try:
        daemon = Daemon(root, path, home)
        deadline = time.monotonic() + 30
        while True:
            result = daemon.docker("version", "--format", "{{.Server.Version}}", check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
    finally:
        _stop(proc)
        shutil.rmtree(sockdir, ignore_errors=True)


def test_a_stopping_daemon_leaves_a_newer_daemons_socket(tmp_path: Path) -> None:
    """A daemon removes its socket file at the end only if it is still the
    one it bound: another daemon may have taken the path meanwhile."""
    with running_daemon(tmp_path / "old") as old:
        old.sock.unlink()  # as if it had stopped listening; a new daemon takes the path
        new = Daemon(tmp_path / "new-root", old.sock, tmp_path / "new-home")
        (tmp_path / "new-home").mkdir()
        new.start()
        try:
            old.stop()
            assert old.sock.exists()
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(old.sock))  # the new daemon still answers there
        finally:
            new.stop()
        assert not old.sock.exists()  # the new one removes its own


def test_a_sigterm_as_soon_as_it_listens_is_a_clean_stop(tmp_path: Path) -> None:
    """The socket accepts connections before the event loop runs: a SIGTERM
    then must still end the daemon cleanly (socket file removed), not by
    the signal's default action."""
    (tmp_path / "home").mkdir()
    for attempt in range(3):
        daemon = Daemon(tmp_path / "root", tmp_path / f"d{attempt}.sock", tmp_path / "home")
        daemon.start()
        proc = daemon.proc
        assert proc is not None
        daemon.stop()
        assert proc.returncode == 0, daemon.log.read_text()[-2000:]
        assert not daemon.sock.exists()
