"""Async nodes, progress (progress_state, ComfyAPI, previews with metadata), partial execution
targets and history paging through the real server and websocket (pack: `packs/exec_pack`)."""
from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path

from exec_env import Client, node, serve


def test_independent_async_nodes_run_concurrently_and_report_progress(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        prompt = {"1": node("ExecInt", value=7)}
        for i, seconds in enumerate((1.0, 1.0, 1.0)):
            prompt[f"s{i}"] = node("ExecSleep", value=["1", 0], seconds=seconds)
            prompt[f"r{i}"] = node("ExecRecord", value=[f"s{i}", 0])
        run = await c.run(prompt)
        assert run.history["status"]["status_str"] == "success"
        assert [run.values(f"r{i}") for i in range(3)] == [[7], [7], [7]]
        assert run.seconds < 2.2, f"three independent 1 s async sleeps took {run.seconds:.2f} s"
        progress_nodes = {p["node"] for p in run.of("progress")}
        assert progress_nodes == {"s0", "s1", "s2"}, "each sleep reports progress under its own id"
        states: dict = {}
        for message in run.of("progress_state"):
            assert message["prompt_id"] == run.prompt_id
            states.update(message["nodes"])
        assert {"s0", "s1", "s2"} <= set(states) and all(s["state"] == "finished" for s in states.values())
        assert all(s["display_node_id"] == s["node_id"] and s["parent_node_id"] is None for s in states.values())
    serve(tmp_path, body)


def test_async_failure_lazy_hook_and_api_progress(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        failed = await c.run({"1": node("ExecInt", value=3), "2": node("ExecSleep", value=["1", 0], seconds=0.3),
                              "3": node("ExecFail", value=["1", 0], seconds=0.05),
                              "4": node("ExecRecord", value=["2", 0]), "5": node("ExecRecord", value=["3", 0])})
        error = failed.of("execution_error")[0]
        assert error["node_id"] == "3" and error["node_type"] == "ExecFail"
        assert error["exception_message"] == "async failure for 3" and error["exception_type"] == "RuntimeError"
        assert failed.history["status"]["status_str"] == "error"
        lazy = await c.run({"1": node("ExecInt", value=1), "2": node("ExecInt", value=2),
                            "3": node("ExecAsyncLazySwitch", pick_first=False, first=["1", 0], second=["2", 0]),
                            "4": node("ExecRecord", value=["3", 0])})
        assert lazy.values("4") == [2] and "1" not in lazy.ran, "the async check_lazy_status skipped input 1"
        api = await c.run({"1": node("ExecInt", value=5), "2": node("ExecApiProgress", value=["1", 0]),
                           "3": node("ExecRecord", value=["2", 0])})
        assert [(p["value"], p["max"], p["node"]) for p in api.of("progress")] == [(1, 3, "2"), (2, 3, "2"), (3, 3, "2")]
    serve(tmp_path, body)


def test_interrupting_an_async_node(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        status, answer = await c.post({"1": node("ExecInt", value=1), "2": node("ExecSleep", value=["1", 0], seconds=20),
                                       "3": node("ExecRecord", value=["2", 0])})
        assert status == 200
        await c.srv.wait_running(answer["prompt_id"])
        await asyncio.sleep(0.3)
        started = time.monotonic()
        async with c.srv.session.post(c.srv.url + "/interrupt", json={}) as r:
            assert r.status == 200
        entry = await c.srv.wait_history(answer["prompt_id"], timeout=10)
        assert time.monotonic() - started < 3
        kinds = [m[0] for m in entry["status"]["messages"]]
        assert "execution_interrupted" in kinds
    serve(tmp_path, body)


def test_preview_frames_with_metadata_for_clients_that_ask(tmp_path: Path) -> None:
    from PIL import Image

    async def body(c: Client) -> None:
        await c.ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        await asyncio.sleep(0.2)
        run = await c.run({"1": node("SlowPreview")}, drain=1.0)
        frames = [f for f in run.frames if struct.unpack(">I", f[:4])[0] == 4]
        assert frames, ("no type-4 preview frame", [f[:8] for f in run.frames], run.of("progress"))
        length = struct.unpack(">I", frames[0][4:8])[0]
        header = json.loads(frames[0][8:8 + length])
        assert header == {"node_id": "1", "prompt_id": run.prompt_id, "display_node_id": "1", "parent_node_id": None,
                          "real_node_id": "1", "image_type": "image/jpeg"}
        assert Image.open(__import__("io").BytesIO(frames[0][8 + length:])).size == (8, 8)
    serve(tmp_path, body)


def test_partial_execution_targets_and_history_paging(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        prompt = {"1": node("ExecInt", value=1), "2": node("ExecRecord", value=["1", 0]),
                  "3": node("ExecInt", value=2), "4": node("ExecRecord", value=["3", 0])}
        run = await c.run(prompt, partial_execution_targets=["4"])
        assert set(run.history["outputs"]) == {"4"} and "1" not in run.ran and "2" not in run.ran
        ids = [run.prompt_id]
        for value in (3, 4):
            prompt["1"]["inputs"]["value"] = value
            ids.append((await c.run(prompt)).prompt_id)
        async def history(query: str) -> list[str]:
            async with c.srv.session.get(f"{c.srv.url}/history{query}") as r:
                assert r.status == 200
                return list(await r.json())
        assert await history("") == ids
        assert await history("?max_items=2") == ids[1:], "without offset: the newest max_items, oldest first"
        assert await history("?max_items=1&offset=1") == ids[1:2]
        assert await history("?offset=10") == [], "an offset beyond the end is empty, not an error"
    serve(tmp_path, body)


def test_a_sync_node_does_not_block_the_server_loop(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        status, answer = await c.post({"1": node("BusyNode", seconds=1.5)})
        assert status == 200
        await c.srv.wait_running(answer["prompt_id"])
        started = time.monotonic()
        async with c.srv.session.get(c.srv.url + "/queue") as r:
            assert r.status == 200 and (await r.json())["queue_running"]
        assert time.monotonic() - started < 0.5
        await c.srv.wait_history(answer["prompt_id"])
    serve(tmp_path, body)


