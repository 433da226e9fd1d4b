"""Syscalls and host facts: the only package that talks to the kernel directly.

Import-light on purpose: the container-init path and the guest agent import
it, and nothing here imports anything above ``isobox.oci``.
"""
