"""The front-ends served at `/`: Loom's editor (web/dist) and, with `--front-end comfyui`, ComfyUI's
frontend from the optional `comfyui-frontend-package`, plus the endpoints it calls on load."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import LiveServer, build_test_runtime, run
from server.comfy_frontend import LOOM_DIST, comfyui_frontend_root

LOAD_ENDPOINTS = ["/api/users", "/api/settings", "/api/system_stats", "/api/object_info", "/api/extensions",
                  "/api/embeddings", "/api/features", "/api/i18n", "/api/prompt", "/api/queue",
                  "/api/history?max_items=64", "/api/jobs?status=in_progress,pending&limit=200&offset=0",
                  "/api/jobs?status=completed,failed,cancelled&limit=64&offset=0", "/api/v2/userdata?path=workflows"]


def test_comfyui_frontend_is_served_with_its_load_endpoints(tmp_path: Path) -> None:
    root = comfyui_frontend_root()
    if root is None:
        pytest.skip("comfyui-frontend-package is not installed (optional dependency)")
    (tmp_path / "user" / "default" / "workflows").mkdir(parents=True)

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), front_end="comfyui") as srv:
            async with srv.session.get(srv.url + "/") as r:
                assert r.status == 200 and r.content_type == "text/html"
                html = await r.text()
            assert html == (root / "index.html").read_text()
            assets = re.findall(r'(?:src|href)="(?:\./|/)?(assets/[^"]+\.(?:js|css))"', html)
            assert assets, "index.html names its scripts"
            for asset in assets[:5]:
                async with srv.session.get(f"{srv.url}/{asset}") as r:
                    assert r.status == 200, asset
                    assert r.content_type in ("application/javascript", "text/javascript", "text/css"), asset
            async with srv.session.get(srv.url + "/api/extensions") as r:
                extensions = await r.json()
            assert "/extensions/core/groupNode.js" in extensions, "the frontend's core extensions are listed"
            async with srv.session.get(srv.url + extensions[0]) as r:
                assert r.status == 200
            for path in LOAD_ENDPOINTS:
                async with srv.session.get(srv.url + path) as r:
                    assert r.status == 200, (path, r.status)

    run(body)


def test_loom_editor_or_how_to_build_page(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.get(srv.url + "/") as r:
                assert r.status == 200 and r.content_type == "text/html"
                html = await r.text()
        if (LOOM_DIST / "index.html").is_file():
            assert html == (LOOM_DIST / "index.html").read_text()
        else:
            assert "npm run build" in html

    run(body)


def test_web_root_override_and_missing_page(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>custom</html>")
    (site / "app.js").write_text("console.log(1)")

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), web_root=site) as srv:
            async with srv.session.get(srv.url + "/") as r:
                assert await r.text() == "<html>custom</html>"
            async with srv.session.get(srv.url + "/app.js") as r:
                assert r.status == 200 and "console.log" in await r.text()
            async with srv.session.get(srv.url + "/../secret") as r:
                assert r.status in (400, 403, 404)
            async with srv.session.get(srv.url + "/api/queue") as r:
                assert r.status == 200, "API routes win over static files"

    run(body)
