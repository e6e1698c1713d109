"""Opening the queue's SQLite file, and recovering from a damaged one.

Owns: `open_queue_db(path, schema)`, which returns a connection to a healthy database in WAL
mode. A file that is not a database (garbage bytes), is truncated, fails SQLite's quick check,
or holds a row whose stored JSON does not parse is damaged: every row that can still be read
(row by row, so one bad page or one bad row loses only itself) is copied into a fresh file, the
damaged file (and its -wal/-shm) is set aside as `<name>.damaged-<UTC time>`, and a warning says
where. Loom starts either way; nothing is deleted.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# table -> the columns whose text must be valid JSON
_JSON_COLUMNS = {"queue": ("item",), "history": ("entry",), "meta": (), "written_outputs": ("output",),
                 "history_jobs": ("job",)}
_MAX_ROW_SCAN = 5_000_000


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _damage(db: sqlite3.Connection, schema: str) -> str | None:
    """Why the open database is damaged, or None when it is healthy."""
    db.executescript(schema)
    check = db.execute("PRAGMA quick_check").fetchall()
    if check != [("ok",)]:
        return f"integrity check failed: {'; '.join(str(row[0]) for row in check[:3])}"
    for table, columns in _JSON_COLUMNS.items():
        for column in columns:
            bad = db.execute(f"SELECT count(*) FROM {table} WHERE NOT json_valid({column})").fetchone()[0]
            if bad:
                return f"{bad} row(s) of {table} hold unreadable JSON"
    return None


def open_queue_db(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to `path` with `schema` applied, recovering a damaged file first."""
    try:
        db = _connect(path)
        reason = _damage(db, schema)
    except sqlite3.DatabaseError as exc:
        db, reason = None, f"{type(exc).__name__}: {exc}"
    if reason is None:
        assert db is not None
        return db
    if db is not None:
        db.close()
    return _recover(path, schema, reason)


def _readable_rows(path: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The rows of `table` that can be read and whose JSON columns parse (row by row on errors)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return [], []
    try:
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        if not columns:
            return [], []
        select = f"SELECT {', '.join(columns)} FROM {table}"
        try:
            rows = db.execute(select).fetchall()
        except sqlite3.DatabaseError:
            rows = _row_by_row(db, table, select)
    except sqlite3.DatabaseError:
        return [], []
    finally:
        db.close()
    wanted = [columns.index(c) for c in _JSON_COLUMNS.get(table, ()) if c in columns]
    return columns, [row for row in rows if all(_json_ok(row[i]) for i in wanted)]


def _row_by_row(db: sqlite3.Connection, table: str, select: str) -> list[tuple[Any, ...]]:
    """Each row read on its own, skipping those on unreadable pages."""
    rows: list[tuple[Any, ...]] = []
    try:
        last = int(db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0)
    except (sqlite3.DatabaseError, TypeError, ValueError):
        last = _MAX_ROW_SCAN // 100
    table_query = select + " WHERE rowid = ?"
    for rowid in range(1, min(last, _MAX_ROW_SCAN) + 1):
        try:
            rows.extend(db.execute(table_query, (rowid,)).fetchall())
        except sqlite3.DatabaseError:
            continue
    return rows


def _json_ok(value: Any) -> bool:
    try:
        json.loads(value)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


def _recover(path: Path, schema: str, reason: str) -> sqlite3.Connection:
    saved = {table: _readable_rows(path, table) for table in _JSON_COLUMNS}
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{aside}{suffix}")
    db = _connect(path)
    db.executescript(schema)
    kept = 0
    for table, (columns, rows) in saved.items():
        known = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        use = [i for i, c in enumerate(columns) if c in known]
        if not rows or not use:
            continue
        names = ", ".join(columns[i] for i in use)
        marks = ", ".join("?" for _ in use)
        for row in rows:
            try:
                db.execute(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", [row[i] for i in use])
                kept += 1
            except sqlite3.DatabaseError:
                continue
    log.warning("the queue database %s was damaged (%s); recovered %d readable row(s) into a fresh file and set "
                "the damaged file aside as %s", path, reason, kept, aside)
    return db
