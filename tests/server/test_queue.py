"""The durable queue on its own: ordering, idempotent ids, history shape and retention, reopening."""
from __future__ import annotations

import threading
from pathlib import Path

from executor.queue import PromptQueue


def _put(q: PromptQueue, pid: str, **kw) -> float:
    number, added = q.put(pid, {"1": {"class_type": "X", "inputs": {}}}, {"client_id": "c"}, ["1"], **kw)
    assert added
    return number


def _status(ok: bool = True) -> dict:
    return {"status_str": "success" if ok else "error", "completed": ok, "messages": [["execution_start", {}]]}


def test_order_front_and_number(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3")
    _put(q, "a")
    _put(q, "b")
    _put(q, "c", front=True)
    _put(q, "d", number=-100)
    assert [i.prompt_id for i in q.pending()] == ["d", "c", "a", "b"]
    assert [q.get().prompt_id for _ in range(4)] == ["d", "c", "a", "b"]
    q.close()


def test_entries_are_five_element_lists_without_secrets(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3")
    q.put("a", {"1": {}}, {"client_id": "c", "api_key_comfy_org": "secret"}, ["1"])
    entry = q.pending()[0].as_list()
    assert len(entry) == 5 and entry[1] == "a" and entry[4] == ["1"]
    assert "api_key_comfy_org" not in entry[3]
    q.task_done(q.get(), {}, _status())
    assert q.history_item("a")["prompt"][3] == {"client_id": "c"}
    q.close()


def test_same_id_twice_is_not_queued_twice(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3")
    first = _put(q, "a")
    again, added = q.put("a", {}, {}, [])
    assert not added and again == first and q.remaining() == 1
    item = q.get()
    q.task_done(item, {}, _status())
    again, added = q.put("a", {}, {}, [])
    assert not added and q.remaining() == 0
    q.close()


def test_history_shape_order_and_paging(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3")
    for pid in "abcde":
        _put(q, pid)
        q.task_done(q.get(), {"1": {"text": [pid]}}, _status(), {"1": {"node_id": "1"}})
    entry = q.history_item("c")
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    assert entry["prompt"][1] == "c" and entry["outputs"] == {"1": {"text": ["c"]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert list(q.history()) == list("abcde")
    assert list(q.history(max_items=2)) == ["d", "e"]
    assert list(q.history(max_items=2, offset=1)) == ["b", "c"]
    q.delete_history(["b"])
    assert list(q.history()) == list("acde")
    q.clear_history()
    assert q.history() == {}
    q.close()


def test_retention_bound(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3", max_history=3)
    for i in range(6):
        _put(q, f"p{i}")
        q.task_done(q.get(), {}, _status())
    assert list(q.history()) == ["p3", "p4", "p5"]
    q.close()


def test_reopen_keeps_pending_reruns_running_and_keeps_history(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = PromptQueue(path, max_history=2)
    _put(q, "done")
    q.task_done(q.get(), {"1": {}}, _status())
    _put(q, "running")
    _put(q, "pending")
    assert q.get().prompt_id == "running"
    q._db.close()  # as if the process died here: no clean shutdown
    q2 = PromptQueue(path, max_history=1)
    assert [i.prompt_id for i in q2.pending()] == ["running", "pending"]
    assert list(q2.history()) == ["done"]
    _put(q2, "new")
    numbers = [i.number for i in q2.pending()]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    q2.close()


def test_delete_and_clear_pending(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3")
    for pid in "abc":
        _put(q, pid)
    assert q.delete_pending(["b", "zzz"]) == ["b"]
    assert [i.prompt_id for i in q.pending()] == ["a", "c"]
    q.clear_pending()
    assert q.remaining() == 0
    q.close()


def test_blocking_get_wakes_on_put_and_close(tmp_path: Path) -> None:
    q = PromptQueue(tmp_path / "q.sqlite3")
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10).prompt_id))
    t.start()
    _put(q, "late")
    t.join(5)
    assert got == ["late"]
    assert q.get(timeout=0.05) is None
    q.close()
