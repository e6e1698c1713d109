"""Hardening through the real server on loopback: forged Host and Origin headers (DNS rebinding), secrets never
in responses, strict JSON in and out, and bad input answered with a 4xx that names the problem."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from config import parse_args, redacted_argv
from harness import LiveServer, build_test_runtime, concat_prompt, run
from server.app import listen_warning
from server.auth import host_allowed
from server.keys import ServerSettings


async def _status(srv: LiveServer, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async with srv.session.request(method, srv.url + path, **kwargs) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith(("{", "[")) else {"text": text})


def test_host_check_policy() -> None:
    listen = "127.0.0.1"
    for host in ("127.0.0.1:8188", "localhost:8188", "LOCALHOST", "app.localhost", "[::1]:8188", "192.168.1.20",
                 "10.0.0.1:8188", None, ""):
        assert host_allowed(host, listen, ()), host
    for host in ("attacker.example", "attacker.example:8188", "127.0.0.1.nip.io", "localhost.attacker.example"):
        assert not host_allowed(host, listen, ()), host
    assert host_allowed("studio.lan:8188", "studio.lan", ())
    assert host_allowed("attacker.example", listen, ("attacker.example",))
    assert host_allowed("gpu1.farm.example", listen, (".farm.example",))
    assert not host_allowed("farm.example.evil", listen, (".farm.example",))
    assert host_allowed("anything.example", listen, ("*",))


def test_forged_host_and_origin_are_refused_on_http_and_websocket(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            status, answer = await _status(srv, "GET", "/object_info", headers={"Host": "attacker.example:8188"})
            assert status == 403 and answer["error"]["type"] == "forbidden_host"
            assert "--allowed-hosts attacker.example" in answer["error"]["message"]
            status, _ = await _status(srv, "GET", "/system_stats", headers={"Host": "attacker.example",
                                                                          "Origin": "http://attacker.example"})
            assert status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await srv.session.ws_connect(srv.url + "/ws?clientId=x", headers={"Host": "attacker.example"})
            assert refused.value.status == 403
            # Host right, but a foreign or null Origin: refused on GET too, and on the websocket.
            for origin in ("http://attacker.example", "null", "http://127.0.0.1:1"):
                status, answer = await _status(srv, "GET", "/history", headers={"Origin": origin})
                assert status == 403 and answer["error"]["type"] == "forbidden_origin", origin
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await srv.session.ws_connect(srv.url + "/ws?clientId=x", headers={"Origin": "null"})
            # Same-origin use and clients without Origin keep working.
            status, _ = await _status(srv, "GET", "/history", headers={"Origin": srv.url})
            assert status == 200
            status, _ = await _status(srv, "GET", "/object_info/KSampler", headers={"Host": "localhost"})
            assert status == 200
            ws = await srv.session.ws_connect(srv.url + "/ws?clientId=ok", headers={"Origin": srv.url})
            assert json.loads((await ws.receive(timeout=10)).data)["type"] == "status"
            await ws.close()
        async with LiveServer(build_test_runtime(tmp_path), allowed_hosts=("studio.example",)) as srv:
            status, _ = await _status(srv, "GET", "/object_info/KSampler", headers={"Host": "studio.example"})
            assert status == 200
    run(body)


def test_secrets_never_appear_in_responses(tmp_path: Path) -> None:
    argv = ["--port", "8190", "--auth-token", "s3cret-token", "--base-directory", str(tmp_path)]
    config = parse_args(argv, {"LOOM_SECRET_THING": "env-secret"})
    assert redacted_argv(["--auth-token=abc", "--x"]) == ["--auth-token=<redacted>", "--x"]
    assert "s3cret-token" not in repr(config.command_line) and "<redacted>" in config.command_line
    runtime = build_test_runtime(tmp_path, config=config)

    async def body() -> None:
        async with LiveServer(runtime, auth_token="s3cret-token") as srv:
            headers = {"Authorization": "Bearer s3cret-token"}
            async with srv.session.get(srv.url + "/system_stats", headers=headers) as r:
                text = await r.text()
            assert r.status == 200 and "s3cret-token" not in text and "env-secret" not in text
            assert "--auth-token" in json.loads(text)["system"]["argv"]
    run(body)


def test_listening_beyond_loopback_without_a_token_warns() -> None:
    assert listen_warning(ServerSettings(host="127.0.0.1")) is None
    assert listen_warning(ServerSettings(host="0.0.0.0", auth_token="t")) is None
    warning = listen_warning(ServerSettings(host="0.0.0.0"))
    assert warning and "0.0.0.0" in warning and "--auth-token" in warning


BAD_PROMPT_BODIES = {
    "NaN constant": '{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": NaN}}}}',
    "Infinity": '{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": -Infinity}}}}',
    "1e400": '{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": 1e400}}}}',
    "number NaN": '{"prompt": {}, "number": NaN}',
    "lone surrogate": '{"prompt": {}, "prompt_id": "\\ud800"}',
    "deep nesting": '{"prompt": ' + "[" * 5000 + "]" * 5000 + "}",
    "not json": "{nope",
}


def test_bad_bodies_get_400_and_change_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            for name, text in BAD_PROMPT_BODIES.items():
                async with srv.session.post(srv.url + "/prompt", data=text,
                                            headers={"Content-Type": "application/json"}) as r:
                    answer = await r.json()
                assert r.status == 400, (name, answer)
                assert answer["error"]["message"], name
            # A string given to an IMAGE input is refused at validation, naming node and input.
            prompt = {"1": {"class_type": "ImageInvert", "inputs": {"image": "not an image"}},
                      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
            async with srv.session.post(srv.url + "/prompt", json={"prompt": prompt}) as r:
                answer = await r.json()
            assert r.status == 400 and "1" in answer["node_errors"], answer
            assert answer["node_errors"]["1"]["errors"][0]["extra_info"]["input_name"] == "image"
            for query in ("max_items=99999999999999999999999999", "offset=99999999999999999999999999",
                          "max_items=-5", "offset=abc"):
                async with srv.session.get(f"{srv.url}/history?{query}") as r:
                    assert r.status in (200, 400), query
                    if r.status == 200:
                        assert await r.json() == {}
            async with srv.session.get(f"{srv.url}/queue") as r:
                queue = await r.json()
            assert queue["queue_pending"] == [] and queue["queue_running"] == []
            result = await srv.post_prompt(concat_prompt("still", "works"))
            entry = await srv.wait_history(result["prompt_id"])
            assert entry["status"]["status_str"] == "success"
    run(body)


def _upload_form(name: str, data: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


def test_bad_uploads_and_userdata_paths_get_4xx_without_server_paths(tmp_path: Path) -> None:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    png = buf.getvalue()

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            (tmp_path / "input" / "a_file").write_text("x")
            for name, fields in ((".", {}), ("..", {}), ("x" * 10_000 + ".png", {}), ("ok.png", {"subfolder": "a_file"})):
                async with srv.session.post(srv.url + "/upload/image", data=_upload_form(name, png, **fields)) as r:
                    text = await r.text()
                assert 400 <= r.status < 500, (name[:20], fields, r.status, text[:200])
                assert str(tmp_path) not in text
            assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["a_file"]
            async with srv.session.get(srv.url + "/view", params={"filename": "y" * 5000 + ".png"}) as r:
                text = await r.text()
            assert 400 <= r.status < 500 and str(tmp_path) not in text
            user = tmp_path / "user" / "default"
            (user / "adir").mkdir(parents=True, exist_ok=True)
            (user / "plain.json").write_text("{}")
            for method, path in (("POST", "/userdata/adir"), ("POST", "/userdata/plain.json%2Finside.json"),
                                 ("POST", "/userdata/plain.json/move/adir"),
                                 ("POST", "/userdata/plain.json/move/plain.json%2Fx.json")):
                async with srv.session.request(method, srv.url + path, data=b"{}") as r:
                    text = await r.text()
                assert 400 <= r.status < 500, (path, r.status, text[:200])
                assert str(tmp_path) not in text
            assert (user / "plain.json").read_text() == "{}"
    run(body)
