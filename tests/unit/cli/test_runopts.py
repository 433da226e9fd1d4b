"""``run``/``create`` flags → the create body, as docker's CLI converts them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from isobox.cli import runopts_parse as p
from isobox.cli.runopts import (
    FlagError,
    RunCommand,
    client_options,
    create_options,
    run_options,
    to_create_request,
)
from isobox.engine import api_types, runspec
from isobox.engine.api_types import (
    BindOptions,
    DeviceMapping,
    HealthConfig,
    LogConfig,
    Mount,
    PortBinding,
    RestartPolicy,
    TmpfsOptions,
    Ulimit,
    VolumeOptions,
)
from isobox.engine.userdb import ResolvedUser
from isobox.linux import capabilities
from isobox.oci.runtime_spec import decode_spec
from isobox.runtime.validate import validate_spec

ENV = {"FROM_ENV": "yes", "EMPTY": ""}


def convert(**options: Any) -> api_types.CreateRequest:
    return to_create_request("busybox", options.pop("command", ()), options, environ=ENV,
                             cwd="/work")


# --- value parsers ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("100", 100), ("100b", 100), ("1k", 1024), ("1K", 1024), ("1kb", 1024),
    ("1KiB", 1024), ("512m", 512 << 20), ("512M", 512 << 20), ("1g", 1 << 30),
    ("1.5g", 3 << 29), ("2t", 2 << 40), ("1p", 1 << 50), ("64 m", 64 << 20),
])
def test_ram_in_bytes(text: str, value: int) -> None:
    assert p.ram_in_bytes(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("", "invalid size: ''"), ("m", "invalid size: 'm'"), ("-1", "invalid size: '-1'"),
    ("12x", "invalid suffix: 'x'"), ("1gg", "invalid suffix: 'gg'"),
    ("1kib2", "invalid size"), ("1.2.3m", "strconv.ParseFloat"),
])
def test_ram_in_bytes_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.ram_in_bytes(text)


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9),
    ("250ms", 250 * 10**6), ("10us", 10_000), ("10µs", 10_000), ("3ns", 3), ("-2s", -2 * 10**9),
    ("1h2m3s4ms", (3723 * 1000 + 4) * 10**6), (".5s", 5 * 10**8),
])
def test_parse_duration(text: str, ns: int) -> None:
    assert p.parse_duration(text) == ns


@pytest.mark.parametrize(("text", "message"), [
    ("30", 'time: missing unit in duration "30"'), ("", 'time: invalid duration ""'),
    ("5x", 'time: unknown unit "x" in duration "5x"'), ("s", 'time: invalid duration "s"'),
    ("1m30", 'time: missing unit in duration "1m30"'),
])
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        p.parse_duration(text)


def test_nano_cpus() -> None:
    assert p.parse_nano_cpus("1.5") == 1_500_000_000
    assert p.parse_nano_cpus("0.01") == 10_000_000
    assert p.parse_nano_cpus("2") == 2_000_000_000
    with pytest.raises(ValueError, match="failed to parse abc as a rational number"):
        p.parse_nano_cpus("abc")
    with pytest.raises(ValueError, match="value is too precise"):
        p.parse_nano_cpus("0.0000000001")


@pytest.mark.parametrize(("text", "ulimit"), [
    ("nofile=1024:2048", Ulimit(name="nofile", soft=1024, hard=2048)),
    ("nproc=512", Ulimit(name="nproc", soft=512, hard=512)),
    ("core=-1", Ulimit(name="core", soft=-1, hard=-1)),
    ("memlock=100:-1", Ulimit(name="memlock", soft=100, hard=-1)),
])
def test_parse_ulimit(text: str, ulimit: Ulimit) -> None:
    assert p.parse_ulimit(text) == ulimit


@pytest.mark.parametrize(("text", "message"), [
    ("nofile", "invalid ulimit argument: nofile"), ("bogus=1", "invalid ulimit type: bogus"),
    ("nofile=2:1", "ulimit soft limit must be less than or equal to hard limit: 2 > 1"),
    ("nofile=1:2:3", "too many limit value arguments"), ("nofile=x", "invalid syntax"),
])
def test_parse_ulimit_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.parse_ulimit(text)


@pytest.mark.parametrize(("text", "policy"), [
    ("", RestartPolicy(name="no")), ("no", RestartPolicy(name="no")),
    ("always", RestartPolicy(name="always")),
    ("unless-stopped", RestartPolicy(name="unless-stopped")),
    ("on-failure", RestartPolicy(name="on-failure")),
    ("on-failure:3", RestartPolicy(name="on-failure", maximum_retry_count=3)),
])
def test_parse_restart(text: str, policy: RestartPolicy) -> None:
    assert p.parse_restart(text) == policy


@pytest.mark.parametrize(("text", "message"), [
    ("sometimes", "invalid restart policy: unknown policy 'sometimes'"),
    ("always:3", "maximum retry count can only be used with 'on-failure'"),
    ("on-failure:x", "maximum retry count must be an integer"),
    (":3", "no policy provided before colon"),
    ("on-failure:-1", "maximum retry count cannot be negative"),
])
def test_parse_restart_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.parse_restart(text)


def test_parse_ports() -> None:
    exposed, bindings = p.parse_ports(["80", "8080:80", "127.0.0.1:9000:90/udp",
                                       "[::1]:53:53/udp", "7000-7001:70-71", "5000-5010:50",
                                       "127.0.0.1::443"])
    assert exposed == {k: {} for k in ("80/tcp", "90/udp", "53/udp", "70/tcp", "71/tcp",
                                       "50/tcp", "443/tcp")}
    assert bindings == {
        "80/tcp": [PortBinding(), PortBinding(host_port="8080")],
        "90/udp": [PortBinding(host_ip="127.0.0.1", host_port="9000")],
        "53/udp": [PortBinding(host_ip="::1", host_port="53")],
        "70/tcp": [PortBinding(host_port="7000")],
        "71/tcp": [PortBinding(host_port="7001")],
        "50/tcp": [PortBinding(host_port="5000-5010")],
        "443/tcp": [PortBinding(host_ip="127.0.0.1")],
    }


@pytest.mark.parametrize(("spec", "message"), [
    ("abc", "invalid containerPort: abc"), ("x:80", "invalid hostPort: x"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"), ("80/icmp", "invalid proto: icmp"),
    ("1-3:4-5", "invalid ranges specified for container and host Ports: 4-5 and 1-3"),
    ("8080:", "no port specified: 8080:<empty>"), ("70000", "invalid containerPort"),
])
def test_parse_ports_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.parse_ports([spec])


def test_parse_expose() -> None:
    exposed: dict[str, dict[str, Any]] = {"80/tcp": {}}
    p.parse_expose(["80", "53/udp", "8000-8002"], exposed)
    assert list(exposed) == ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]
    with pytest.raises(ValueError, match="invalid port format for --expose: 1:2"):
        p.parse_expose(["1:2"], exposed)
    with pytest.raises(ValueError, match="invalid range format for --expose"):
        p.parse_expose(["9-1"], exposed)


@pytest.mark.parametrize(("spec", "result"), [
    ("/data", (None, "/data")),
    ("/srv:/data", ("/srv:/data", None)),
    ("/srv:/data:ro,z", ("/srv:/data:ro,z", None)),
    ("name:/data", ("name:/data", None)),
    ("./rel:/data", ("/work/rel:/data", None)),
    (".:/data:ro", ("/work:/data:ro", None)),
])
def test_parse_volume(spec: str, result: tuple[str | None, str | None]) -> None:
    assert p.parse_volume(spec, "/work") == result


@pytest.mark.parametrize(("spec", "mount"), [
    ("type=bind,source=/a,target=/b,readonly,bind-propagation=rslave",
     Mount(type="bind", source="/a", target="/b", read_only=True,
           bind_options=BindOptions(propagation="rslave"))),
    ("type=bind,src=./x,dst=/b,ro=false", Mount(type="bind", source="/work/x", target="/b")),
    ("target=/data", Mount(type="volume", target="/data")),
    ("type=volume,source=v,destination=/d,volume-nocopy,volume-label=a=b",
     Mount(type="volume", source="v", target="/d",
           volume_options=VolumeOptions(no_copy=True, labels={"a": "b"}))),
    ("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770",
     Mount(type="tmpfs", target="/t",
           tmpfs_options=TmpfsOptions(size_bytes=64 << 20, mode=0o1770))),
    ('type=bind,"source=/a,b",target=/c', Mount(type="bind", source="/a,b", target="/c")),
])
def test_parse_mount(spec: str, mount: Mount) -> None:
    assert p.parse_mount(spec, "/work") == mount


@pytest.mark.parametrize(("spec", "message"), [
    ("type=bind,source=/a", "target is required"),
    ("type=bind,target=/b,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
    ("type=bind,target=/b,weird", "invalid field 'weird' must be a key=value pair"),
    ("type=tmpfs,target=/b,volume-nocopy", "cannot mix 'volume-\\*' options with mount type"),
    ("type=bind,target=/b,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=tmpfs,target=/b,tmpfs-size=big", "invalid value for tmpfs-size: big"),
    ("type=tmpfs,target=/b,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
    ("type=npipe,target=/b", "invalid mount type: npipe"),
])
def test_parse_mount_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.parse_mount(spec, "/work")


@pytest.mark.parametrize(("spec", "device"), [
    ("/dev/sda", DeviceMapping(path_on_host="/dev/sda", path_in_container="/dev/sda",
                               cgroup_permissions="rwm")),
    ("/dev/sda:r", DeviceMapping(path_on_host="/dev/sda", path_in_container="/dev/sda",
                                 cgroup_permissions="r")),
    ("/dev/sda:/dev/xvda", DeviceMapping(path_on_host="/dev/sda", path_in_container="/dev/xvda",
                                         cgroup_permissions="rwm")),
    ("/dev/sda:/dev/xvda:rw", DeviceMapping(path_on_host="/dev/sda",
                                            path_in_container="/dev/xvda",
                                            cgroup_permissions="rw")),
])
def test_parse_device(spec: str, device: DeviceMapping) -> None:
    assert p.parse_device(spec) == device


@pytest.mark.parametrize(("spec", "message"), [
    ("/dev/sda:/x:rwx", "bad mode specified: rwx"), (":/x", "bad format for path"),
    ("/dev/sda:rel", "rel is not an absolute path"), ("a:b:c:d", "bad format for path"),
])
def test_parse_device_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.parse_device(spec)


def test_kv_files() -> None:
    data = ("\ufeff# comment\n\nA=1\n  B=2 \nFROM_ENV\nUNSET\nEMPTY\nC=x=y\n").encode()
    assert p.parse_kv_file(data, ENV.get) == ["A=1", "B=2 ", "FROM_ENV=yes", "EMPTY=",
                                              "C=x=y"]
    assert p.parse_kv_file(b"a=1\nlabel-only\n", None) == ["a=1"]
    with pytest.raises(ValueError, match="variable 'A B' contains whitespaces"):
        p.parse_kv_file(b"A B=1\n", None)
    with pytest.raises(ValueError, match="no variable name"):
        p.parse_kv_file(b"=1\n", None)


def test_small_validators() -> None:
    assert p.validate_env("K", ENV.get) == "K"
    assert p.validate_env("FROM_ENV", ENV.get) == "FROM_ENV=yes"
    with pytest.raises(ValueError, match="invalid environment variable: =x"):
        p.validate_env("=x", ENV.get)
    assert p.parse_add_host("db:10.0.0.2") == "db:10.0.0.2"
    assert p.parse_add_host("db=10.0.0.2") == "db:10.0.0.2"
    assert p.parse_add_host("v6:::1") == "v6:::1"
    assert p.parse_add_host("v6=[::1]") == "v6:::1"
    assert p.parse_add_host("gw:host-gateway") == "gw:host-gateway"
    with pytest.raises(ValueError, match='invalid IP address in add-host: "nope"'):
        p.parse_add_host("db:nope")
    with pytest.raises(ValueError, match="bad format for add-host"):
        p.parse_add_host("justaname")
    assert p.validate_sysctl("net.core.somaxconn=1024") == ("net.core.somaxconn", "1024")
    with pytest.raises(ValueError, match=r"sysctl .vm\.swappiness=1. is not allowed"):
        p.validate_sysctl("vm.swappiness=1")
    with pytest.raises(ValueError, match="contains whitespaces"):
        p.validate_label("a b=1")


# --- to_create_request ------------------------------------------------------------------------

def test_defaults() -> None:
    req = convert()
    assert req == api_types.CreateRequest(
        image="busybox", attach_stdout=True, attach_stderr=True,
        host_config=api_types.HostConfig(network_mode="default",
                                         restart_policy=RestartPolicy(name="no")),
        networking_config=api_types.NetworkingConfig(endpoints_config={"default": {}}))
    assert client_options({}) == client_options({"pull": "missing", "sig_proxy": True})


def test_config_fields(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("FILE=1\nFROM_ENV\n")
    label_file = tmp_path / "labels"
    label_file.write_text("from.file=1\n")
    req = convert(command=("sh", "-c", "id"), interactive=True, tty=True, hostname="h",
                  domainname="d.example", user="app:staff", workdir="/w",
                  env=("A=1", "FROM_ENV", "UNSET"), env_file=(str(env_file),),
                  label=("x=1", "flag"), label_file=(str(label_file),), entrypoint="",
                  stop_signal="SIGINT", stop_timeout="5", mac_address="92:d0:c6:0a:29:33")
    assert req.cmd == ["sh", "-c", "id"]
    assert req.entrypoint == [""]
    assert (req.attach_stdin, req.open_stdin, req.stdin_once, req.tty) == (True,) * 4
    assert (req.hostname, req.domainname, req.user, req.working_dir) == (
        "h", "d.example", "app:staff", "/w")
    assert req.env == ["FILE=1", "FROM_ENV=yes", "A=1", "FROM_ENV=yes", "UNSET"]
    assert req.labels == {"from.file": "1", "x": "1", "flag": ""}
    assert (req.stop_signal, req.stop_timeout) == ("SIGINT", 5)
    assert req.networking_config is not None
    assert req.networking_config.endpoints_config == {
        "default": {"MacAddress": "92:d0:c6:0a:29:33"}}
    assert convert(entrypoint="/init").entrypoint == ["/init"]
    assert convert().entrypoint is None


def test_detach_and_attach() -> None:
    req = convert(detach=True, interactive=True)
    assert (req.attach_stdin, req.attach_stdout, req.attach_stderr, req.stdin_once) == (
        False, False, False, False)
    assert req.open_stdin
    req = convert(attach=("STDERR",))
    assert (req.attach_stdin, req.attach_stdout, req.attach_stderr) == (False, False, True)
    with pytest.raises(FlagError, match="cannot specify both --attach and --detach"):
        convert(attach=("stdout",), detach=True)
    with pytest.raises(FlagError, match="valid streams are STDIN, STDOUT and STDERR"):
        convert(attach=("stdio",))


def test_host_config_fields(tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW"\n}\n')
    req = convert(
        memory="512m", memory_swap="1g", memory_reservation="256m", memory_swappiness="10",
        oom_kill_disable=True, oom_score_adj="-500", cpus="1.5", cpu_shares="512",
        cpuset_cpus="0-1", cpuset_mems="0", pids_limit="100", shm_size="64m", init=True,
        restart="on-failure:3", read_only=True, privileged=True, cap_add=("NET_ADMIN",),
        cap_drop=("ALL",), security_opt=(f"seccomp={profile}", "no-new-privileges",
                                         "systempaths=unconfined"),
        ulimit=("nofile=1024:2048", "nproc=10", "nofile=1:2"), tmpfs=("/run:size=64m", "/tmp"),
        device=("/dev/fuse",), device_cgroup_rule=("c 10:229 rwm",),
        sysctl=("net.core.somaxconn=1024",), add_host=("db:10.0.0.2",), dns=("1.1.1.1",),
        dns_search=("example.org",), dns_option=("ndots:2",), group_add=("audio", "42"),
        log_driver="json-file", log_opt=("max-size=10m", "max-file=3"), ipc="host",
        pid="container:db", uts="host", userns="host", cgroupns="private", isolation="VM",
        runtime="runc", cidfile="/tmp/cid", cgroup_parent="/custom", volumes_from=("other:ro",),
        link=("db:database",), storage_opt=("size=10G",), blkio_weight="300")
    h = req.host_config
    assert (h.memory, h.memory_swap, h.memory_reservation, h.memory_swappiness) == (
        512 << 20, 1 << 30, 256 << 20, 10)
    assert (h.oom_kill_disable, h.oom_score_adj, h.nano_cpus, h.cpu_shares) == (
        True, -500, 1_500_000_000, 512)
    assert (h.cpuset_cpus, h.cpuset_mems, h.pids_limit, h.shm_size, h.init) == (
        "0-1", "0", 100, 64 << 20, True)
    assert h.restart_policy == RestartPolicy(name="on-failure", maximum_retry_count=3)
    assert (h.readonly_rootfs, h.privileged, h.cap_add, h.cap_drop) == (
        True, True, ["NET_ADMIN"], ["ALL"])
    assert h.security_opt == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}', "no-new-privileges"]
    assert (h.masked_paths, h.readonly_paths) == ([], [])
    assert h.ulimits == [Ulimit(name="nofile", soft=1, hard=2),
                         Ulimit(name="nproc", soft=10, hard=10)]
    assert h.tmpfs == {"/run": "size=64m", "/tmp": ""}
    assert h.devices == [DeviceMapping(path_on_host="/dev/fuse", path_in_container="/dev/fuse",
                                       cgroup_permissions="rwm")]
    assert h.device_cgroup_rules == ["c 10:229 rwm"]
    assert h.sysctls == {"net.core.somaxconn": "1024"}
    assert (h.extra_hosts, h.dns, h.dns_search, h.dns_options) == (
        ["db:10.0.0.2"], ["1.1.1.1"], ["example.org"], ["ndots:2"])
    assert h.group_add == ["audio", "42"]
    assert h.log_config == LogConfig(type="json-file",
                                     config={"max-size": "10m", "max-file": "3"})
    assert (h.ipc_mode, h.pid_mode, h.uts_mode, h.userns_mode, h.cgroupns_mode) == (
        "host", "container:db", "host", "host", "private")
    assert (h.isolation, h.runtime, h.container_id_file, h.cgroup_parent) == (
        "vm", "runc", "/tmp/cid", "/custom")
    assert (h.volumes_from, h.links, h.storage_opt, h.blkio_weight) == (
        ["other:ro"], ["db:database"], {"size": "10G"}, 300)


def test_memory_swap_unlimited_and_swappiness_default() -> None:
    h = convert(memory="1g", memory_swap="-1").host_config
    assert (h.memory, h.memory_swap, h.memory_swappiness) == (1 << 30, -1, None)


def test_volumes_and_mounts() -> None:
    req = convert(volume=("/anon", "/srv:/srv:ro", "named:/data", "./here:/here"),
                  mount=("type=bind,source=/a,target=/b,readonly",))
    assert req.volumes == {"/anon": {}}
    assert req.host_config.binds == ["/srv:/srv:ro", "named:/data", "/work/here:/here"]
    assert req.host_config.mounts == [Mount(type="bind", source="/a", target="/b",
                                            read_only=True)]


def test_ports_and_network() -> None:
    req = convert(publish=("8080:80", "127.0.0.1:53:53/udp"), expose=("9000",),
                  publish_all=True, network=("appnet",), network_alias=("web",),
                  ip="172.30.0.5")
    assert req.exposed_ports == {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}
    assert req.host_config.port_bindings == {
        "80/tcp": [PortBinding(host_port="8080")],
        "53/udp": [PortBinding(host_ip="127.0.0.1", host_port="53")]}
    assert req.host_config.publish_all_ports
    assert req.host_config.network_mode == "appnet"
    assert req.networking_config is not None
    assert req.networking_config.endpoints_config == {
        "appnet": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "172.30.0.5"}}}
    assert convert(network=("host",)).host_config.network_mode == "host"


def test_healthcheck() -> None:
    req = convert(health_cmd="curl -f localhost", health_interval="30s",
                  health_timeout="1m30s", health_retries="3", health_start_period="5s",
                  health_start_interval="500ms")
    assert req.healthcheck == HealthConfig(
        test=["CMD-SHELL", "curl -f localhost"], interval=30 * 10**9, timeout=90 * 10**9,
        start_period=5 * 10**9, start_interval=500 * 10**6, retries=3)
    assert convert(no_healthcheck=True).healthcheck == HealthConfig(test=["NONE"])
    assert convert(health_interval="10s").healthcheck == HealthConfig(interval=10 * 10**9)
    with pytest.raises(FlagError, match="--no-healthcheck conflicts with --health-\\* options"):
        convert(no_healthcheck=True, health_cmd="true")
    with pytest.raises(FlagError, match="--health-interval cannot be negative"):
        convert(health_interval="-1s")


@pytest.mark.parametrize(("options", "message"), [
    ({"memory": "12x"}, 'invalid argument "12x" for "-m, --memory" flag: invalid suffix: \'x\''),
    ({"memory_swap": "lots"}, 'invalid argument "lots" for "--memory-swap" flag: invalid size'),
    ({"cpus": "one"}, 'invalid argument "one" for "--cpus" flag: failed to parse one as a '
                      'rational number'),
    ({"cpu_shares": "abc"}, 'invalid argument "abc" for "-c, --cpu-shares" flag: '
                            'strconv.ParseInt: parsing "abc": invalid syntax'),
    ({"health_interval": "30"}, 'invalid argument "30" for "--health-interval" flag: '
                                'time: missing unit in duration "30"'),
    ({"ulimit": ("nofile=x",)}, 'invalid argument "nofile=x" for "--ulimit" flag'),
    ({"restart": "always", "rm": True}, "conflicting options: cannot specify both --restart "
                                        "and --rm"),
    ({"isolation": "container"}, 'invalid isolation: "container"'),
    ({"memory_swappiness": "200"}, "Valid memory swappiness range is 0-100"),
    ({"ipc": "shared"}, "--ipc: invalid IPC mode"),
    ({"pid": "container:"}, "--pid: invalid PID mode"),
    ({"uts": "private"}, "--uts: invalid UTS mode"),
    ({"cgroupns": "x"}, "--cgroupns: invalid CGROUP mode"),
    ({"userns": "remap"}, "--userns: invalid USER mode"),
    ({"log_driver": "none", "log_opt": ("a=b",)}, "invalid logging opts for driver none"),
    ({"publish": ("abc",)}, "^invalid containerPort: abc$"),
    ({"device_cgroup_rule": ("c 1:3",)}, "invalid device cgroup format 'c 1:3'"),
    ({"sysctl": ("kernel.panic=1",)}, "sysctl 'kernel.panic=1' is not allowed"),
    ({"dns": ("8.8.8",)}, "IP address is not correctly formatted: 8.8.8"),
    ({"env_file": ("/nonexistent/env",)}, "open /nonexistent/env"),
    ({"security_opt": ("seccomp=/nonexistent.json",)}, "opening seccomp profile "
                                                       r"\(/nonexistent.json\) failed"),
    ({"volume": ("/a::/b",)}, "empty section between colons"),
    ({"network": ("a", "b"), "ip": "10.0.0.2"}, "more than one --network"),
])
def test_flag_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(FlagError, match=message) as info:
        convert(**options)
    assert info.value.exit_code == 125
    assert info.value.format_message() == info.value.message


def test_pull_option() -> None:
    assert client_options({"pull": "always", "name": "web", "detach": True}).pull == "always"
    with pytest.raises(FlagError, match="invalid pull option: 'sometimes'"):
        client_options({"pull": "sometimes"})


def test_round_trips_through_the_api_body() -> None:
    req = convert(command=("top",), publish=("80:80",), env=("A=1",), memory="64m",
                  mount=("type=tmpfs,target=/t,tmpfs-size=1m",), health_cmd="true")
    assert api_types.decode_create(api_types.encode(req)) == req


def test_flags_to_a_valid_spec(tmp_path: Path) -> None:
    """The whole path: docker flags → create body → config.json the runtime accepts."""
    (tmp_path / "rootfs").mkdir()
    req = convert(command=("sh",), tty=True, memory="64m", cpus="0.5", read_only=True,
                  tmpfs=("/run:rw,size=1m",), cap_drop=("ALL",), cap_add=("chown",),
                  ulimit=("nofile=1024:2048",), security_opt=("no-new-privileges",),
                  sysctl=("net.ipv4.ip_forward=1",), shm_size="1m")
    spec = runspec.build_spec(
        api_types.decode_create(api_types.encode(req)), None, container_id="c" * 64,
        rootfs=str(tmp_path / "rootfs"), hostname="cccccccccccc", user=ResolvedUser(),
        mounts=[], resolv_conf=None, hosts_file=None, hostname_file=None,
        cgroups_path="/isobox/c")
    validate_spec(decode_spec(json.dumps(spec).encode()), str(tmp_path),
                  len(capabilities.NAMES) - 1)
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    assert spec["linux"]["resources"]["cpu"] == {"quota": 50000, "period": 100000}
    assert spec["process"]["noNewPrivileges"] is True


# --- click integration ------------------------------------------------------------------------

@click.command("run", cls=RunCommand)
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def _run(image: str, command: tuple[str, ...], **options: Any) -> None:
    req = to_create_request(image, command, options, environ=ENV, cwd="/work")
    click.echo(api_types.encode(req).decode())
    click.echo(json.dumps({"sig_proxy": client_options(options).sig_proxy,
                           "detach": client_options(options).detach}))


def invoke(*args: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    result = CliRunner().invoke(_run, list(args))
    lines = result.output.splitlines()
    if result.exit_code != 0:
        return result.exit_code, {"output": result.output}, {}
    return result.exit_code, json.loads(lines[0]), json.loads(lines[1])


def test_click_short_flags_and_hostname() -> None:
    code, body, flags = invoke("-dit", "-h", "myhost", "-e", "A=1", "-p8080:80", "-m", "1g",
                               "busybox", "sh", "-c", "echo -h --rm")
    assert code == 0, body
    assert body["Hostname"] == "myhost" and body["Tty"] and body["OpenStdin"]
    assert body["Cmd"] == ["sh", "-c", "echo -h --rm"]
    assert body["HostConfig"]["Memory"] == 1 << 30
    assert body["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostPort": "8080"}]}
    assert flags["detach"] is True


def test_click_boolean_flag_values() -> None:
    code, body, flags = invoke("--rm=false", "--privileged=true", "--sig-proxy=false",
                               "--init=0", "busybox")
    assert code == 0, body
    assert "AutoRemove" not in body["HostConfig"]
    assert body["HostConfig"]["Privileged"] is True
    assert "Init" not in body["HostConfig"]
    assert flags["sig_proxy"] is False
    assert invoke("busybox")[2]["sig_proxy"] is True
    code, out, _ = invoke("--rm=maybe", "busybox")
    assert code == 125
    assert 'invalid argument "maybe" for "--rm" flag' in out["output"]


def test_click_options_after_the_image_belong_to_the_command() -> None:
    code, body, _ = invoke("--name", "x", "busybox", "--rm", "-d")
    assert code == 0, body
    assert body["Cmd"] == ["--rm", "-d"]
    assert "AutoRemove" not in body["HostConfig"]


def test_click_flag_error_exit_code() -> None:
    code, out, _ = invoke("--memory", "lots", "busybox")
    assert code == 125
    assert "Error: invalid argument \"lots\" for \"-m, --memory\" flag: invalid size: 'lots'" \
        in out["output"]


def test_click_help_is_long_only() -> None:
    result = CliRunner().invoke(_run, ["--help"])
    assert result.exit_code == 0
    assert "-h, --hostname" in result.output and "--health-start-interval" in result.output


def test_create_options_and_decorating_a_command() -> None:
    @run_options
    @click.command("run2")
    @click.argument("image")
    def run2(image: str, **options: Any) -> None:
        click.echo(options["hostname"])

    result = CliRunner().invoke(run2, ["-h", "box", "busybox"])
    assert result.output.strip() == "box"

    @click.command("create")
    @create_options
    @click.argument("image")
    def create(image: str, **options: Any) -> None:
        click.echo(",".join(sorted(k for k in options if k in ("detach", "sig_proxy", "rm"))))

    assert CliRunner().invoke(create, ["busybox"]).output.strip() == "rm"
    assert CliRunner().invoke(create, ["-d", "busybox"]).exit_code == 2
