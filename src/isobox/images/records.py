"""Image records: which images exist, and the names (tags, digests) that point
at them. SQLite in WAL mode, so two CLIs and a daemon can share it."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager

from isobox.errors import Conflict, InvalidArgument, NotFound
from isobox.linux.sqlitedb import open_db, transaction
from isobox.oci import reference as refs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,          -- config digest (Docker's image ID)
    manifest TEXT NOT NULL,       -- digest of the platform manifest
    created TEXT,                 -- from the config
    added REAL NOT NULL,          -- when it arrived here
    size INTEGER NOT NULL         -- unpacked layer bytes
);
CREATE TABLE IF NOT EXISTS names (
    ref TEXT PRIMARY KEY,         -- normalised 'domain/path:tag' or 'domain/path@digest'
    image_id TEXT NOT NULL REFERENCES images(id),
    manifest TEXT                 -- manifest digest as the registry knows it
);
CREATE INDEX IF NOT EXISTS names_by_image ON names(image_id);
"""


class ImageRecord:
    __slots__ = ("added", "created", "id", "manifest", "size")

    def __init__(self, id: str, manifest: str, created: str | None, added: float,
                 size: int) -> None:
        self.id = id
        self.manifest = manifest
        self.created = created
        self.added = added
        self.size = size

    def __repr__(self) -> str:
        return f"ImageRecord({self.id[:19]}...)"


class ImageRecords:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db = open_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    # -- images ---------------------------------------------------------------

    def add(self, image_id: str, manifest: str, created: str | None, size: int) -> ImageRecord:
        with self.transaction() as db:
            db.execute("INSERT INTO images(id, manifest, created, added, size) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET manifest=excluded.manifest",
                       (image_id, manifest, created, time.time(), size))
        return self.get(image_id)

    def get(self, image_id: str) -> ImageRecord:
        row = self._db.execute("SELECT id, manifest, created, added, size FROM images "
                               "WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        return ImageRecord(*row)

    def all(self) -> list[ImageRecord]:
        rows = self._db.execute("SELECT id, manifest, created, added, size FROM images "
                                "ORDER BY added DESC").fetchall()
        return [ImageRecord(*row) for row in rows]

    def remove(self, image_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM names WHERE image_id = ?", (image_id,))
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    # -- names ----------------------------------------------------------------

    def tag(self, ref: refs.Reference, image_id: str, manifest: str | None = None) -> None:
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise NotFound(f"No such image: {image_id}")
            db.execute("INSERT INTO names(ref, image_id, manifest) VALUES (?, ?, ?) "
                       "ON CONFLICT(ref) DO UPDATE SET image_id=excluded.image_id, "
                       "manifest=excluded.manifest", (str(ref), image_id, manifest))

    def untag(self, ref: refs.Reference) -> str:
        """Remove a name; returns the image id it pointed at."""
        with self.transaction() as db:
            row = db.execute("SELECT image_id FROM names WHERE ref = ?", (str(ref),)).fetchone()
            if row is None:
                raise NotFound(f"No such image: {ref.familiar()}")
            db.execute("DELETE FROM names WHERE ref = ?", (str(ref),))
            return str(row[0])

    def names_of(self, image_id: str) -> list[tuple[str, str | None]]:
        """(ref, manifest digest) pairs naming image_id."""
        rows = self._db.execute("SELECT ref, manifest FROM names WHERE image_id = ? "
                                "ORDER BY ref", (image_id,)).fetchall()
        return [(str(r), m) for r, m in rows]

    def resolve_name(self, ref: refs.Reference) -> tuple[str, str | None]:
        row = self._db.execute("SELECT image_id, manifest FROM names WHERE ref = ?",
                               (str(ref),)).fetchone()
        if row is None:
            raise NotFound(f"No such image: {ref.familiar()}")
        return str(row[0]), row[1]

    def lookup(self, text: str) -> ImageRecord:
        """An image by reference, full or short id, or name@digest, as Docker
        resolves it: a full id, else a name (so a tag like ``cafe`` is a name),
        else a unique id prefix."""
        body = text[7:] if text.startswith("sha256:") else text
        if len(body) == 64 and refs.looks_like_id(body):
            return self.get(f"sha256:{body}")
        try:
            return self._by_name(text)
        except NotFound:
            if not refs.looks_like_id(text):
                raise
        rows = self._db.execute("SELECT id FROM images WHERE id LIKE ?",
                                (f"sha256:{body}%",)).fetchall()
        if len(rows) > 1:
            raise Conflict(f"image id prefix {text} is ambiguous")
        if not rows:
            raise NotFound(f"No such image: {text}")
        return self.get(rows[0][0])

    def _by_name(self, text: str) -> ImageRecord:
        try:
            ref = refs.parse(text)
        except InvalidArgument:
            raise NotFound(f"No such image: {text}") from None
        if ref.digest and ref.tag is None:
            row = self._db.execute("SELECT image_id FROM names WHERE ref LIKE ? AND manifest = ?",
                                   (ref.name + "%", ref.digest)).fetchone()
            if row is None:
                row = self._db.execute("SELECT id FROM images WHERE manifest = ?",
                                       (ref.digest,)).fetchone()
            if row is None:
                raise NotFound(f"No such image: {text}")
            return self.get(row[0])
        return self.get(self.resolve_name(ref)[0])
