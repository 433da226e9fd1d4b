"""The low-level runtime: an OCI bundle becomes a contained process.

``isobox-runtime`` speaks runc's command line, so containerd and anything
else that drives runc can drive it.
"""
