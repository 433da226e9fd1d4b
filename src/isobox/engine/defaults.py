"""Where isobox keeps its state unless told otherwise. A module of its own,
with no imports, so that the CLI's thin front end can find its root's
command server before it imports anything else."""

DEFAULT_ROOT = "/var/lib/isobox"
DEFAULT_RUN_ROOT = "/run/isobox"
DEFAULT_SETTINGS_FILE = "/etc/isobox/daemon.json"
