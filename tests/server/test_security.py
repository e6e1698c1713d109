"""Origin checks, CORS, the bearer token, malformed bodies and error bodies without tracebacks."""
from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from harness import LiveServer, build_test_runtime, concat_prompt, run
from server.auth import origin_allowed
from server.http import add_api_routes


async def _queue_len(srv: LiveServer) -> int:
    async with srv.session.get(f"{srv.url}/history") as r:
        history = await r.json()
    async with srv.session.get(f"{srv.url}/queue") as r:
        queue = await r.json()
    return len(history) + len(queue["queue_pending"]) + len(queue["queue_running"])


def test_origin_rules() -> None:
    assert origin_allowed("http://127.0.0.1:8188", "127.0.0.1:8188", "http", None)
    assert origin_allowed("http://LOCALHOST:80", "localhost", "http", None)
    assert not origin_allowed("http://evil.example", "127.0.0.1:8188", "http", None)
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8188", "http", None)
    assert not origin_allowed("null", "127.0.0.1:8188", "http", None)
    assert not origin_allowed("file://", "127.0.0.1:8188", "http", None)
    assert origin_allowed("http://good.example", "127.0.0.1:8188", "http", "http://good.example")
    assert origin_allowed("null", "127.0.0.1:8188", "http", "*")


def test_cross_origin_state_changes_are_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            host = srv.url.removeprefix("http://")
            payload = {"prompt": concat_prompt("a", "b")}
            for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
                async with srv.session.post(f"{srv.url}/prompt", json=payload, headers={"Origin": origin}) as r:
                    assert r.status == 403, origin
                async with srv.session.post(f"{srv.url}/api/queue", json={"clear": True},
                                            headers={"Origin": origin}) as r:
                    assert r.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await srv.session.ws_connect(f"{srv.url}/ws", headers={"Origin": "http://evil.example"})
            assert info.value.status == 403
            assert await _queue_len(srv) == 0
            async with srv.session.post(f"{srv.url}/prompt", json=payload, headers={"Origin": f"http://{host}"}) as r:
                assert r.status == 200
            async with srv.session.post(f"{srv.url}/prompt", json=payload) as r:
                assert r.status == 200
            async with srv.session.ws_connect(f"{srv.url}/ws", headers={"Origin": f"http://{host}"}) as ws:
                assert json.loads((await ws.receive(timeout=5)).data)["type"] == "status"

    run(body)


def test_cors_header_allows_the_named_origin(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), cors_origin="http://good.example") as srv:
            payload = {"prompt": concat_prompt("a", "b")}
            async with srv.session.post(f"{srv.url}/prompt", json=payload,
                                        headers={"Origin": "http://good.example"}) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == "http://good.example"
            async with srv.session.options(f"{srv.url}/prompt", headers={
                    "Origin": "http://good.example", "Access-Control-Request-Method": "POST"}) as r:
                assert r.status == 200 and "POST" in r.headers["Access-Control-Allow-Methods"]
            async with srv.session.post(f"{srv.url}/prompt", json=payload,
                                        headers={"Origin": "http://evil.example"}) as r:
                assert r.status == 403

    run(body)


def test_auth_token(tmp_path: Path) -> None:
    async def body() -> None:
        (tmp_path / "output").mkdir(parents=True, exist_ok=True)
        (tmp_path / "output" / "t.txt").write_text("ok")
        async with LiveServer(build_test_runtime(tmp_path), auth_token="s3cret") as srv:
            for method, path in (("GET", "/queue"), ("GET", "/object_info"), ("POST", "/prompt"),
                                 ("GET", "/view?filename=t.txt"), ("GET", "/api/history")):
                async with srv.session.request(method, srv.url + path, json={}) as r:
                    assert r.status == 401, path
                async with srv.session.request(method, srv.url + path, json={},
                                               headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401, path
            good = {"Authorization": "Bearer s3cret"}
            async with srv.session.get(f"{srv.url}/queue", headers=good) as r:
                assert r.status == 200
            async with srv.session.post(f"{srv.url}/prompt", json={"prompt": concat_prompt("a", "b")},
                                        headers=good) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/view?filename=t.txt&token=s3cret") as r:
                assert r.status == 200 and await r.text() == "ok"
            async with srv.session.post(f"{srv.url}/queue?token=s3cret", json={"clear": True}) as r:
                assert r.status == 401, "?token= is for GET (websocket and image URLs) only"
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await srv.session.ws_connect(f"{srv.url}/ws?clientId=x")
            async with srv.session.ws_connect(f"{srv.url}/ws?clientId=x&token=s3cret") as ws:
                assert json.loads((await ws.receive(timeout=5)).data)["type"] == "status"

    run(body)


def test_front_end_files_need_no_token_but_the_api_does(tmp_path: Path) -> None:
    """A web extension's `import "../../scripts/app.js"` cannot carry the token: the page and its static files are
    served without it, while every API route, /view and the websocket still need it."""
    web_root = tmp_path / "dist"
    (web_root / "scripts").mkdir(parents=True)
    (web_root / "index.html").write_text("<!doctype html><title>Loom</title>")
    (web_root / "scripts" / "app.js").write_text("export const app = {};")

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), auth_token="s3cret", web_root=web_root) as srv:
            async with srv.session.get(f"{srv.url}/") as r:
                assert r.status == 200 and "Loom" in await r.text()
            async with srv.session.get(f"{srv.url}/scripts/app.js") as r:
                assert r.status == 200 and "export const app" in await r.text()
            async with srv.session.post(f"{srv.url}/scripts/app.js") as r:
                assert r.status == 401
            for path in ("/queue", "/api/object_info", "/history", "/system_stats"):
                async with srv.session.get(srv.url + path) as r:
                    assert r.status == 401, path

    run(body)


def test_malformed_bodies_are_400_and_the_server_keeps_serving(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), max_json_bytes=100_000) as srv:
            bad_bodies = [b"not json", b"[1, 2]", b'"text"', b"{", b"", json.dumps({"prompt": [1]}).encode(),
                          json.dumps({"prompt": "x"}).encode(),
                          json.dumps({"prompt": {}, "prompt_id": 5}).encode(),
                          json.dumps({"prompt": {}, "extra_data": []}).encode(),
                          json.dumps({"prompt": {}, "client_id": {"a": 1}}).encode(),
                          json.dumps({"prompt": {}, "number": "abc"}).encode(),
                          json.dumps({"prompt": {"1": "x"}}).encode(),
                          json.dumps({"prompt": {"1": {"inputs": {}}}}).encode(),
                          b'{"prompt": {"1": {"class_type": "PrimitiveString", "inputs": {"value": "' + b"x" * 200_000
                          + b'"}}}}', b"\xff\xfe\x00garbage"]
            for raw in bad_bodies:
                for path in ("/prompt", "/api/prompt"):
                    async with srv.session.post(srv.url + path, data=raw,
                                                headers={"Content-Type": "application/json"}) as r:
                        text = await r.text()
                        # over max_json_bytes: 413 (as aiohttp's own limit answers), the rest 400
                        assert r.status == (413 if len(raw) > 100_000 else 400), (raw[:40], r.status, text[:200])
                        assert "Traceback" not in text
            for path in ("/queue", "/history", "/interrupt", "/free", "/settings"):
                async with srv.session.post(srv.url + path, data=b"{nope") as r:
                    assert r.status == 400, path
            async with srv.session.post(f"{srv.url}/queue", json={"delete": "abc"}) as r:
                assert r.status == 400
            async with srv.session.get(f"{srv.url}/history?max_items=lots") as r:
                assert r.status == 400
            async with srv.session.get(f"{srv.url}/queue") as r:
                assert r.status == 200
            assert await _queue_len(srv) == 0

    run(body)


def test_invalid_prompt_gives_node_errors(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            prompt = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 0, "delay": 0.0, "text": "x"}}}
            async with srv.session.post(f"{srv.url}/prompt", json={"prompt": prompt}) as r:
                assert r.status == 400
                answer = await r.json()
            assert set(answer["error"]) >= {"type", "message", "details", "extra_info"}
            assert answer["node_errors"]["1"]["class_type"] == "SlowSteps"
            assert answer["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
            async with srv.session.post(f"{srv.url}/prompt", json={"prompt": {"1": {"class_type": "Nope",
                                                                                   "inputs": {}}}}) as r:
                assert r.status == 400
            async with srv.session.post(f"{srv.url}/prompt", json={"prompt": {}}) as r:
                assert r.status == 400 and (await r.json())["error"]["type"] == "prompt_no_outputs"

    run(body)


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("kaboom inside a handler")


@pytest.mark.parametrize("verbose", [False, True])
def test_no_traceback_in_error_bodies_unless_verbose(tmp_path: Path, verbose: bool) -> None:
    async def body() -> None:
        hooks = (lambda app: add_api_routes(app, [("GET", "/boom", _boom)]),)
        async with LiveServer(build_test_runtime(tmp_path), hooks=hooks, verbose=verbose) as srv:
            async with srv.session.get(f"{srv.url}/api/boom") as r:
                assert r.status == 500
                text = await r.text()
            assert "kaboom" in text
            assert ("Traceback" in text) is verbose
            async with srv.session.get(f"{srv.url}/queue") as r:
                assert r.status == 200

    run(body)
