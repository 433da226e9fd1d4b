"""cgroup v2 devices: not done here.

cgroup v2 has no device files: device access is controlled by an eBPF
program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to the cgroup, which isobox
does not build yet. set() therefore does nothing for devices on v2, and logs
a warning when the rules would restrict anything; it never fails. The
container still gets only the device nodes its spec creates in /dev.
"""

from __future__ import annotations

from isobox.linux.lazylog import get_logger

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.oci.runtime_spec import Resources

NAME = "devices"
_log = get_logger(__name__)


def apply(path: str, resources: Resources) -> None:
    rules = resources.devices or []
    if any(not r.allow for r in rules):
        _log.warning("%s: device cgroup rules need an eBPF program on cgroup v2, "
                     "which isobox does not install yet; %d rule(s) not enforced",
                     path, len(rules))
