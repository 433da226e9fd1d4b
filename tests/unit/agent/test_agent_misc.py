"""The agent's command line, port lookup, stats and helper command runner."""

from __future__ import annotations

import pytest

from isobox.agent import cli, command, stats
from isobox.agent.port import find_port
from isobox.errors import InvalidArgument, IsoboxError
from isobox.linux.proc import total_memory


def test_cli_options():
    assert cli.parse(["--fd", "3", "--state-dir=/tmp/x"]) == {"--fd": "3",
                                                              "--state-dir": "/tmp/x"}
    assert cli.parse(["--port-name", "isobox.agent"]) == {
        "--port-name": "isobox.agent"}
    assert cli.parse([]) == {}
    assert cli.parse(["--fd", "3", "--help"]) is None
    for bad in (["--fd"], ["--fd", "x"], ["--fd", "3", "--port-name", "p"], ["extra"],
                ["--state-dir="]):
        with pytest.raises(InvalidArgument):
            cli.parse(bad)


def test_find_port_by_name(tmp_path):
    for entry, name in (("vport0p1", "org.qemu.guest_agent.0"), ("vport1p1", "agent")):
        d = tmp_path / "class" / "virtio-ports" / entry
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
    assert find_port("agent", str(tmp_path), "/dev") == "/dev/vport1p1"
    assert find_port("other", str(tmp_path)) is None
    assert find_port("agent", str(tmp_path / "none")) is None


def test_stats_from_v2_counters():
    raw = {"memory": {"usage": {"usage": 10_000, "limit": 1 << 63}, "raw": {"inactive_file": 4000}},
           "cpu": {"usage": {"total": 123_000}}, "pids": {"current": 3}}
    assert stats.summarize(raw, 1 << 30) == {"memory_usage": 6000, "memory_limit": 1 << 30,
                                             "cpu_usage_ns": 123_000, "pids": 3}


def test_stats_from_v1_counters_with_a_limit():
    raw = {"memory": {"usage": {"usage": 10_000, "limit": 50_000},
                      "raw": {"total_inactive_file": 1000}}}
    assert stats.summarize(raw, 1 << 30) == {"memory_usage": 9000, "memory_limit": 50_000,
                                             "cpu_usage_ns": 0, "pids": 0}
    assert stats.summarize({}, 0) == {"memory_usage": 0, "memory_limit": 0, "cpu_usage_ns": 0,
                                      "pids": 0}


def test_total_memory(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2048 kB\nMemFree: 1 kB\n")
    assert total_memory(str(meminfo)) == 2048 * 1024
    assert total_memory(str(tmp_path / "none")) == 0


def test_command_reports_the_last_line_of_stderr():
    command.run(["/bin/busybox", "true"])
    with pytest.raises(IsoboxError, match=r"sh -c .*: second"):
        command.run(["/bin/busybox", "sh", "-c", "echo first >&2; echo second >&2; exit 3"])
    with pytest.raises(IsoboxError, match="exit status 4"):
        command.run(["/bin/busybox", "sh", "-c", "exit 4"])
    with pytest.raises(IsoboxError, match="cannot run"):
        command.run(["/nonexistent/tool"])
    with pytest.raises(IsoboxError, match="did not finish"):
        command.run(["/bin/busybox", "sleep", "5"], timeout=0.2)


def test_root_is_rootfs_reads_the_top_mount_on_slash(tmp_path):
    from isobox.agent.rootfs import root_is_rootfs

    initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=240k\n" \
                "17 1 0:16 / /proc rw,nosuid - proc proc rw\n"
    (tmp_path / "a").write_text(initramfs)
    assert root_is_rootfs(str(tmp_path / "a"))
    moved = initramfs + "30 1 0:2 / / rw - rootfs rootfs rw,size=240k\n"  # a bind of it
    (tmp_path / "b").write_text(moved)
    assert not root_is_rootfs(str(tmp_path / "b"))
    (tmp_path / "c").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    assert not root_is_rootfs(str(tmp_path / "c"))
