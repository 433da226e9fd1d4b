"""Requests checked field by field before anything is done: a bad request is
answered with an error and changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

from isobox.errors import InvalidArgument

UINT32 = 0xFFFFFFFF
UINT16 = 0xFFFF
SIGNAL_MAX = 64  # SIGRTMAX on Linux
LAYER_FSTYPES = ("erofs", "ext4")
UPPER_FSTYPES = ("ext4",)
IFNAMSIZ = 16  # an interface name has at most 15 bytes
HOST_NAME_MAX = 64

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    Message = dict[str, object]


def request_id(message: Message) -> int:
    """The id to answer with; 0 when the request has none."""
    rid = message.get("id")
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0


def _missing(key: str) -> InvalidArgument:
    return InvalidArgument(f"{key!r} is required")


def _wrong(key: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"{key!r} must be {what}")


def get_int(msg: Message, key: str, low: int = 0, high: int = UINT32,
            default: int | None = None) -> int:
    value = msg.get(key)
    if value is None:
        if default is None:
            raise _missing(key)
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _wrong(key, f"an integer from {low} to {high}")
    return value


def opt_int(msg: Message, key: str, low: int, high: int) -> int | None:
    return None if msg.get(key) is None else get_int(msg, key, low, high)


def get_bool(msg: Message, key: str, default: bool = False) -> bool:
    value = msg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong(key, "true or false")
    return value


def get_str(msg: Message, key: str) -> str:
    value = msg.get(key)
    if value is None:
        raise _missing(key)
    if not isinstance(value, str) or not value or "\0" in value:
        raise _wrong(key, "a non-empty string")
    return value


def opt_str(msg: Message, key: str) -> str | None:
    return None if msg.get(key) is None else get_str(msg, key)


def get_dict(msg: Message, key: str) -> Message:
    value = opt_dict(msg, key)
    if value is None:
        raise _missing(key)
    return value


def opt_dict(msg: Message, key: str) -> Message | None:
    value = msg.get(key)
    if value is not None and not isinstance(value, dict):
        raise _wrong(key, "an object")
    return value


def get_dicts(msg: Message, key: str) -> list[Message]:
    """A list of objects; absent or null is empty."""
    value = msg.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _wrong(key, "a list of objects")
    return value


def get_choice(msg: Message, key: str, choices: tuple[str, ...]) -> str:
    value = get_str(msg, key)
    if value not in choices:
        raise _wrong(key, " or ".join(choices))
    return value


def get_name(msg: Message, key: str, max_len: int = 255) -> str:
    """A string usable as one path component."""
    value = get_str(msg, key)
    if value in (".", "..") or "/" in value or len(value.encode()) > max_len:
        raise _wrong(key, f"a name of at most {max_len} bytes without '/'")
    return value


# -- storage ------------------------------------------------------------

class Disk(SimpleNamespace):
    serial: str
    fstype: str


class Share(SimpleNamespace):
    tag: str
    readonly: bool


class StorageRequest(SimpleNamespace):
    layers: list[Disk]
    upper: Disk | None
    shares: list[Share]


def parse_storage(msg: Message) -> StorageRequest:
    layers = [Disk(serial=get_str(d, "serial"), fstype=get_choice(d, "fstype", LAYER_FSTYPES))
              for d in get_dicts(msg, "layers")]
    raw_upper = opt_dict(msg, "upper")
    upper = None if raw_upper is None else Disk(
        serial=get_str(raw_upper, "serial"), fstype=get_choice(raw_upper, "fstype", UPPER_FSTYPES))
    shares = [Share(tag=get_name(s, "tag"), readonly=get_bool(s, "readonly"))
              for s in get_dicts(msg, "shares")]
    tags = [s.tag for s in shares]
    if len(set(tags)) != len(tags):
        raise InvalidArgument("share tags must be unique")
    return StorageRequest(layers=layers, upper=upper, shares=shares)


# -- network ------------------------------------------------------------

class Interface(SimpleNamespace):
    mac: str
    current_mac: str  #: the NIC's address now (a template's NIC): ``mac`` replaces it
    name: str
    address: str
    gateway: str | None
    mtu: int | None


class NetworkRequest(SimpleNamespace):
    interfaces: list[Interface]
    hostname: str | None
    sysctls: dict[str, str]  #: net.* settings of the guest's (the container's) network stack


def _mac(msg: Message, key: str = "mac") -> str:
    value = get_str(msg, key).lower()
    parts = value.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        raise _wrong(key, "a MAC address like 02:42:0a:58:00:05")
    return value


def _address(msg: Message) -> str:
    import ipaddress  # only for this request

    value = get_str(msg, "address")
    try:
        if "/" not in value:
            raise ValueError(value)
        ipaddress.ip_interface(value)
    except ValueError:
        raise _wrong("address", "an address with its prefix length, like 10.88.0.5/16") from None
    return value


def _gateway(msg: Message) -> str | None:
    import ipaddress

    value = opt_str(msg, "gateway")
    if value is not None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise _wrong("gateway", "an IP address") from None
    return value


def parse_network(msg: Message) -> NetworkRequest:
    interfaces = [Interface(mac=_mac(i), name=get_name(i, "name", IFNAMSIZ - 1),
                            current_mac=_mac(i, "current_mac") if "current_mac" in i
                            else _mac(i),
                            address=_address(i), gateway=_gateway(i),
                            mtu=opt_int(i, "mtu", 68, 65535))
                  for i in get_dicts(msg, "interfaces")]
    for key in ("mac", "current_mac", "name"):
        values = [getattr(i, key) for i in interfaces]
        if len(set(values)) != len(values):
            raise InvalidArgument(f"interface {key}s must be unique")
    hostname = opt_str(msg, "hostname")
    if hostname is not None and len(hostname.encode()) > HOST_NAME_MAX:
        raise _wrong("hostname", f"at most {HOST_NAME_MAX} bytes")
    raw = msg.get("sysctls") or {}
    if not isinstance(raw, dict):
        raise _wrong("sysctls", "an object")
    sysctls: dict[str, str] = {}
    for key, value in raw.items():
        if (not isinstance(key, str) or not key.startswith("net.") or ".." in key
                or not all(c.isalnum() or c in "._-" for c in key)):
            raise _wrong("sysctls", "net.* names")
        if not isinstance(value, str) or "\n" in value:
            raise _wrong("sysctls", "string values")
        sysctls[key] = value
    return NetworkRequest(interfaces=interfaces, hostname=hostname, sysctls=sysctls)


# -- files (cp into a running container) ---------------------------------

class ExtractRequest(SimpleNamespace):
    stream: int
    directory: str
    owner: str | tuple[int, int]


def _container_path(msg: Message, key: str) -> str:
    import posixpath

    value = get_str(msg, key)
    if not value.startswith("/") or "\0" in value or len(value) > 4096:
        raise _wrong(key, "an absolute path")
    return posixpath.normpath(value)


def parse_stat_path(msg: Message) -> tuple[str, bool]:
    return _container_path(msg, "path"), get_bool(msg, "follow")


def parse_extract(msg: Message) -> ExtractRequest:
    raw = msg.get("owner", "keep")
    owner: str | tuple[int, int]
    if raw == "keep":
        owner = "keep"
    elif (isinstance(raw, list) and len(raw) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= UINT32
                  for v in raw)):
        owner = (raw[0], raw[1])
    else:
        raise _wrong("owner", '"keep" or [uid, gid]')
    return ExtractRequest(stream=get_int(msg, "stream", 1), directory=_container_path(
        msg, "directory"), owner=owner)


def parse_top(msg: Message) -> list[str]:
    args = msg.get("args", [])
    if (not isinstance(args, list) or len(args) > 32
            or not all(isinstance(a, str) and 0 < len(a) <= 256 and "\0" not in a
                       for a in args)):
        raise _wrong("args", "a list of ps arguments")
    return args


# -- wake ---------------------------------------------------------------

class WakeRequest(SimpleNamespace):
    time_ns: int
    entropy: bytes


WAKE_ENTROPY_MAX = 512


def parse_wake(msg: Message) -> WakeRequest:
    time_ns = get_int(msg, "time_ns", 0, 1 << 63)
    raw = get_str(msg, "entropy")
    try:
        entropy = bytes.fromhex(raw)
    except ValueError:
        raise _wrong("entropy", "hex digits") from None
    if not 16 <= len(entropy) <= WAKE_ENTROPY_MAX:
        raise _wrong("entropy", f"16 to {WAKE_ENTROPY_MAX} bytes")
    return WakeRequest(time_ns=time_ns, entropy=entropy)


# -- processes ----------------------------------------------------------

class CreateRequest(SimpleNamespace):
    stream: int
    id: str
    config: Message
    tty: bool
    open_stdin: bool
    console: tuple[int, int] | None  # (height, width)


class ExecRequest(SimpleNamespace):
    stream: int
    process: Message
    tty: bool
    open_stdin: bool
    console: tuple[int, int] | None  # (height, width)


def _size(msg: Message) -> tuple[int, int]:
    return get_int(msg, "height", 0, UINT16), get_int(msg, "width", 0, UINT16)


def _console(msg: Message) -> tuple[int, int] | None:
    console = opt_dict(msg, "console")
    return None if console is None else _size(console)


def parse_create(msg: Message) -> CreateRequest:
    config = get_dict(msg, "config")
    if not isinstance(config.get("process"), dict):
        raise InvalidArgument("'config' has no process")
    return CreateRequest(stream=get_int(msg, "stream"), id=get_str(msg, "container_id"),
                         config=config, tty=get_bool(msg, "tty"),
                         open_stdin=get_bool(msg, "open_stdin"), console=_console(msg))


def parse_exec(msg: Message) -> ExecRequest:
    return ExecRequest(stream=get_int(msg, "stream"), process=get_dict(msg, "process"),
                       tty=get_bool(msg, "tty"), open_stdin=get_bool(msg, "open_stdin"),
                       console=_console(msg))


def parse_stream(msg: Message) -> int:
    return get_int(msg, "stream")


def parse_signal(msg: Message) -> tuple[int, int, bool]:
    """(stream, signal, all)"""
    return (get_int(msg, "stream"), get_int(msg, "signal", 1, SIGNAL_MAX),
            get_bool(msg, "all"))


def parse_resize(msg: Message) -> tuple[int, int, int]:
    """(stream, height, width)"""
    return (get_int(msg, "stream"), *_size(msg))
