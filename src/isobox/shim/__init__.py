"""The per-container monitor ("shim"): one process per container, outliving the
CLI and the daemon. It mounts the rootfs, creates the container through an OCI
runtime, owns its stdio (json-file log, attach), records its exit and applies
its restart policy, and serves requests on ``D/shim.sock``.

The contract with the engine is in :mod:`isobox.shim.config`; the engine's
side is :mod:`isobox.shim.client` (``launch``, ``ShimClient``, ``demux``).
Importing this package imports nothing else: the shim process stays small.
"""
