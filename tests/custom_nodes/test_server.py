"""Custom nodes through the real server on a loopback port: the pack listing endpoint, web
extension scripts listed and served, a PromptServer route and `send_sync` reaching the
websocket client whose prompt runs, pack nodes in /object_info."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cn_env import EXAMPLE_PACKS, PACKS, make_runtime

from server.app import create_app
from server.keys import ServerSettings


class Served:
    """`async with Served(runtime) as srv`: the app on 127.0.0.1:<free port>."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    async def __aenter__(self) -> "Served":
        self.app = create_app(self.runtime, settings=ServerSettings(port=0))
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.runner.cleanup()

    async def get_json(self, path: str) -> Any:
        async with self.session.get(self.url + path) as response:
            assert response.status == 200, (path, response.status, await response.text())
            return await response.json()


def test_pack_listing_extensions_and_routes(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, "--custom-nodes-directory", str(EXAMPLE_PACKS))

    async def body() -> None:
        async with Served(runtime) as srv:
            for prefix in ("", "/api"):
                listing = await srv.get_json(prefix + "/loom/custom_nodes")
                packs = {p["name"]: p for p in listing["packs"]}
                assert packs["schema_pack"]["state"] == "ok" and packs["schema_pack"]["api"] == ["schema"]
                assert packs["raises_at_import"]["state"] == "failed"
                assert "boom at import" in packs["raises_at_import"]["error"]
                assert packs["single_module"]["collisions"] == ["PrimitiveString"]
                assert packs["classic_pack"]["web_directory"] == "/extensions/classic_pack"
                assert isinstance(packs["example"]["import_seconds"], float)
            scripts = await srv.get_json("/extensions")
            assert {"/extensions/classic_pack/classic.js", "/extensions/classic_pack/sub/deep.js",
                    "/extensions/loom_typed/typed.js", "/extensions/example/example.js"} <= set(scripts)
            assert not any(s.endswith(".css") for s in scripts)
            async with srv.session.get(srv.url + "/extensions/example/example.js") as response:
                assert response.status == 200
                assert "registerExtension" in await response.text()
            expected = (PACKS / "classic_pack" / "js" / "sub" / "deep.js").read_text()
            async with srv.session.get(srv.url + "/extensions/classic_pack/sub/deep.js") as response:
                assert response.status == 200 and await response.text() == expected
            async with srv.session.get(srv.url + "/extensions/classic_pack/../../single_module.py") as response:
                assert response.status in (403, 404)
            for prefix in ("", "/api"):
                assert await srv.get_json(prefix + "/classic_pack/hello") == {"hello": "classic_pack"}
            info = await srv.get_json("/object_info")
            assert info["ClassicScale"]["display_name"] == "Classic Scale"
            assert info["SchemaAdd"]["python_module"] == "custom_nodes.schema_pack"
            assert info["ExampleShowText"]["output_node"] is True
            assert info["PrimitiveString"]["python_module"] == "nodes.primitives"  # the built-in kept its name
    asyncio.run(body())


def test_send_sync_reaches_the_submitting_client(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)

    async def body() -> None:
        async with Served(runtime) as srv:
            async with srv.session.ws_connect(srv.url + "/ws?clientId=watcher") as ws:
                prompt = {"7": {"class_type": "ClassicNotify", "inputs": {"text": "hello from a pack"}}}
                async with srv.session.post(srv.url + "/prompt", json={"prompt": prompt, "client_id": "watcher"}) as r:
                    assert r.status == 200, await r.text()
                    prompt_id = (await r.json())["prompt_id"]
                notes, executed = [], []
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    message = await ws.receive(timeout=30)
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = message.json()
                    if event["type"] == "classic_pack.note":
                        notes.append(event["data"])
                    if event["type"] == "executed":
                        executed.append(event["data"])
                    if event["type"] == "executing" and event["data"].get("node") is None \
                            and event["data"].get("prompt_id") == prompt_id:
                        break
                assert notes == [{"text": "hello from a pack", "node": "7"}]
                assert executed and executed[0]["output"] == {"text": ["hello from a pack"]}
            history = await srv.get_json(f"/history/{prompt_id}")
            assert history[prompt_id]["outputs"]["7"] == {"text": ["hello from a pack"]}
            assert runtime.compat.prompt_server.loop is not None and runtime.compat.prompt_server.app is srv.app
    asyncio.run(body())
