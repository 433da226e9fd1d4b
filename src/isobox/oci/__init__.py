"""Typed values of the OCI specs: strict to decode, free of I/O side effects."""
