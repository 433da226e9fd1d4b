"""Container records in SQLite (WAL): names are unique by constraint, so two
commands racing for one name get exactly one winner."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from isobox.errors import Conflict, NotFound
from isobox.linux.sqlitedb import open_db, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,          -- as the user named it
    image_id TEXT NOT NULL,
    created REAL NOT NULL,
    request TEXT NOT NULL,        -- the create request (Docker's Config + HostConfig), JSON
    state TEXT NOT NULL,          -- Docker's State object, JSON
    snapshot TEXT NOT NULL,       -- snapshot key of the writable layer
    runtime TEXT NOT NULL,
    isolation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    attributes TEXT NOT NULL
);
"""

_COLUMNS = "id, name, image, image_id, created, request, state, snapshot, runtime, isolation"


def initial_state() -> dict[str, Any]:
    return {"Status": "created", "Running": False, "Paused": False, "Restarting": False,
            "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
            "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z",
            "RestartCount": 0}


class ContainerRecord:
    __slots__ = ("created", "id", "image", "image_id", "isolation", "name", "request",
                 "runtime", "snapshot", "state")

    def __init__(self, id: str, name: str, image: str, image_id: str, created: float,
                 request: str, state: str, snapshot: str, runtime: str, isolation: str) -> None:
        self.id = id
        self.name = name
        self.image = image
        self.image_id = image_id
        self.created = created
        self.request: dict[str, Any] = json.loads(request)
        self.state: dict[str, Any] = json.loads(state)
        self.snapshot = snapshot
        self.runtime = runtime
        self.isolation = isolation


class ContainerStore:
    def __init__(self, path: str) -> None:
        self._db = open_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    def insert(self, *, id: str, name: str, image: str, image_id: str,
               request: dict[str, Any], snapshot: str, runtime: str, isolation: str) -> None:
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO containers({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (id, name, image, image_id, time.time(), json.dumps(request),
                            json.dumps(initial_state()), snapshot, runtime, isolation))
        except sqlite3.IntegrityError:
            owner = self._db.execute("SELECT id FROM containers WHERE name = ?",
                                     (name,)).fetchone()
            raise Conflict(f'Conflict. The container name "/{name}" is already in use by '
                           f'container "{owner[0] if owner else "?"}". You have to remove '
                           "(or rename) that container to be able to reuse that name.") from None

    def get(self, id: str) -> ContainerRecord:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM containers WHERE id = ?",
                               (id,)).fetchone()
        if row is None:
            raise NotFound(f"No such container: {id}")
        return ContainerRecord(*row)

    def lookup(self, ref: str) -> ContainerRecord:
        """By full id, name (with or without a leading /), or unique id prefix."""
        name = ref[1:] if ref.startswith("/") else ref
        row = self._db.execute(f"SELECT {_COLUMNS} FROM containers WHERE id = ? OR name = ?",
                               (ref, name)).fetchone()
        if row is not None:
            return ContainerRecord(*row)
        if ref and all(c in "0123456789abcdef" for c in ref):
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM containers WHERE id LIKE ?",
                                    (ref + "%",)).fetchall()
            if len(rows) == 1:
                return ContainerRecord(*rows[0])
            if len(rows) > 1:
                raise Conflict(f"multiple containers match the prefix {ref}")
        raise NotFound(f"No such container: {ref}")

    def all(self) -> list[ContainerRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM containers ORDER BY created DESC")
        return [ContainerRecord(*r) for r in rows.fetchall()]

    def set_state(self, id: str, state: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE containers SET state = ? WHERE id = ?", (json.dumps(state), id))

    def set_request(self, id: str, request: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE containers SET request = ? WHERE id = ?",
                       (json.dumps(request), id))

    def rename(self, id: str, new_name: str) -> None:
        try:
            with self._tx() as db:
                db.execute("UPDATE containers SET name = ? WHERE id = ?", (new_name, id))
        except sqlite3.IntegrityError:
            raise Conflict(f'Conflict. The container name "/{new_name}" is already in use')\
                from None

    def delete(self, id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (id,))

    def using_image(self, image_id: str) -> list[str]:
        rows = self._db.execute("SELECT id FROM containers WHERE image_id = ?", (image_id,))
        return [r[0] for r in rows.fetchall()]

    # -- events -------------------------------------------------------------------

    def add_event(self, type_: str, action: str, actor: str,
                  attributes: dict[str, str]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events(time, type, action, actor, attributes) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (time.time(), type_, action, actor, json.dumps(attributes)))

    def events(self, after_seq: int = 0, since: float | None = None,
               until: float | None = None) -> list[tuple[int, float, str, str, str,
                                                         dict[str, str]]]:
        query = "SELECT seq, time, type, action, actor, attributes FROM events WHERE seq > ?"
        args: list[Any] = [after_seq]
        if since is not None:
            query += " AND time >= ?"
            args.append(since)
        if until is not None:
            query += " AND time <= ?"
            args.append(until)
        rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [(s, t, ty, a, ac, json.loads(at)) for s, t, ty, a, ac, at in rows]
