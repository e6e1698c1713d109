"""aiohttp's own answers (404 unknown route, 405 wrong method, 413 body too large, static 404)
come back as Loom's JSON errors `{"error": {"type", "message"}}`, without server paths."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from harness import LiveServer, build_test_runtime, run


async def _error(response: aiohttp.ClientResponse, status: int, kind: str, tmp_path: Path) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, (response.status, text)
    assert response.content_type == "application/json", text
    body = await response.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind and body["error"]["message"], body
    assert str(tmp_path) not in text and str(Path.cwd()) not in text and "Traceback" not in text
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    return body["error"]


async def _read_everything(request: web.Request) -> web.Response:
    """A custom-node style route that reads the body with aiohttp's own limit (client_max_size)."""
    return web.json_response({"size": len(await request.read())})


def _hook(app: web.Application) -> None:
    app.router.add_post("/custom/echo", _read_everything)


def test_404_405_413_are_json_errors(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), hooks=(_hook,), max_upload_bytes=1000,
                              max_json_bytes=1000) as srv:
            for path in ("/no/such/route", "/api/no/such/route", "/extensions/none/x.js", "/api/nothing.json"):
                async with srv.session.get(srv.url + path) as r:
                    await _error(r, 404, "not_found", tmp_path)
            for method, path in (("DELETE", "/prompt"), ("PUT", "/api/queue"), ("PATCH", "/object_info")):
                async with srv.session.request(method, srv.url + path) as r:
                    error = await _error(r, 405, "method_not_allowed", tmp_path)
                    assert "GET" in r.headers["Allow"] and method in error["message"]
            big = b"x" * 1_200_000  # over client_max_size (max upload + 1 MB for form overhead)
            async with srv.session.post(srv.url + "/custom/echo", data=big) as r:
                error = await _error(r, 413, "too_large", tmp_path)
                assert "--max-upload-size" in error["message"]
            json_type = {"Content-Type": "application/json"}
            async with srv.session.post(srv.url + "/prompt", data=big, headers=json_type) as r:
                error = await _error(r, 413, "too_large", tmp_path)
                assert "1000 bytes" in error["message"]
            async with srv.session.post(srv.url + "/upload/image", data=big,
                                        headers={"Content-Type": "multipart/form-data; boundary=x"}) as r:
                await _error(r, 413, "too_large", tmp_path)
            async with srv.session.post(srv.url + "/custom/echo", data=b"small") as r:
                assert r.status == 200 and (await r.json()) == {"size": 5}
            async with srv.session.get(srv.url + "/queue") as r:
                assert r.status == 200

    run(body)
