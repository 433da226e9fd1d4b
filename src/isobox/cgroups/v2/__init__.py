"""cgroup v2: one unified hierarchy, controllers enabled per subtree."""
