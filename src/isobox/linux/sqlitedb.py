"""SQLite the way every isobox database uses it: WAL (readers never block the
writer, two CLIs and a daemon can share a file), a busy timeout, and
transactions that take the write lock up front."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


def open_db(path: str, schema: str) -> sqlite3.Connection:
    # Two first commands on a fresh root would both switch the new file to
    # WAL and create the schema, and SQLite answers one of them "database is
    # locked" at once, whatever the busy timeout: serialise opening.
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        db = sqlite3.connect(path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    finally:
        os.close(lock)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock now, so a read-then-write never
    fails half-way on a lock upgrade."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
