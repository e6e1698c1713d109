"""The durable prompt queue and history, kept in one SQLite file (WAL mode).

Owns: the order in which prompts run (ComfyUI's `number`: lower runs first, `front` takes a
negative number), which prompt is running, the finished-prompt history in ComfyUI's shape and
its retention bound. Nothing here knows of HTTP or of the executor.

Durability (why SQLite in WAL mode with `synchronous=NORMAL`): every state change is one
committed transaction, so a process killed at any moment (`kill -9` mid-sampling) leaves a
consistent file. WAL + NORMAL survives process crashes, which is what we need; only an OS crash
or power loss can drop the last commits. On open, a prompt that was marked running is put back
to pending with its number unchanged, so it runs again first; history is never trimmed by a
restart, only by the `max_history` bound when a new entry is added. Outputs that name written
files (SaveImage's `images`...) are recorded as each node finishes (`record_output`), so a
prompt re-run after a crash reuses them instead of writing a second set; they move into the
history entry, and out of `written_outputs`, in the transaction that finishes the prompt.

Queue entries are ComfyUI's 5-element lists `[number, prompt_id, prompt, extra_data,
outputs_to_execute]`. A mirror of the (small) queue is kept in memory so `GET /queue` never
touches the disk; history is read from SQLite on demand.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from executor.queue_recovery import open_queue_db

log = logging.getLogger(__name__)

# Keys of extra_data never shown back to clients (ComfyUI strips the same ones).
SENSITIVE_EXTRA_KEYS = frozenset({"auth_token_comfy_org", "api_key_comfy_org"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    seq INTEGER NOT NULL,
    running INTEGER NOT NULL DEFAULT 0,
    item TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    status_str TEXT,
    entry TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS written_outputs (
    prompt_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (prompt_id, node_id)
);
"""


@dataclass
class QueueItem:
    """One queued prompt. `as_list()` is ComfyUI's 5-element entry."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    seq: int = 0
    created: float = field(default_factory=time.time)
    raw: str | None = field(default=None, repr=False)  # the stored JSON of as_list(public=False)

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return cid if isinstance(cid, str) and cid else None

    def as_list(self, public: bool = True) -> list[Any]:
        extra = self.extra_data
        if public:
            extra = {k: v for k, v in extra.items() if k not in SENSITIVE_EXTRA_KEYS}
        number: float | int = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, extra, list(self.outputs_to_execute)]


class QueueClosed(Exception):
    """Raised by `PromptQueue.get` once the queue has been closed."""


class PromptQueue:
    """A thread-safe persistent priority queue of prompts plus their history.

    The server's request handlers call `put`, `delete_pending`, the listings; the one worker
    thread calls `get` (blocking) and `task_done`. `on_change` is called (on the calling thread)
    after every change of the queue, so the server can broadcast a `status` message.
    """

    def __init__(self, path: Path | str, *, max_history: int = 10000,
                 on_change: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_history = max_history
        self.on_change = on_change
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._db = open_queue_db(self.path, _SCHEMA)  # recovers a damaged file (executor/queue_recovery.py)
        self._pending: dict[str, QueueItem] = {}
        self._running: dict[str, QueueItem] = {}
        self._flags: dict[str, Any] = {}
        self._load()

    # ---- start-up ----------------------------------------------------------------------------

    def _load(self) -> None:
        """Read the queue back; a prompt that was running when the process died runs again."""
        with self._lock:
            self._db.execute("UPDATE queue SET running = 0 WHERE running = 1")
            for number, seq, item, created in self._db.execute(
                    "SELECT number, seq, item, created FROM queue"):
                try:
                    num, pid, prompt, extra, outs = json.loads(item)
                    self._pending[pid] = QueueItem(float(number), pid, prompt, extra, outs, seq, created, item)
                except (TypeError, ValueError) as exc:
                    log.warning("skipping an unreadable queued prompt in %s: %s", self.path, exc)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()
            self._counter = int(row[0]) if row else 0

    def close(self) -> None:
        """Wake a blocked `get` (it raises QueueClosed) and close the file."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._db.close()

    # ---- submitting --------------------------------------------------------------------------

    def next_number(self, front: bool = False) -> int:
        """ComfyUI's numbering: a growing counter; `front` uses its negation so it runs first."""
        with self._lock:
            self._counter += 1
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('counter', ?)",
                             (str(self._counter),))
            return -self._counter if front else self._counter

    def contains(self, prompt_id: str) -> bool:
        """True when the id is pending, running or in history."""
        with self._lock:
            if prompt_id in self._pending or prompt_id in self._running:
                return True
            return self._db.execute("SELECT 1 FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone() is not None

    def put(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
            outputs_to_execute: list[str], *, number: float | None = None,
            front: bool = False) -> tuple[float, bool]:
        """Queue a prompt; returns (number, added). An id already known is not queued twice:
        the existing number (or the history entry's) is returned with added=False."""
        with self._cond:
            known = self._pending.get(prompt_id) or self._running.get(prompt_id)
            if known is not None:
                return known.number, False
            row = self._db.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
            if row is not None:
                return json.loads(row[0])["prompt"][0], False
            if number is None:
                number = self.next_number(front)
            seq = self._next_seq()
            item = QueueItem(float(number), prompt_id, prompt, dict(extra_data), list(outputs_to_execute), seq)
            item.raw = json.dumps(item.as_list(public=False))
            self._db.execute("INSERT INTO queue(prompt_id, number, seq, running, item, created) "
                             "VALUES (?, ?, ?, 0, ?, ?)", (prompt_id, item.number, seq, item.raw, item.created))
            self._pending[prompt_id] = item
            self._cond.notify()
        self._changed()
        return item.number, True

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM queue").fetchone()
        return int(row[0]) + 1

    # ---- the worker's side -------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """Take the next pending prompt (lowest number first) and mark it running.
        Blocks until one is there; returns None after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._pending:
                if self._closed:
                    raise QueueClosed()
                if self._flags:
                    return None
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)
            if self._closed:
                raise QueueClosed()
            item = min(self._pending.values(), key=lambda i: (i.number, i.seq))
            del self._pending[item.prompt_id]
            self._running[item.prompt_id] = item
            self._db.execute("UPDATE queue SET running = 1 WHERE prompt_id = ?", (item.prompt_id,))
        self._changed()
        return item

    def task_done(self, item: QueueItem, outputs: dict[str, Any], status: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move a finished prompt from the queue to history in one transaction; returns the entry."""
        entry = {"prompt": item.as_list(), "outputs": outputs, "status": status, "meta": meta or {}}
        # The prompt (the bulk of an entry) is reused as it was stored when queued, not re-encoded.
        public = item.raw if item.raw and not SENSITIVE_EXTRA_KEYS & item.extra_data.keys() else None
        text = (f'{{"prompt": {public or json.dumps(entry["prompt"])}, "outputs": {json.dumps(outputs)}, '
                f'"status": {json.dumps(status)}, "meta": {json.dumps(entry["meta"])}}}')
        with self._lock:
            self._running.pop(item.prompt_id, None)
            if not self._closed:
                with self._transaction():
                    self._db.execute("DELETE FROM queue WHERE prompt_id = ?", (item.prompt_id,))
                    self._db.execute("DELETE FROM written_outputs WHERE prompt_id = ?", (item.prompt_id,))
                    self._db.execute("INSERT OR REPLACE INTO history(prompt_id, status_str, entry, created) "
                                     "VALUES (?, ?, ?, ?)",
                                     (item.prompt_id, status.get("status_str"), text, time.time()))
                    self._trim_history()
        self._changed()
        return entry

    def record_output(self, prompt_id: str, node_id: str, output: dict[str, Any]) -> None:
        """Durably note that `node_id` of the running prompt wrote `output` (its ui dict)."""
        text = json.dumps(output)
        with self._lock:
            if not self._closed:
                self._db.execute("INSERT OR REPLACE INTO written_outputs(prompt_id, node_id, output) VALUES (?, ?, ?)",
                                 (prompt_id, node_id, text))

    def recorded_outputs(self, prompt_id: str) -> dict[str, Any]:
        """The outputs recorded for `prompt_id` by an earlier, interrupted run ({} if none)."""
        with self._lock:
            rows = self._db.execute("SELECT node_id, output FROM written_outputs WHERE prompt_id = ?",
                                    (prompt_id,)).fetchall()
        recorded: dict[str, Any] = {}
        for node_id, text in rows:
            try:
                recorded[node_id] = json.loads(text)
            except ValueError:
                continue
        return recorded

    def _trim_history(self) -> None:
        if self.max_history <= 0:
            return
        # The newest `max_history` entries stay: delete up to the seq of the first one beyond them
        # (a walk of the primary-key index, not a scan of the table).
        self._db.execute("DELETE FROM history WHERE seq <= "
                         "(SELECT seq FROM history ORDER BY seq DESC LIMIT 1 OFFSET ?)", (self.max_history,))

    def _transaction(self) -> "_Tx":
        return _Tx(self._db)

    # ---- listings and removal ----------------------------------------------------------------

    def running(self) -> list[QueueItem]:
        with self._lock:
            return list(self._running.values())

    def pending(self) -> list[QueueItem]:
        with self._lock:
            return sorted(self._pending.values(), key=lambda i: (i.number, i.seq))

    def find(self, prompt_id: str) -> tuple[str, QueueItem] | None:
        """("running" | "pending", item) for a queued id, else None."""
        with self._lock:
            if prompt_id in self._running:
                return "running", self._running[prompt_id]
            if prompt_id in self._pending:
                return "pending", self._pending[prompt_id]
            return None

    def remaining(self) -> int:
        """Pending plus running (what ComfyUI reports as `queue_remaining`)."""
        with self._lock:
            return len(self._pending) + len(self._running)

    def delete_pending(self, prompt_ids: Iterable[str]) -> list[str]:
        """Remove the given ids from the pending queue; returns those actually removed."""
        removed: list[str] = []
        with self._lock:
            with self._transaction():
                for pid in prompt_ids:
                    if isinstance(pid, str) and self._pending.pop(pid, None) is not None:
                        self._db.execute("DELETE FROM queue WHERE prompt_id = ?", (pid,))
                        removed.append(pid)
        if removed:
            self._changed()
        return removed

    def clear_pending(self) -> list[str]:
        with self._lock:
            ids = list(self._pending)
        return self.delete_pending(ids)

    # ---- history -----------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """Entries oldest first, as ComfyUI: without `offset`, the newest `max_items`."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]
            if offset < 0:
                offset = max(0, total - max_items) if max_items is not None else 0
            limit = -1 if max_items is None else max(0, max_items)
            rows = self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq LIMIT ? OFFSET ?",
                                    (limit, offset)).fetchall()
        return {pid: json.loads(entry) for pid, entry in rows}

    def history_summaries(self) -> dict[str, Any]:
        """Every history entry without its prompt graph (`prompt[2]` is `{}`): what job listings
        need. SQLite's JSON functions pick the small parts out, so the (big) prompts are never
        parsed into Python objects."""
        with self._lock:
            rows = self._db.execute(
                "SELECT prompt_id, json_extract(entry, '$.prompt[0]'), json_extract(entry, '$.prompt[3]'), "
                "json_extract(entry, '$.outputs'), json_extract(entry, '$.status'), json_extract(entry, '$.meta') "
                "FROM history ORDER BY seq").fetchall()
        summaries: dict[str, Any] = {}
        for pid, number, extra, outputs, status, meta in rows:
            try:
                summaries[pid] = {"prompt": [number, pid, {}, json.loads(extra or "{}"), []],
                                  "outputs": json.loads(outputs or "{}"), "status": json.loads(status or "{}"),
                                  "meta": json.loads(meta or "{}")}
            except ValueError:
                continue
        return summaries

    def history_item(self, prompt_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def history_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        with self._lock:
            with self._transaction():
                for pid in prompt_ids:
                    if isinstance(pid, str):
                        self._db.execute("DELETE FROM history WHERE prompt_id = ?", (pid,))

    def clear_history(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM history")

    # ---- placement by a dispatcher (cluster/) --------------------------------------------------

    def take(self, prompt_id: str) -> QueueItem | None:
        """Mark this pending prompt running (a dispatcher picking by model affinity rather than
        by number); None when it is no longer pending."""
        with self._lock:
            item = self._pending.pop(prompt_id, None)
            if item is None:
                return None
            self._running[prompt_id] = item
            self._db.execute("UPDATE queue SET running = 1 WHERE prompt_id = ?", (prompt_id,))
        self._changed()
        return item

    def requeue(self, item: QueueItem) -> None:
        """Put a running prompt back to pending with its number unchanged (its worker was lost)."""
        with self._cond:
            if self._running.pop(item.prompt_id, None) is None:
                return
            self._pending[item.prompt_id] = item
            if not self._closed:
                self._db.execute("UPDATE queue SET running = 0 WHERE prompt_id = ?", (item.prompt_id,))
            self._cond.notify()
        self._changed()

    # ---- flags (POST /free) ------------------------------------------------------------------

    def set_flag(self, name: str, value: Any) -> None:
        with self._cond:
            self._flags[name] = value
            self._cond.notify()

    def take_flags(self) -> dict[str, Any]:
        with self._lock:
            flags, self._flags = self._flags, {}
            return flags

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class _Tx:
    """BEGIN/COMMIT around a block (ROLLBACK on error); the connection is in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
