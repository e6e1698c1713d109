"""The client conversation as ComfyUI's example websocket clients hold it, against a real server:
open /ws, POST /prompt, read the events up to `executing` null, read /history, fetch /view."""
from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from harness import LiveServer, build_test_runtime, concat_prompt, run, slow_prompt


async def _events_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str,
                             timeout: float = 30.0) -> tuple[list[dict[str, Any]], list[bytes]]:
    """JSON messages and binary frames received until `executing` null for `prompt_id`."""
    events: list[dict[str, Any]] = []
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.BINARY:
            frames.append(msg.data)
            continue
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        events.append(event)
        data = event["data"]
        if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return events, frames


def test_websocket_conversation_history_and_view(tmp_path: Path) -> None:
    async def body() -> None:
        runtime = build_test_runtime(tmp_path)
        async with LiveServer(runtime) as srv:
            client_id = uuid.uuid4().hex
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId={client_id}") as ws:
                first = json.loads((await ws.receive(timeout=5)).data)
                assert first["type"] == "status"
                assert first["data"]["sid"] == client_id
                assert first["data"]["status"]["exec_info"]["queue_remaining"] == 0
                prompt = {**slow_prompt(steps=3, text="hello"),
                          "9": {"class_type": "SaveTestImage", "inputs": {"name": "conv.png", "shade": 10}}}
                answer = await srv.post_prompt(prompt, client_id=client_id)
                assert set(answer) == {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
                pid = answer["prompt_id"]
                events, frames = await _events_until_done(ws, pid)
                # The executing-null message is sent only after history is stored.
                async with srv.session.get(f"{srv.url}/history/{pid}") as r:
                    history = (await r.json())[pid]
        kinds = [e["type"] for e in events]
        for kind in ("execution_start", "execution_cached", "executing", "progress", "executed", "execution_success"):
            assert kind in kinds, (kind, kinds)
        assert kinds.index("execution_start") < kinds.index("progress") < kinds.index("execution_success")
        progress = [e["data"] for e in events if e["type"] == "progress"]
        assert [p["value"] for p in progress] == [1, 2, 3] and progress[0]["max"] == 3
        assert all(p["prompt_id"] == pid and p["node"] == "1" for p in progress)
        executed = {e["data"]["node"]: e["data"] for e in events if e["type"] == "executed"}
        assert executed["1"]["output"] == {"text": ["hello"]}
        assert executed["9"]["output"]["images"][0]["filename"] == "conv.png"
        assert frames, "the submitter gets the preview frame"
        event_type, image_format = struct.unpack(">II", frames[0][:8])
        assert event_type == 1 and image_format == 1 and frames[0][8:10] == b"\xff\xd8"
        assert history["prompt"][1] == pid and len(history["prompt"]) == 5
        assert history["status"]["status_str"] == "success" and history["status"]["completed"]
        assert [m[0] for m in history["status"]["messages"]][0] == "execution_start"
        assert history["outputs"]["9"]["images"][0] == {"filename": "conv.png", "subfolder": "", "type": "output"}

    run(body)


def test_view_of_a_generated_image(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            pid = (await srv.post_prompt({"1": {"class_type": "SaveTestImage",
                                                "inputs": {"name": "v.png", "shade": 200}}}))["prompt_id"]
            image = (await srv.wait_history(pid))["outputs"]["1"]["images"][0]
            async with srv.session.get(f"{srv.url}/view", params=image) as r:
                assert r.status == 200 and r.content_type == "image/png"
                assert 'filename="v.png"' in r.headers["Content-Disposition"]
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert (await r.read())[:8] == b"\x89PNG\r\n\x1a\n"
            async with srv.session.get(f"{srv.url}/api/view", params={**image, "preview": "webp;90"}) as r:
                assert r.status == 200 and r.content_type == "image/webp"
                assert (await r.read())[8:12] == b"WEBP"
            async with srv.session.get(f"{srv.url}/view", params={**image, "preview": "jpeg;90"}) as r:
                assert r.content_type == "image/jpeg" and (await r.read())[:2] == b"\xff\xd8"
            async with srv.session.get(f"{srv.url}/view", params={"filename": "v.png [output]", "type": "input"}) as r:
                assert r.status == 200 and r.content_type == "image/png", "the annotation names the folder"
            for channel in ("rgb", "a", "rgba"):
                async with srv.session.get(f"{srv.url}/view", params={**image, "channel": channel}) as r:
                    assert r.status == 200 and r.content_type == "image/png", channel

    run(body)


def test_events_go_to_the_submitter_only_and_broadcast_without_client(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=alice") as alice, \
                    srv.session.ws_connect(f"{srv.url}/ws?clientId=bob") as bob:
                await alice.receive(timeout=5)
                await bob.receive(timeout=5)
                pid = (await srv.post_prompt(slow_prompt(steps=2, text="a"), client_id="alice"))["prompt_id"]
                events, frames = await _events_until_done(alice, pid)
                assert any(e["type"] == "progress" for e in events) and frames
                pid2 = (await srv.post_prompt(slow_prompt(steps=2, text="b")))["prompt_id"]
                bob_events, _ = await _events_until_done(bob, pid2)
            bob_kinds = {e["type"] for e in bob_events if e["data"].get("prompt_id") == pid}
            assert not bob_kinds - {"status"}, f"bob saw alice's events: {bob_kinds}"
            assert any(e["type"] == "progress" and e["data"]["prompt_id"] == pid2 for e in bob_events)

    run(body)


def test_client_connecting_mid_run_gets_the_running_node_and_interrupt(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            pid = (await srv.post_prompt(slow_prompt(steps=400, delay=0.02, text="long")))["prompt_id"]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                async with srv.session.get(f"{srv.url}/queue") as r:
                    if (await r.json())["queue_running"]:
                        break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=late") as ws:
                status = json.loads((await ws.receive(timeout=5)).data)
                assert status["type"] == "status" and status["data"]["status"]["exec_info"]["queue_remaining"] == 1
                running = json.loads((await ws.receive(timeout=5)).data)
                assert running["type"] == "executing" and running["data"]["node"] == "1"
                assert running["data"]["prompt_id"] == pid
                async with srv.session.post(f"{srv.url}/interrupt", json={"prompt_id": pid}) as r:
                    assert r.status == 200
                events, _ = await _events_until_done(ws, pid, timeout=10)
            assert any(e["type"] == "execution_interrupted" for e in events)
            history = await srv.wait_history(pid)
            assert history["status"]["status_str"] == "error" and not history["status"]["completed"]

    run(body)


def test_interrupt_a_pending_prompt_removes_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            first = (await srv.post_prompt(slow_prompt(steps=100, delay=0.02, text="1")))["prompt_id"]
            second = (await srv.post_prompt(slow_prompt(steps=1, text="2")))["prompt_id"]
            await srv.wait_running(first)
            async with srv.session.post(f"{srv.url}/api/interrupt", json={"prompt_id": second}) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/queue") as r:
                queue = await r.json()
            assert second not in [e[1] for e in queue["queue_pending"] + queue["queue_running"]]
            async with srv.session.post(f"{srv.url}/interrupt", data=b"") as r:
                assert r.status == 200
            history = await srv.wait_history(first)
            assert history["status"]["status_str"] == "error"
            async with srv.session.get(f"{srv.url}/history/{second}") as r:
                assert await r.json() == {}

    run(body)
