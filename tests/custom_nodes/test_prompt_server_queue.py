"""ComfyUI's PromptServer queue API and `execution` module over Loom's queue and validator: through the real
server on a loopback port (an on-prompt handler rewriting the prompt, last_node_id inside a node, the queue and
history from a pack route, validate_prompt) and on a real SQLite queue (put, delete_queue_item, wipe_queue)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from cn_env import make_runtime
from test_server import Served

from compat.prompt_queue import ComfyPromptQueue
from executor.queue import PromptQueue

PACKS = Path(__file__).resolve().parent / "server_packs"
PROMPT = {"1": {"class_type": "LastNodeProbe", "inputs": {"text": "rewrite-me"}}}


async def _finished(srv: Served, prompt_id: str) -> dict:
    for _ in range(600):
        history = await srv.get_json(f"/history/{prompt_id}")
        if prompt_id in history:
            return history[prompt_id]
        await asyncio.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} did not finish")


def test_on_prompt_handler_queue_view_and_last_node(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, packs=PACKS)
    assert [p.state for p in runtime.custom_packs] == ["ok"], [p.to_json() for p in runtime.custom_packs]

    async def body() -> None:
        async with Served(runtime) as srv:
            async with srv.session.post(srv.url + "/prompt", json={"prompt": PROMPT, "client_id": "c1",
                                                                   "prompt_id": "p1"}) as response:
                assert response.status == 200, await response.text()
            entry = await _finished(srv, "p1")
            assert entry["outputs"]["1"]["text"] == ["rewritten", "1", "p1"]
            assert entry["prompt"][2]["1"]["inputs"]["text"] == "rewritten"  # the queued prompt is the rewritten one
            state = await srv.get_json("/queue_user/state?prompt_id=p1")
            assert state == {"running": 0, "pending": 0, "remaining": 0, "history": ["p1"], "seen": ["c1"],
                             "last_node_id": None}
            async with srv.session.post(srv.url + "/api/queue_user/validate",
                                        json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}) as r:
                checked = await r.json()
            assert checked["valid"] is False and checked["error"]["type"] == "missing_node_type"
            async with srv.session.post(srv.url + "/queue_user/validate", json={"prompt": PROMPT}) as r:
                assert (await r.json())["valid"] is True
    asyncio.run(body())


def test_queue_view_put_delete_wipe(tmp_path: Path) -> None:
    store = PromptQueue(tmp_path / "queue.sqlite3")
    try:
        view = ComfyPromptQueue(server=None, queue=store)
        view.put([5, "a", {"1": {}}, {"client_id": "x"}, ["1"]])
        view.put([2, "b", {"1": {}}, {}, ["1"]])
        view.put([9, "c", {"1": {}}, {}, ["1"]])
        running, pending = view.get_current_queue()
        assert running == [] and [item[1] for item in pending] == ["b", "a", "c"]
        assert pending[1] == [5, "a", {"1": {}}, {"client_id": "x"}, ["1"]]
        assert view.get_tasks_remaining() == 3
        assert view.delete_queue_item(lambda item: item[1] == "a") is True
        assert view.delete_queue_item(lambda item: item[1] == "zzz") is False
        assert [item[1] for item in view.get_current_queue()[1]] == ["b", "c"]
        view.wipe_queue()
        assert view.get_current_queue() == ([], []) and view.get_history() == {}
    finally:
        store.close()


def test_execution_get_input_data(tmp_path: Path) -> None:
    make_runtime(tmp_path, packs=PACKS)
    import execution
    import nodes
    from executor.dynamic import DynamicGraph

    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
              "2": {"class_type": "LastNodeProbe", "inputs": {"text": ["1", 0]}}}
    data, missing, _ = execution.get_input_data(prompt["2"]["inputs"], nodes.NODE_CLASS_MAPPINGS["LastNodeProbe"],
                                                "2", outputs={"1": (["from-1"],)})
    assert data == {"text": ["from-1"]} and missing == {}
    data, missing, _ = execution.get_input_data(prompt["2"]["inputs"], nodes.NODE_CLASS_MAPPINGS["LastNodeProbe"],
                                                "2", outputs={})
    assert data == {} and missing == {"text": True}
    save = nodes.NODE_CLASS_MAPPINGS["SaveImage"]
    data, _, hidden = execution.get_input_data({"filename_prefix": "x"}, save, "9", dynprompt=DynamicGraph(prompt),
                                               extra_data={"extra_pnginfo": {"workflow": 1}})
    assert data["filename_prefix"] == ["x"] and data["prompt"] == [prompt]
    assert data["extra_pnginfo"] == [{"workflow": 1}] and hidden["PROMPT"] == prompt
    assert execution.ExecutionResult.SUCCESS.value == 0 and execution.PromptQueue is ComfyPromptQueue
