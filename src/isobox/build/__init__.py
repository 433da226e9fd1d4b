"""Dockerfile builds: parser, executor, cache, context (see executor.py)."""
