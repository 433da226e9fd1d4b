"""cgroup v1: one hierarchy per controller (or group of controllers)."""
