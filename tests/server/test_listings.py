"""Listings cost the page, not the history (issue 22): /api/jobs pages read the stored job
summaries (never a stored prompt), equal to a full sort of every job; /queue and /history are
spliced from stored strict JSON; an older file without summaries gets them on open."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from executor.queue import PromptQueue, prompt_text
from harness import LiveServer, build_test_runtime, no_worker, run
from server.app import QUEUE_FILE
from server.keys import QUEUE
from server.routes_jobs import _sort_key, history_job, queued_job


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {name} in a response")
    return json.loads(text, parse_constant=refuse)


def _status(kind: str, start: int, end: int) -> dict[str, Any]:
    last = {"ok": "execution_success", "error": "execution_error", "cancelled": "execution_interrupted"}[kind]
    return {"status_str": "error" if kind == "error" else "success", "completed": kind == "ok",
            "messages": [["execution_start", {"timestamp": start}], [last, {"timestamp": end}]]}


def _fill(path: Path, finished: int, pending: int) -> None:
    """Finished prompts with repeated create_times (ties), three end states, two workflows,
    different durations and outputs; then some pending ones."""
    queue = PromptQueue(path)
    for i in range(finished + pending):
        extra = {"client_id": "t", "create_time": 1000 + (i // 3) * 10 if i % 7 else "not a number",
                 "extra_pnginfo": {"workflow": {"id": f"wf{i % 2}"}}}
        queue.put(f"p{i:03d}", {"1": {"class_type": "PrimitiveString", "inputs": {"value": "v" * (i * 50)}}},
                  extra, ["1"], number=(i * 5) % 11)
        if i < finished:
            outputs = {"1": {"images": [{"filename": f"{i}.png", "type": "output"}] * (i % 3)}}
            queue.task_done(queue.get(timeout=1), outputs, _status(("ok", "error", "cancelled")[i % 3], i, i * i))
    queue.close()


def _reference(queue: PromptQueue, wanted: list[str], wid: str | None, sort_by: str, desc: bool) -> list[dict]:
    """Every job built from the full entries and sorted in Python: what a page must be a slice of."""
    jobs = [queued_job(i.as_list(), "in_progress") for i in queue.running() if "in_progress" in wanted]
    jobs += [queued_job(i.as_list(), "pending") for i in queue.pending() if "pending" in wanted]
    jobs += [job for pid, entry in queue.history().items() if (job := history_job(pid, entry))["status"] in wanted]
    jobs = [j for j in jobs if not wid or j.get("workflow_id") == wid]
    return sorted(jobs, key=_sort_key(sort_by), reverse=desc)


def _entry_reads(queue: PromptQueue, reads: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """From now on, record which (table, column) pairs the statements on the queue's connection
    read. (SQLite asks the authorizer when it prepares a statement; setting one expires the
    prepared statements, so each is prepared, and reported, again.)"""
    reads = [] if reads is None else reads
    reads.clear()

    def authorize(action: int, table: str | None, column: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_READ and table and column:
            reads.append((table, column))
        return sqlite3.SQLITE_OK
    queue._db.set_authorizer(authorize)
    return reads


def test_job_pages_equal_a_full_sort_and_read_no_prompt(tmp_path: Path) -> None:
    _fill(tmp_path / "user" / QUEUE_FILE, finished=40, pending=5)

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), hooks=(no_worker,)) as srv:
            queue = srv.app[QUEUE]
            reads = _entry_reads(queue)
            cases = [("", None, "created_at", "desc", 0, 10), ("completed,failed", None, "created_at", "asc", 3, 7),
                     ("cancelled,pending", "wf1", "created_at", "desc", 0, 50),
                     ("", None, "execution_duration", "desc", 5, 10),
                     ("completed,failed,cancelled", "wf0", "execution_duration", "asc", 0, 4),
                     ("", None, "created_at", "desc", 40, 10), ("", None, "created_at", "asc", 0, None),
                     ("completed", None, "created_at", "desc", 2**63 - 1, 2**63 - 1)]
            for status, wid, sort_by, order, offset, limit in cases:
                query = {"sort_by": sort_by, "sort_order": order, "offset": str(offset)}
                query.update({"status": status} if status else {})
                query.update({"workflow_id": wid} if wid else {})
                query.update({"limit": str(limit)} if limit is not None else {})
                wanted = status.split(",") if status else ["pending", "in_progress", "completed", "failed", "cancelled"]
                _entry_reads(queue, reads)
                async with srv.session.get(f"{srv.url}/api/jobs", params=query) as r:
                    assert r.status == 200, await r.text()
                    got = _strict(await r.text())
                assert ("history_jobs", "job") in reads or "completed" not in wanted
                assert ("history", "entry") not in reads and ("queue", "item") not in reads, "a listing read a prompt"
                every = _reference(queue, wanted, wid, sort_by, order == "desc")
                end = None if limit is None else offset + limit
                assert got["jobs"] == every[offset:end], query
                assert got["pagination"]["total"] == len(every)
                assert got["pagination"]["has_more"] == (offset + len(got["jobs"]) < len(every))
            async with srv.session.get(f"{srv.url}/history?max_items=3") as r:
                page = _strict(await r.text())
            assert list(page) == ["p037", "p038", "p039"] and page["p039"] == queue.history_item("p039")
            _entry_reads(queue, reads)
            async with srv.session.get(f"{srv.url}/api/jobs/p004") as r:
                job = _strict(await r.text())
            assert ("history", "entry") in reads  # one job's detail does read its entry (the watch works)
            entry = queue.history_item("p004")
            assert job == {**history_job("p004", entry), "outputs": entry["outputs"],
                           "execution_status": entry["status"],
                           "workflow": {"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]}}
            assert job["workflow"]["prompt"]["1"]["inputs"]["value"] == "v" * 200 and job["outputs_count"] == 1
            _entry_reads(queue, reads)
            async with srv.session.get(f"{srv.url}/queue") as r:
                listing = _strict(await r.text())
            assert [e[1] for e in listing["queue_pending"]] == [i.prompt_id for i in queue.pending()]
            assert not reads, "GET /queue must not touch the database"

    run(body)


def test_queue_and_history_texts_are_strict_and_keep_secrets_out(tmp_path: Path) -> None:
    queue = PromptQueue(tmp_path / "q.sqlite3")
    prompt = {"1": {"class_type": "X", "inputs": {"f": float("nan"), "g": 1.5}}, "2": {"inputs": {"s": "é\n\""}}}
    queue.put("a", prompt, {"client_id": "c", "api_key_comfy_org": "secret"}, ["1"])
    queue.put("b", {"1": {}}, {"client_id": "c"}, ["1"])
    listing = _strict(queue.queue_text())
    assert listing == {"queue_running": [], "queue_pending": [
        [1, "a", {"1": {"class_type": "X", "inputs": {"f": None, "g": 1.5}}, "2": {"inputs": {"s": "é\n\""}}},
         {"client_id": "c"}, ["1"]], [2, "b", {"1": {}}, {"client_id": "c"}, ["1"]]]}
    assert "secret" not in queue.queue_text()
    queue.task_done(queue.get(timeout=1), {"1": {"v": [float("inf")]}}, _status("ok", 1, 2))
    history = _strict(queue.history_text())
    assert history["a"]["prompt"][3] == {"client_id": "c"} and history["a"]["outputs"] == {"1": {"v": [None]}}
    assert "secret" not in queue.history_text() and _strict(queue.history_item_text("a")) == history["a"]
    assert queue.history_text(max_items=0) == "{}" and _strict(queue.history_text(offset=5)) == {}
    queue.close()


def test_an_older_file_gets_its_summaries_on_open(tmp_path: Path) -> None:
    path = tmp_path / "user" / QUEUE_FILE
    _fill(path, finished=6, pending=0)
    db = sqlite3.connect(path)  # as an older Loom left it: no summaries, an entry with NaN in its outputs
    db.execute("DELETE FROM history_jobs")
    db.execute("DELETE FROM meta WHERE key = 'summary_version'")
    entry = json.loads(db.execute("SELECT entry FROM history WHERE prompt_id = 'p002'").fetchone()[0])
    entry["outputs"] = {"1": {"x": [float("nan")]}}
    db.execute("UPDATE history SET entry = ? WHERE prompt_id = 'p002'", (json.dumps(entry),))
    db.commit()
    db.close()

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.get(f"{srv.url}/api/jobs?limit=100") as r:
                jobs = _strict(await r.text())["jobs"]
            assert sorted(j["id"] for j in jobs) == [f"p{i:03d}" for i in range(6)]
            async with srv.session.get(f"{srv.url}/history") as r:
                history = _strict(await r.text())
            assert len(history) == 6 and history["p002"]["outputs"] == {"1": {"x": [None]}}
            async with srv.session.post(f"{srv.url}/history", json={"delete": ["p001"]}) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/api/jobs?status=failed") as r:
                assert [j["id"] for j in _strict(await r.text())["jobs"]] == ["p004"]

    run(body)


def test_retention_and_clearing_keep_summaries_in_step(tmp_path: Path) -> None:
    queue = PromptQueue(tmp_path / "q.sqlite3", max_history=3)
    for i in range(6):
        queue.put(f"p{i}", {"1": {}}, {"create_time": i}, ["1"])
        queue.task_done(queue.get(timeout=1), {}, _status("ok", 0, 1))
    jobs, total = queue.history_jobs(["completed"])
    assert total == 3 and [j["id"] for j in jobs] == ["p5", "p4", "p3"]
    assert queue.put("p4", {}, {}, []) == (queue.history_item("p4")["prompt"][0], False)
    queue.clear_history()
    assert queue.history_jobs(["completed", "failed", "cancelled"]) == ([], 0)
    queue.close()


def test_prompt_text_is_one_dumps_of_the_prompt() -> None:
    prompt = {str(i): {"class_type": "N", "inputs": {"v": i / 3, "s": f"é{i}\"", "l": [str(i - 1), 0]}}
              for i in range(1234)}
    assert prompt_text(prompt) == json.dumps(prompt)
    assert prompt_text({}) == "{}" and prompt_text({1: "x"}) == json.dumps({1: "x"})
    assert json.loads(prompt_text({"a": {"x": float("nan")}})) == {"a": {"x": None}}
