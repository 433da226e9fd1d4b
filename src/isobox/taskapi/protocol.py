"""The task API's messages: what the host (the VM shim) asks of the guest
agent, and what the agent tells it. The framing is :mod:`isobox.taskapi.frames`.

Session
=======
The agent opens its end of the byte stream (a virtio-serial port named
``PORT_NAME``) and, whenever the host is connected, first sends the EVENT
``{"event": "ready", "kernel": <uname release>}``. A frame cut short by a
host disconnection is dropped; anything queued after it is sent on
reconnection, after a new ``ready``.

Requests
========
REQUEST frames (stream 0) carry ``{"id": int, "op": str, ...}``. Each gets
exactly one RESPONSE, ``{"id": <same>, "ok": true, ...}`` or ``{"id":
<same>, "ok": false, "error": "<one line>", "exit_code": 125|126|127}``
(126: the program cannot be executed, 127: it was not found, 125: anything
else). A request that is not JSON, or has no integer id, is answered with
id 0. ``stream`` fields are uint32 numbers the host picks, one per process.

``hello``
    -> ``{"version": VERSION, "kernel": release}``.
``storage`` ``{"layers": [{"serial", "fstype": "erofs"|"ext4"}...]`` (bottom
    to top), ``"upper": {"serial", "fstype": "ext4"} | null``, ``"shares":
    [{"tag", "readonly": bool}]}``
    Disks are found by their virtio-blk serial (``/sys/block/vdX/serial``;
    the device keeps only the first ``SERIAL_MAX`` bytes, so a longer serial
    is matched by its prefix). Layers are mounted read-only at
    ``<state>/layers/<i>``; the upper disk at ``<state>/upper`` (``diff/`` and
    ``work/`` inside are made when absent, and reused: the disk outlives the
    container's runs), a tmpfs without one; the overlay at ``<state>/rootfs``
    (an image without layers gets an empty lower directory); 9p shares at
    ``<state>/shares/<tag>``. -> ``{"rootfs": <path>}``. Once per boot: a
    second call answers the same and mounts nothing.
``network`` ``{"interfaces": [{"mac", "current_mac"?, "name", "address":
    "10.88.0.5/16", "gateway": str|null, "mtu": int|null}], "hostname": str|null}``
    lo up; each NIC, found by MAC (``current_mac`` when given: a NIC restored
    from a template, which then gets ``mac``), renamed, MTU set, its
    addresses replaced by ``address``, up, default route via ``gateway``. -> ``{}``.
``wake`` ``{"time_ns": int, "entropy": hex}`` the first request to a guest
    restored from a template (it wakes with the template's clock and the
    random state every restore of it shares): sets CLOCK_REALTIME to
    ``time_ns`` and mixes ``entropy`` (16-512 bytes) into the kernel's pool
    (the VM generation ID device has made the kernel reseed too). -> ``{}``.
``create`` ``{"stream", "container_id", "config": <config.json as a dict>,
    "tty", "open_stdin", "console": {"height", "width"} | null}``
    (``container_id``, not ``id``: that is the request's.)
    ``config`` is already rewritten for the guest (``root.path`` is the
    rootfs from ``storage``, bind sources under ``<state>/shares``). The
    agent sets ``process.terminal`` to ``tty`` and ``process.consoleSize``
    from ``console``, writes the bundle and creates the container with the
    built-in runtime; its output comes back on ``stream``. One container
    per guest: another create is refused until the first one's init has
    exited. -> ``{"pid": int}``.
``start`` ``{"stream"}`` the container's init stream. -> ``{}``.
``exec`` ``{"stream", "process": <OCI process>, "tty", "open_stdin",
    "console": {"height", "width"} | null}`` another process in the
    container, started at once. -> ``{"pid": int}``.
``stat_path`` ``{"path": absolute, "follow": bool}`` the path in the running
    container's root (symlinks resolved inside it; ``follow``: a final one
    too). -> ``{"kind": "dir"|"file"|"other"|null, "path": the path found,
    "parent_missing": bool}``.
``extract`` ``{"stream", "directory": absolute, "owner": "keep"|[uid, gid]}``
    a process on ``stream`` that reads a tar stream from its stdin and
    extracts it into ``directory`` of the running container's root (as the
    host does for ``cp``: nothing lands outside it), then exits 0 after
    writing the bytes copied on stdout, or 1 with the error on stderr. ->
    ``{"pid": int}``.
``top`` ``{"args": [str]}`` the guest's ``ps`` (busybox's) with ``args``,
    and the container's pids (its cgroup's). -> ``{"output": str, "pids": [int]}``.
``update`` ``{"resources": <OCI linux.resources>}`` the running container's
    cgroup limits, as ``isobox-runtime update``. -> ``{}``.
``signal`` ``{"stream", "signal": int, "all": bool}`` the init's stream:
    the runtime's kill (``all``: every process of the container); an exec
    stream: that process. -> ``{}``.
``resize`` ``{"stream", "height", "width"}`` the process's terminal. -> ``{}``.
``sync`` syncfs of the upper layer, so the host can read the disk. -> ``{}``.
``stats`` -> ``{"memory_usage": bytes (without inactive file cache),
    "memory_limit": bytes (the guest's memory when unlimited),
    "cpu_usage_ns": int, "pids": int}`` of the container's cgroup.
``shutdown`` kills what is left, unmounts the rootfs, shares and disks,
    syncs, answers ``{}``, then powers the guest off (when the agent is PID 1).

Process streams
===============
STDOUT / STDERR frames carry a process's output (a tty's on STDOUT only).
STDIN frames are written to its stdin (when created with ``open_stdin``);
STDIN_EOF closes it (a tty stays open: it is the terminal). When the
process has exited and its output is drained (or ``DRAIN_GRACE`` seconds
after it exited, when something else still holds the output open), the
agent sends OUTPUT_EOF for the stream, then the EVENT ``{"event": "exit",
"stream": int, "exit_code": int}`` (128+n when killed by signal n). For the
container's init, the runtime's delete (processes, cgroup, state) has run
before that event.
"""

VERSION = 1
PORT_NAME = "isobox.agent"  #: the virtio-serial port's name

HELLO = "hello"
STORAGE = "storage"
NETWORK = "network"
CREATE = "create"
START = "start"
EXEC = "exec"
SIGNAL = "signal"
RESIZE = "resize"
SYNC = "sync"
STATS = "stats"
SHUTDOWN = "shutdown"
WAKE = "wake"
STAT_PATH = "stat_path"
EXTRACT = "extract"
TOP = "top"
UPDATE = "update"
OPS = (HELLO, STORAGE, NETWORK, CREATE, START, EXEC, SIGNAL, RESIZE, SYNC, STATS, SHUTDOWN,
       WAKE, STAT_PATH, EXTRACT, TOP, UPDATE)

READY = "ready"
EXIT = "exit"

EXIT_FAILED = 125
EXIT_CANNOT_INVOKE = 126
EXIT_NOT_FOUND = 127

DRAIN_GRACE = 2.0  #: seconds the agent waits for output after a process exits
SERIAL_MAX = 20  #: bytes of a virtio-blk serial the guest sees

# Where the guest keeps things; the host names them in the config it sends.
GUEST_STATE_DIR = "/run/isobox"
ROOTFS_DIR = "rootfs"  #: <state>/rootfs: the container's root
SHARES_DIR = "shares"  #: <state>/shares/<tag>: a 9p share
