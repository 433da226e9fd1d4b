"""SQLite the way every isobox database uses it: WAL (readers never block the
writer, two CLIs and a daemon can share a file), a busy timeout, and
transactions that take the write lock up front."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import zlib
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
        db.execute("PRAGMA synchronous=NORMAL")
        # The schema's checksum in user_version: a file already made with
        # this schema (every open but the first) skips the script and the
        # switch to WAL, which the file keeps.
        mark = zlib.crc32(schema.encode()) & 0x7FFFFFFF
        if db.execute("PRAGMA user_version").fetchone()[0] != mark:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)
            db.execute(f"PRAGMA user_version={mark}")
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
