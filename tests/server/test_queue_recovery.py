"""A damaged queue database (garbage, truncated, one corrupt row) written by the test: the real
server still starts, /history answers strict JSON with every readable row, the damaged file is
set aside with a log line, and new prompts run."""
from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from executor.queue import PromptQueue
from harness import LiveServer, build_test_runtime, concat_prompt, run
from server.app import QUEUE_FILE


def _fill(path: Path, count: int) -> list[str]:
    """A real queue file with `count` finished prompts (each with some bulk) and one pending."""
    queue = PromptQueue(path)
    ids = []
    for i in range(count):
        pid = f"done-{i:03d}"
        queue.put(pid, {"1": {"class_type": "PrimitiveString", "inputs": {"value": "x" * 3000 + str(i)}}}, {}, ["1"])
        item = queue.get(timeout=1)
        assert item is not None
        queue.task_done(item, {"1": {"text": [str(i)]}}, {"status_str": "success", "completed": True, "messages": []})
        ids.append(pid)
    queue.put("still-pending", concat_prompt("a", "b"), {}, ["3"])
    queue.close()
    return ids


def _damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not a database \x00\xff" * 500)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif how == "corrupt_row":
        db = sqlite3.connect(path)
        db.execute("UPDATE history SET entry = '{\"prompt\": [1, 2' WHERE prompt_id = 'done-003'")
        db.commit()
        db.close()


@pytest.mark.parametrize("how", ["garbage", "truncated", "corrupt_row"])
def test_damaged_database_is_recovered(tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    runtime = build_test_runtime(tmp_path)
    path = Path(runtime.folders.user_directory) / QUEUE_FILE
    ids = _fill(path, 40)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, so truncation bites
    db.close()
    _damage(path, how)

    async def body() -> None:
        async with LiveServer(runtime) as srv:
            async with srv.session.get(f"{srv.url}/history") as r:
                assert r.status == 200
                history = json.loads(await r.text(), parse_constant=lambda c: pytest.fail(c))
            finished = set(history) - {"still-pending"}  # the recovered pending prompt may have run already
            if how == "corrupt_row":
                assert finished == set(ids) - {"done-003"}
                await srv.wait_history("still-pending")
            elif how == "truncated":
                assert finished <= set(ids)
            else:
                assert finished == set()
            async with srv.session.get(f"{srv.url}/api/jobs?limit=10") as r:
                assert r.status == 200
            done = await srv.post_prompt(concat_prompt("new", "one"))
            entry = await srv.wait_history(done["prompt_id"])
            assert entry["status"]["completed"]

    with caplog.at_level(logging.WARNING, logger="executor.queue_recovery"):
        run(body)
    aside = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert aside, "the damaged file was not set aside"
    assert any(str(aside[0]).split("-wal")[0].split("-shm")[0] in rec.getMessage() for rec in caplog.records)


def test_healthy_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    ids = _fill(path, 3)
    queue = PromptQueue(path)
    assert sorted(queue.history()) == ids and [i.prompt_id for i in queue.pending()] == ["still-pending"]
    queue.close()
    assert not [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
