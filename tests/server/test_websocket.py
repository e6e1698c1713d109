"""Websocket delivery under pressure: a stalled client never blocks the worker or the others;
frames are neither compressed nor fragmented."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path

import aiohttp

from harness import LiveServer, build_test_runtime, run, slow_prompt
from server.ws import HUB


async def _stalled_client(url: str, client_id: str) -> socket.socket:
    """A websocket handshake by hand on a socket with a tiny receive buffer that is never read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await asyncio.sleep(0.2)
    return sock


def test_a_stalled_client_is_cut_off_and_blocks_nobody(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            hub = srv.app[HUB]
            hub.max_events = 200
            hub.stall_seconds = 0.5
            stalled = await _stalled_client(srv.url, "stalled")
            try:
                assert "stalled" in hub.clients
                # Small kernel buffers on the server side too, as on a slow network link.
                server_sock = hub.clients["stalled"].transport.get_extra_info("socket")
                server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                async with srv.session.ws_connect(f"{srv.url}/ws?clientId=good") as good:
                    await good.receive(timeout=5)
                    steps = 2000
                    start = time.monotonic()
                    # No client_id: everything is broadcast, to the stalled client too.
                    prompt = slow_prompt(steps=steps, delay=0.0005, text="x", previews=True)
                    pid = (await srv.post_prompt(prompt))["prompt_id"]
                    progress, frames = 0, 0
                    while True:
                        msg = await good.receive(timeout=30)
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            frames += 1
                            continue
                        event = json.loads(msg.data)
                        if event["type"] == "progress":
                            progress += 1
                        if event["type"] == "executing" and event["data"]["node"] is None:
                            break
                    elapsed = time.monotonic() - start
                assert progress == steps, "the good client got every progress event"
                assert 0 < frames <= steps
                assert hub.disconnected_slow >= 1 and "stalled" not in hub.clients
                assert elapsed < 30
                assert (await srv.wait_history(pid))["status"]["status_str"] == "success"
            finally:
                stalled.close()

    run(body)


def test_frames_are_not_compressed(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=z", compress=15) as ws:
                assert ws.compress == 0, "permessage-deflate must not be negotiated"
                first = await ws.receive(timeout=5)
                assert first.type == aiohttp.WSMsgType.TEXT and json.loads(first.data)["type"] == "status"

    run(body)


def test_preview_buffer_keeps_only_the_newest(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            hub = srv.app[HUB]
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=p") as ws:
                await ws.receive(timeout=5)
                client = hub.clients["p"]
                client.task.cancel()  # nobody drains this client's buffers now
                await asyncio.sleep(0)
                for i in range(10):
                    hub._dispatch_binary(bytes([0, 0, 0, 1, 0, 0, 0, 2, i]), "p")
                hub._dispatch_json("progress", {"value": 1}, "p")
                assert [f[-1] for f in client.previews] == [8, 9]
                assert hub.dropped_previews == 8 and len(client.events) == 1

    run(body)


def test_a_client_reading_a_10000_node_prompt_stays_connected_and_sees_it_finish(tmp_path: Path) -> None:
    """Some 20,000 events in a burst: per-node state may be coalesced, outputs and the end are not."""
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            hub = srv.app[HUB]
            nodes = 10_000
            prompt: dict = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "v"}}}
            for i in range(2, nodes + 1):
                prompt[str(i)] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=reader", max_msg_size=0) as ws:
                await ws.receive(timeout=5)
                pid = (await srv.post_prompt(prompt, client_id="reader"))["prompt_id"]
                executed, last_executing = 0, "unset"
                while True:
                    msg = await ws.receive(timeout=60)
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    event = json.loads(msg.data)
                    if event["data"].get("prompt_id") != pid:
                        continue
                    if event["type"] == "executed":
                        executed += 1
                    if event["type"] == "executing":
                        last_executing = event["data"]["node"]
                        if last_executing is None:
                            break
                    if event["type"] == "execution_success":
                        pass
                assert executed == nodes - 1, "every output message arrives"
                assert hub.disconnected_slow == 0 and "reader" in hub.clients
            assert (await srv.wait_history(pid, timeout=60))["status"]["status_str"] == "success"

    run(body, timeout=240)
