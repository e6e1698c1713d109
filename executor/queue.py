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

Listings cost what their page holds, not what the history holds: each queued item keeps the
strict JSON text it was stored as, and `queue_text` splices those texts (nothing re-encoded);
`history_text` splices the stored entry texts of one page; beside each history entry a small
row of `history_jobs` holds its job summary (executor/queue_summary.py) and the columns
`/api/jobs` filters and sorts by, so a page of jobs reads a few small rows and no prompt. The
summaries are rebuilt when the queue opens if any are missing (a file written by an older Loom,
a recovered file) or of an older `SUMMARY_VERSION`.
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
from executor.queue_summary import SUMMARY_VERSION, JobSummary, job_summary, strict_json_text

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
CREATE TABLE IF NOT EXISTS history_jobs (
    seq INTEGER PRIMARY KEY,
    prompt_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    number REAL NOT NULL,
    create_time REAL NOT NULL,
    duration REAL NOT NULL,
    workflow_id TEXT,
    job TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_jobs_created ON history_jobs(create_time, number);
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
    _public: str | None = field(default=None, repr=False, compare=False)

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

    def stored_text(self) -> str:
        """The strict JSON text of `as_list(public=False)`, made once (what the queue stores)."""
        if self.raw is None:
            self.raw = item_text(self, public=False)
        return self.raw

    def public_text(self) -> str:
        """The strict JSON text of `as_list()` (what GET /queue and history show), made once."""
        if not SENSITIVE_EXTRA_KEYS & self.extra_data.keys():
            return self.stored_text()
        if self._public is None:
            self._public = item_text(self, public=True)
        return self._public


_NODES_PER_CALL = 500


def prompt_text(prompt: Any) -> str:
    """A prompt as strict JSON text, encoded some hundred nodes per call: one call for a huge
    prompt would hold the interpreter lock for seconds, and other threads (the event loop) run
    between these. The text is what one `json.dumps` of the whole prompt would give."""
    if not isinstance(prompt, dict) or not all(isinstance(key, str) for key in prompt):
        return strict_json_text(prompt)
    nodes = list(prompt.items())
    parts = [strict_json_text(dict(nodes[at:at + _NODES_PER_CALL]))[1:-1]
             for at in range(0, len(nodes), _NODES_PER_CALL)]
    return "{" + ", ".join(parts) + "}"


def item_text(item: QueueItem, public: bool, prompt: str | None = None) -> str:
    """`item.as_list(public)` as strict JSON text; `prompt` is the prompt's text when already made."""
    number, prompt_id, graph, extra, outs = item.as_list(public)
    body = prompt if prompt is not None else prompt_text(graph)
    return (f"[{strict_json_text(number)}, {json.dumps(prompt_id)}, {body}, {strict_json_text(extra)}, "
            f"{strict_json_text(outs)}]")


def _parse_stored(text: str) -> tuple[Any, bool]:
    """Stored JSON text parsed, and whether it was strict (older files may hold NaN)."""
    loose: list[str] = []

    def constant(name: str) -> float:
        loose.append(name)
        return float("nan")
    return json.loads(text, parse_constant=constant), not loose


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
                    (num, pid, prompt, extra, outs), strict = _parse_stored(item)
                    self._pending[pid] = QueueItem(float(number), pid, prompt, extra, outs, seq, created,
                                                   item if strict else None)
                except (TypeError, ValueError) as exc:
                    log.warning("skipping an unreadable queued prompt in %s: %s", self.path, exc)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()
            self._counter = int(row[0]) if row else 0
            self._sync_summaries()

    def _sync_summaries(self) -> None:
        """Give every history entry its `history_jobs` row (all of them again when the stored
        summaries are of another version), dropping rows whose entry is gone."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'summary_version'").fetchone()
        if row is None or row[0] != SUMMARY_VERSION:
            self._db.execute("DELETE FROM history_jobs")
        self._db.execute("DELETE FROM history_jobs WHERE seq NOT IN (SELECT seq FROM history)")
        missing = [seq for (seq,) in self._db.execute(
            "SELECT h.seq FROM history h LEFT JOIN history_jobs j ON j.seq = h.seq WHERE j.seq IS NULL")]
        for seq in missing:
            pid, text = self._db.execute("SELECT prompt_id, entry FROM history WHERE seq = ?", (seq,)).fetchone()
            try:
                entry, strict = _parse_stored(text)
                summary = job_summary(pid, entry)
            except (TypeError, ValueError, AttributeError, RecursionError) as exc:
                log.warning("history entry %r in %s is unreadable (%s); it is left out of job listings", pid,
                            self.path, exc)
                continue
            with self._transaction():
                if not strict:  # stored by an older Loom with NaN in it: kept as strict JSON from now on
                    self._db.execute("UPDATE history SET entry = ? WHERE seq = ?", (strict_json_text(entry), seq))
                self._insert_summary(seq, pid, summary)
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('summary_version', ?)", (SUMMARY_VERSION,))
        if missing:
            log.info("job summaries built for %d history entr%s of %s", len(missing),
                     "y" if len(missing) == 1 else "ies", self.path)

    def _insert_summary(self, seq: int, prompt_id: str, summary: JobSummary) -> None:
        self._db.execute("INSERT OR REPLACE INTO history_jobs(seq, prompt_id, state, number, create_time, duration, "
                         "workflow_id, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (seq, prompt_id, summary.state, summary.number, summary.create_time, summary.duration,
                          summary.workflow_id, strict_json_text(summary.job)))

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
        with self._lock:
            known = self._pending.get(prompt_id) or self._running.get(prompt_id)
            if known is not None:
                return known.number, False
        body = prompt_text(prompt)  # the bulk of the work, done before taking the lock
        with self._cond:
            known = self._pending.get(prompt_id) or self._running.get(prompt_id)
            if known is not None:
                return known.number, False
            row = self._db.execute("SELECT number FROM history_jobs WHERE prompt_id = ?", (prompt_id,)).fetchone()
            if row is None:
                row = self._db.execute("SELECT json_extract(entry, '$.prompt[0]') FROM history WHERE prompt_id = ?",
                                       (prompt_id,)).fetchone()
            if row is not None:
                return row[0], False
            if number is None:
                number = self.next_number(front)
            seq = self._next_seq()
            item = QueueItem(float(number), prompt_id, prompt, dict(extra_data), list(outputs_to_execute), seq)
            item.raw = item_text(item, public=False, prompt=body)
            self._db.execute("INSERT INTO queue(prompt_id, number, seq, running, item, created) VALUES "
                             "(?, ?, ?, 0, ?, ?)", (prompt_id, item.number, seq, item.stored_text(), item.created))
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
            self._running[item.prompt_id] = item
            del self._pending[item.prompt_id]
            self._db.execute("UPDATE queue SET running = 1 WHERE prompt_id = ?", (item.prompt_id,))
        self._changed()
        return item

    def task_done(self, item: QueueItem, outputs: dict[str, Any], status: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move a finished prompt from the queue to history in one transaction; returns the entry."""
        entry = {"prompt": item.as_list(), "outputs": outputs, "status": status, "meta": meta or {}}
        # The prompt (the bulk of an entry) is reused as it was stored when queued, not re-encoded.
        text = (f'{{"prompt": {item.public_text()}, "outputs": {strict_json_text(outputs)}, '
                f'"status": {strict_json_text(status)}, "meta": {strict_json_text(entry["meta"])}}}')
        summary = job_summary(item.prompt_id, entry)
        with self._lock:
            self._running.pop(item.prompt_id, None)
            if not self._closed:
                with self._transaction():
                    self._db.execute("DELETE FROM queue WHERE prompt_id = ?", (item.prompt_id,))
                    self._db.execute("DELETE FROM written_outputs WHERE prompt_id = ?", (item.prompt_id,))
                    cursor = self._db.execute("INSERT OR REPLACE INTO history(prompt_id, status_str, entry, created) "
                                              "VALUES (?, ?, ?, ?)",
                                              (item.prompt_id, status.get("status_str"), text, time.time()))
                    self._insert_summary(int(cursor.lastrowid or 0), item.prompt_id, summary)
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
        row = self._db.execute("SELECT seq FROM history ORDER BY seq DESC LIMIT 1 OFFSET ?",
                               (self.max_history,)).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM history WHERE seq <= ?", (row[0],))
            self._db.execute("DELETE FROM history_jobs WHERE seq <= ?", (row[0],))

    def _transaction(self) -> "_Tx":
        return _Tx(self._db)

    # ---- listings and removal ----------------------------------------------------------------

    # The four readers below take no lock: they read the in-memory mirror from snapshots (a dict's
    # copy() is one step under the interpreter lock), so the event loop never waits on a thread
    # that is writing megabytes to the file with the queue's lock held.

    def running(self) -> list[QueueItem]:
        return list(self._running.copy().values())

    def pending(self) -> list[QueueItem]:
        return sorted(self._pending.copy().values(), key=lambda i: (i.number, i.seq))

    def find(self, prompt_id: str) -> tuple[str, QueueItem] | None:
        """("running" | "pending", item) for a queued id, else None. (A prompt being taken is put
        into `_running` before it leaves `_pending`, so it is always found.)"""
        item = self._running.get(prompt_id)
        if item is not None:
            return "running", item
        item = self._pending.get(prompt_id)
        if item is not None:
            return "pending", item
        item = self._running.get(prompt_id)
        return None if item is None else ("running", item)

    def remaining(self) -> int:
        """Pending plus running (what ComfyUI reports as `queue_remaining`)."""
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

    def _history_rows(self, max_items: int | None, offset: int) -> list[tuple[str, str]]:
        """(prompt_id, entry text) of one page, oldest first; without `offset`, the newest `max_items`."""
        with self._lock:
            if offset < 0 and max_items is not None:
                rows = self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq DESC LIMIT ?",
                                        (max(0, max_items),)).fetchall()
                return rows[::-1]
            limit = -1 if max_items is None else max(0, max_items)
            return self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq LIMIT ? OFFSET ?",
                                    (limit, max(0, offset))).fetchall()

    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """Entries oldest first, as ComfyUI: without `offset`, the newest `max_items`."""
        return {pid: json.loads(entry) for pid, entry in self._history_rows(max_items, offset)}

    def history_text(self, max_items: int | None = None, offset: int = -1) -> str:
        """`history(...)` as JSON text spliced from the stored entries (none parsed or re-encoded)."""
        rows = self._history_rows(max_items, offset)
        return "{" + ", ".join(f"{json.dumps(pid)}: {entry}" for pid, entry in rows) + "}"

    def history_jobs(self, states: Iterable[str], workflow_id: str | None = None, *, sort_by: str = "created_at",
                     descending: bool = True, first: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """The first `first` (all when None) job summaries of finished prompts in `states`
        (completed / failed / cancelled), ordered by `create_time` then `priority`, or by
        `execution_duration`; equal ones oldest first. Returns (jobs, how many match in all).
        Reads only the small `history_jobs` rows: no prompt is parsed."""
        states = [s for s in states if s in ("completed", "failed", "cancelled")]
        if not states:
            return [], 0
        where = f"state IN ({', '.join('?' for _ in states)})"
        params: list[Any] = list(states)
        if workflow_id is not None:
            where += " AND workflow_id = ?"
            params.append(workflow_id)
        way = "DESC" if descending else "ASC"
        order = f"duration {way}, seq" if sort_by == "execution_duration" else f"create_time {way}, number {way}, seq"
        limit = -1 if first is None else max(0, min(first, 2**62))  # offset + limit may pass SQLite's 64 bits
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM history_jobs WHERE {where}", params).fetchone()[0]
            rows = self._db.execute(f"SELECT job FROM history_jobs WHERE {where} ORDER BY {order} LIMIT ?",
                                    (*params, limit)).fetchall()
        return [json.loads(job) for (job,) in rows], int(total)

    def history_item(self, prompt_id: str) -> dict[str, Any] | None:
        text = self.history_item_text(prompt_id)
        return None if text is None else json.loads(text)

    def history_item_text(self, prompt_id: str) -> str | None:
        """The stored (strict JSON) text of one history entry, or None."""
        with self._lock:
            row = self._db.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else row[0]

    def history_job_parts(self, prompt_id: str) -> dict[str, str | None] | None:
        """A finished prompt's job summary and the JSON texts of its prompt graph, extra data,
        outputs and status, picked out by SQLite's `->` (JSON text out; nothing parsed in Python);
        None if unknown."""
        with self._lock:
            row = self._db.execute(
                "SELECT j.job, h.entry -> '$.prompt[2]', h.entry -> '$.prompt[3]', h.entry -> '$.outputs', "
                "h.entry -> '$.status' "
                "FROM history h JOIN history_jobs j ON j.seq = h.seq WHERE h.prompt_id = ?", (prompt_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("job", "prompt", "extra_data", "outputs", "status"), row))

    def in_history(self, prompt_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone() is not None

    def history_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        with self._lock:
            with self._transaction():
                for pid in prompt_ids:
                    if isinstance(pid, str):
                        self._db.execute("DELETE FROM history WHERE prompt_id = ?", (pid,))
                        self._db.execute("DELETE FROM history_jobs WHERE prompt_id = ?", (pid,))

    def clear_history(self) -> None:
        with self._lock:
            with self._transaction():
                self._db.execute("DELETE FROM history")
                self._db.execute("DELETE FROM history_jobs")

    # ---- the queue as GET /queue shows it ----------------------------------------------------

    def queue_text(self) -> str:
        """ComfyUI's `{"queue_running": [...], "queue_pending": [...]}` as JSON text spliced from
        each item's stored text: no prompt is re-encoded, whatever their size."""
        running, pending = self.running(), self.pending()
        return (f'{{"queue_running": [{", ".join(i.public_text() for i in running)}], '
                f'"queue_pending": [{", ".join(i.public_text() for i in pending)}]}}')

    # ---- placement by a dispatcher (cluster/) --------------------------------------------------

    def take(self, prompt_id: str) -> QueueItem | None:
        """Mark this pending prompt running (a dispatcher picking by model affinity rather than
        by number); None when it is no longer pending."""
        with self._lock:
            item = self._pending.get(prompt_id)
            if item is None:
                return None
            self._running[prompt_id] = item
            del self._pending[prompt_id]
            self._db.execute("UPDATE queue SET running = 1 WHERE prompt_id = ?", (prompt_id,))
        self._changed()
        return item

    def requeue(self, item: QueueItem) -> None:
        """Put a running prompt back to pending with its number unchanged (its worker was lost)."""
        with self._cond:
            if item.prompt_id not in self._running:
                return
            self._pending[item.prompt_id] = item
            del self._running[item.prompt_id]
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
