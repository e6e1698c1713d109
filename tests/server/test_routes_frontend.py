"""The routes ComfyUI's official frontend calls beyond the classic API, through a real server on loopback:
the model browser, safetensors metadata, /internal/* (logs, folder paths, files), templates and user.css."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from safetensors.torch import save_file
import torch

from harness import LiveServer, build_test_runtime
from server.routes_frontend import template_file


def run(coro) -> None:
    asyncio.run(coro)


def _models(base: Path) -> None:
    ckpts = base / "models" / "checkpoints"
    (ckpts / "sub").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(ckpts / "a.safetensors"), metadata={"ss_network_dim": "16"})
    save_file({"w": torch.zeros(2)}, str(ckpts / "sub" / "b.safetensors"))
    (ckpts / "notes.txt").write_text("not a model")
    (ckpts / ".hidden.safetensors").write_bytes(b"x")
    Image.new("RGB", (8, 6), "red").save(ckpts / "a.png")


def test_model_browser_and_metadata(tmp_path: Path) -> None:
    _models(tmp_path)

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.get(f"{srv.url}/api/experiment/models") as r:
                kinds = {entry["name"]: entry["folders"] for entry in await r.json()}
            assert str(tmp_path / "models" / "checkpoints") in kinds["checkpoints"]
            assert "custom_nodes" not in kinds and "configs" not in kinds
            async with srv.session.get(f"{srv.url}/api/experiment/models/checkpoints") as r:
                files = await r.json()
            assert [f["name"] for f in files] == ["a.safetensors", "sub/b.safetensors"]
            assert files[0]["pathIndex"] == 0 and files[0]["size"] > 0 and files[0]["modified"] > 0
            async with srv.session.get(f"{srv.url}/experiment/models/nope") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/api/experiment/models/preview/checkpoints/0/a.safetensors") as r:
                assert r.status == 200 and r.content_type == "image/webp"
            async with srv.session.get(f"{srv.url}/api/experiment/models/preview/checkpoints/0/sub/b.safetensors") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/api/experiment/models/preview/checkpoints/9/a.safetensors") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/api/view_metadata/checkpoints?filename=a.safetensors") as r:
                assert await r.json() == {"ss_network_dim": "16"}
            async with srv.session.get(f"{srv.url}/api/view_metadata/checkpoints?filename=missing.safetensors") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/api/view_metadata/checkpoints?filename=..%2F..%2Fx") as r:
                assert r.status in (400, 403, 404)
            async with srv.session.get(f"{srv.url}/api/view_metadata/checkpoints") as r:
                assert r.status == 400
    run(body())


def test_internal_routes(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            (tmp_path / "output" / "old.png").write_bytes(b"1")
            (tmp_path / "output" / "new.png").write_bytes(b"2")
            import os
            os.utime(tmp_path / "output" / "old.png", (1, 1))
            async with srv.session.get(f"{srv.url}/internal/folder_paths") as r:
                paths = await r.json()
            assert paths["loras"] == [str(tmp_path / "models" / "loras")]

            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=watcher") as ws:
                async with srv.session.patch(f"{srv.url}/internal/logs/subscribe",
                                             json={"clientId": "watcher", "enabled": True}) as r:
                    assert r.status == 200
                logging.getLogger("loom.test").warning("a line for the terminal panel")
                message = None
                while message is None or message["type"] != "logs":
                    message = json.loads((await ws.receive(timeout=10)).data)
                assert message["data"]["entries"][0]["m"].endswith("a line for the terminal panel\n")
                assert set(message["data"]["size"]) == {"cols", "rows"}
            async with srv.session.get(f"{srv.url}/internal/logs/raw") as r:
                raw = await r.json()
            assert any("a line for the terminal panel" in e["m"] for e in raw["entries"])
            assert all(set(e) == {"t", "m"} for e in raw["entries"])
            async with srv.session.get(f"{srv.url}/internal/logs") as r:
                assert "a line for the terminal panel" in await r.json()
            async with srv.session.patch(f"{srv.url}/internal/logs/subscribe", data=b"nope") as r:
                assert r.status == 400
            async with srv.session.get(f"{srv.url}/user.css") as r:
                assert r.status == 200 and r.content_type == "text/css"
    run(body())


def test_templates_are_served_from_the_packages(tmp_path: Path) -> None:
    index = template_file("index.json")
    if index is None:
        pytest.skip("comfyui-workflow-templates is not installed (pip install -r requirements-frontend.txt)")
    first = json.loads(index.read_text())[0]["templates"][0]

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.get(f"{srv.url}/templates/index.json") as r:
                assert r.status == 200 and (await r.json())[0]["templates"][0]["name"] == first["name"]
            async with srv.session.get(f"{srv.url}/templates/{first['name']}.json") as r:
                assert r.status == 200 and "nodes" in await r.json()
            thumbnail = f"{first['name']}-1.{first.get('mediaSubtype', 'webp')}"
            async with srv.session.get(f"{srv.url}/templates/{thumbnail}") as r:
                assert r.status == 200 and len(await r.read()) > 100
            for bad in ("nope.json", "..%2F..%2Fsetup.py", "%2Fetc%2Fpasswd"):
                async with srv.session.get(f"{srv.url}/templates/{bad}") as r:
                    assert r.status == 404
    run(body())
