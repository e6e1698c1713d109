"""Shared set-up of the execution-model tests: a real runtime loading `packs/exec_pack`, served
on a loopback port, and a websocket client that queues a prompt and collects its messages."""
from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "custom_nodes"))
sys.path.insert(0, str(HERE.parent / "server"))

from cn_env import make_runtime  # noqa: E402
from harness import LiveServer  # noqa: E402

PACKS = HERE / "packs"
T = TypeVar("T")


class Run:
    """What one prompt produced: websocket messages, binary frames, the history entry."""

    def __init__(self, prompt_id: str, events: list[dict[str, Any]], frames: list[bytes],
                 history: dict[str, Any], seconds: float) -> None:
        self.prompt_id, self.events, self.frames, self.history, self.seconds = prompt_id, events, frames, history, seconds

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["type"] == kind]

    @property
    def ran(self) -> list[str]:
        return [d["node"] for d in self.of("executing") if d.get("node") is not None]

    def values(self, node_id: str) -> list[Any]:
        return self.history["outputs"].get(node_id, {}).get("values", [])


class Client:
    """A websocket client of one LiveServer, like ComfyUI's API examples."""

    def __init__(self, srv: LiveServer, ws: aiohttp.ClientWebSocketResponse, client_id: str) -> None:
        self.srv, self.ws, self.client_id = srv, ws, client_id

    async def post(self, prompt: dict[str, Any], **fields: Any) -> tuple[int, dict[str, Any]]:
        async with self.srv.session.post(self.srv.url + "/prompt",
                                         json={"prompt": prompt, "client_id": self.client_id, **fields}) as r:
            return r.status, await r.json()

    async def run(self, prompt: dict[str, Any], timeout: float = 60.0, drain: float = 0.0, **fields: Any) -> Run:
        started = time.monotonic()
        status, body = await self.post(prompt, **fields)
        assert status == 200, body
        prompt_id = body["prompt_id"]
        events: list[dict[str, Any]] = []
        frames: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(msg.data)
                continue
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg, len(events))
            event = json.loads(msg.data)
            data = event.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            events.append(event)
            if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
        seconds = time.monotonic() - started
        if drain:  # previews travel in their own queue and may trail the last JSON message
            while True:
                try:
                    msg = await self.ws.receive(timeout=drain)
                except asyncio.TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append(msg.data)
        async with self.srv.session.get(f"{self.srv.url}/history/{prompt_id}") as r:
            history = (await r.json())[prompt_id]
        return Run(prompt_id, events, frames, history, seconds)


def serve(tmp_path: Path, body: Callable[[Client], Awaitable[T]], *flags: str, timeout: float = 120.0) -> T:
    """Run `body(client)` against a real server whose runtime loaded the test pack."""
    runtime = make_runtime(tmp_path, *flags, packs=PACKS)

    async def main() -> T:
        async with LiveServer(runtime) as srv:
            client_id = uuid.uuid4().hex
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId={client_id}") as ws:
                await ws.receive(timeout=5)  # the status message sent on connect
                return await body(Client(srv, ws, client_id))
    return asyncio.run(asyncio.wait_for(main(), timeout))


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}
