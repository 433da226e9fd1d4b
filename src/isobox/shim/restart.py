"""Restart policies as Docker applies them, and its back-off between restarts."""

from __future__ import annotations

from isobox.shim.config import RestartPolicy

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
# A run at least this long resets the back-off to its start.
RESET_AFTER = 10.0


def should_restart(policy: RestartPolicy, exit_code: int, restart_count: int,
                   stopped_by_user: bool) -> bool:
    """Whether the container restarts after an exit (Docker's restart manager).

    A manual stop (stop, or a kill with SIGKILL or the stop signal) ends every
    policy until the next start; ``on-failure`` restarts a non-zero exit while
    fewer than ``max_retries`` restarts were made (0: no limit)."""
    if policy.name == "no" or stopped_by_user:
        return False
    if policy.name in ("always", "unless-stopped"):
        return True
    # on-failure
    if policy.max_retries and restart_count >= policy.max_retries:
        return False
    return exit_code != 0


class Backoff:
    """100 ms, doubled at each restart up to a minute; back to 100 ms after a
    run of 10 s or more."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self, ran_for: float) -> float:
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        if self.delay == 0.0:
            self.delay = BACKOFF_START
        elif self.delay < BACKOFF_MAX:
            self.delay *= 2
        self.delay = min(self.delay, BACKOFF_MAX)
        return self.delay
