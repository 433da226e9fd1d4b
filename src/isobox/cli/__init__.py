"""``isobox``: Docker's verbs over the engine, daemonless (like Podman)."""
