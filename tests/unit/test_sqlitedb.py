"""isobox.linux.sqlitedb.open_db: WAL and the schema, applied once per schema."""

from __future__ import annotations

from pathlib import Path

from isobox.linux.sqlitedb import open_db

SCHEMA = "CREATE TABLE IF NOT EXISTS a (x TEXT);"


def test_a_new_file_gets_wal_and_the_schema_and_keeps_them(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    db = open_db(path, SCHEMA)
    db.execute("INSERT INTO a VALUES ('kept')")
    db.close()
    again = open_db(path, SCHEMA)
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.execute("SELECT x FROM a").fetchall() == [("kept",)]
    mark = again.execute("PRAGMA user_version").fetchone()[0]
    again.close()
    assert mark != 0


def test_a_changed_schema_is_applied_to_an_existing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    open_db(path, SCHEMA).close()
    db = open_db(path, SCHEMA + "\nCREATE TABLE IF NOT EXISTS b (y TEXT);")
    assert db.execute("SELECT count(*) FROM b").fetchone()[0] == 0
    db.close()


def test_a_file_from_before_the_mark_gets_it(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "t.db")
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)
    old.close()
    db = open_db(path, SCHEMA)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] != 0
    db.close()
