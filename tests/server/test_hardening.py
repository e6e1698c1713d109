"""Issue 22 through the real server: forged Host/Origin (DNS rebinding) on HTTP and websocket,
secrets kept out of responses, strict JSON in and out, and the bad inputs that used to be 500s."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness import LiveServer, build_test_runtime, concat_prompt, png_bytes, run
from server.app import banner, security_warning
from server.keys import ServerSettings
from config import parse_args, redacted_argv

EVIL = "attacker.example"


def _strict(text: str) -> Any:
    """Parse as a strict client would: NaN/Infinity are errors."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {name} in a response")
    return json.loads(text, parse_constant=refuse)


async def _get_strict(srv: LiveServer, path: str) -> Any:
    async with srv.session.get(srv.url + path) as r:
        assert r.status == 200, (path, r.status)
        return _strict(await r.text())


def test_forged_host_is_refused_on_http_and_websocket(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            port = srv.url.rsplit(":", 1)[1]
            for host in (EVIL, f"{EVIL}:{port}", "127.0.0.1.nip.io", "localhost.attacker.example"):
                for path in ("/queue", "/history", "/system_stats", "/object_info", "/"):
                    async with srv.session.get(srv.url + path, headers={"Host": host}) as r:
                        assert r.status == 403, (host, path)
                        error = _strict(await r.text())["error"]
                        assert error["type"] == "forbidden_host" and "--allowed-hosts" in error["message"]
                async with srv.session.post(srv.url + "/prompt", json={"prompt": concat_prompt("a", "b")},
                                            headers={"Host": host, "Origin": f"http://{host}"}) as r:
                    assert r.status == 403
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await srv.session.ws_connect(f"{srv.url}/ws", headers={"Host": host, "Origin": f"http://{host}"})
                assert info.value.status == 403
            assert (await _get_strict(srv, "/queue"))["queue_pending"] == []
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"127.0.0.2:{port}"):
                async with srv.session.get(srv.url + "/queue", headers={"Host": host}) as r:
                    assert r.status == 200, host

    run(body)


def test_allowed_hosts_admits_a_named_host(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), allowed_hosts=("studio.lan",)) as srv:
            port = srv.url.rsplit(":", 1)[1]
            async with srv.session.get(srv.url + "/queue", headers={"Host": f"Studio.LAN:{port}"}) as r:
                assert r.status == 200
            async with srv.session.get(srv.url + "/queue", headers={"Host": EVIL}) as r:
                assert r.status == 403
            async with srv.session.ws_connect(f"{srv.url}/ws", headers={"Host": f"studio.lan:{port}",
                                                                         "Origin": f"http://studio.lan:{port}"}) as ws:
                assert json.loads((await ws.receive(timeout=5)).data)["type"] == "status"

    run(body)


def test_cross_origin_reads_are_refused_too(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            host = srv.url.removeprefix("http://")
            for origin in ("http://evil.example", "null", "file://", "http://127.0.0.1:1"):
                for path in ("/queue", "/history", "/api/jobs", "/system_stats", "/view?filename=x.png"):
                    async with srv.session.get(srv.url + path, headers={"Origin": origin}) as r:
                        assert r.status == 403, (origin, path)
                        assert _strict(await r.text())["error"]["type"] == "forbidden_origin"
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await srv.session.ws_connect(f"{srv.url}/ws", headers={"Origin": origin})
                assert info.value.status == 403
            async with srv.session.get(srv.url + "/queue", headers={"Origin": f"http://{host}"}) as r:
                assert r.status == 200
            async with srv.session.get(srv.url + "/queue") as r:
                assert r.status == 200

    run(body)


def test_system_stats_shows_the_configs_command_line_never_the_token(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    token = "s3cr3t-token-value"
    config = parse_args(["--auth-token", token, "--listen", "127.0.0.1", "--api-key=abc123", f"--other={token}"], {})
    assert token not in repr(config.argv) and "abc123" not in repr(config.argv)
    # the route reads the Config, never the process: what sys.argv holds does not show
    monkeypatch.setattr(sys, "argv", ["pytest", "--not-loom"])

    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path, config), auth_token=token) as srv:
            headers = {"Authorization": f"Bearer {token}"}
            async with srv.session.get(srv.url + "/system_stats", headers=headers) as r:
                text = await r.text()
                assert r.status == 200
            assert token not in text and "abc123" not in text
            argv = _strict(text)["system"]["argv"]
            assert argv[:3] == ["main.py", "--auth-token", "<redacted>"] and "--listen" in argv
            assert "--not-loom" not in argv and argv[-1] == "--other=<redacted>"
            async with srv.session.get(srv.url + "/system_stats?token=wrong") as r:
                assert r.status == 401 and token not in await r.text()

    run(body)


def test_redacted_argv_and_listen_warning() -> None:
    assert redacted_argv(["m", "--auth-token", "T", "--port", "1"], "T") == ["m", "--auth-token", "<redacted>",
                                                                               "--port", "1"]
    assert redacted_argv(["m", "--auth-token=T"], "T") == ["m", "--auth-token=<redacted>"]
    assert security_warning(ServerSettings(host="0.0.0.0")) is not None
    assert "--auth-token" in (security_warning(ServerSettings(host="192.168.1.9")) or "")
    assert security_warning(ServerSettings(host="0.0.0.0", auth_token="t")) is None
    assert security_warning(ServerSettings(host="127.0.0.1")) is None
    assert security_warning(ServerSettings(host="::1")) is None
    line = banner("======== Running on http://0.0.0.0:8190 ========", ServerSettings(host="0.0.0.0", port=8190))
    assert "http://0.0.0.0:8190" in line and "127.0.0.1:8190" in line


BAD_PROMPT_BODIES = [
    b'{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": NaN}}}}',
    b'{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": Infinity}}}}',
    b'{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": -Infinity}}}}',
    b'{"prompt": {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": 1e400}}}}',
    b'{"prompt": {}, "number": NaN}',
    b'{"prompt": {}, "number": 1e400}',
    b'{"prompt": {}, "prompt_id": "\\ud800"}',
    b'{"prompt": {"\\udfff": {"class_type": "PrimitiveString", "inputs": {"value": "x"}}}}',
    b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"prompt": {"1": {"class_type": "PrimitiveString", "inputs": {"value": ' + b'{"a":' * 500 + b"1"
    + b"}" * 500 + b"}}}}",
]


def test_non_strict_and_hostile_json_is_400_and_nothing_is_stored(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            for raw in BAD_PROMPT_BODIES:
                async with srv.session.post(srv.url + "/prompt", data=raw,
                                            headers={"Content-Type": "application/json"}) as r:
                    text = await r.text()
                    assert r.status == 400, (raw[:60], r.status, text[:300])
                    assert _strict(text)["error"]["message"]
            assert (await _get_strict(srv, "/queue")) == {"queue_running": [], "queue_pending": []}
            assert (await _get_strict(srv, "/history")) == {}
            for query in ("max_items=99999999999999999999999", "offset=99999999999999999999999",
                          "offset=-99999999999999999999999", "max_items=1" + "0" * 5000):
                async with srv.session.get(f"{srv.url}/history?{query}") as r:
                    assert r.status == 400, query
                async with srv.session.get(f"{srv.url}/api/jobs?{query.replace('max_items', 'limit')}") as r:
                    assert r.status == 400, query

    run(body)


def test_wrong_typed_constants_are_node_errors(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            prompts = [
                {"1": {"class_type": "SaveImage", "inputs": {"images": "not an image", "filename_prefix": "x"}}},
                {"1": {"class_type": "SaveImage", "inputs": {"images": 5, "filename_prefix": "x"}}},
                {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": "nan"}},
                 "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
                {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": "inf"}},
                 "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
            ]
            for prompt in prompts:
                async with srv.session.post(srv.url + "/prompt", json={"prompt": prompt}) as r:
                    result = _strict(await r.text())
                    assert r.status == 400, result
                    error = result["node_errors"]["1"]["errors"][0]
                    assert error["type"] == "invalid_input_type"
                    assert error["extra_info"]["input_name"] in ("images", "value")
            assert (await _get_strict(srv, "/queue"))["queue_pending"] == []

    run(body)


def _form(data: bytes, filename: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


def test_bad_upload_names_and_subfolders_are_400_without_paths(tmp_path: Path) -> None:
    async def body() -> None:
        runtime = build_test_runtime(tmp_path)
        (tmp_path / "input" / "afile").write_bytes(b"x")
        async with LiveServer(runtime) as srv:
            cases = [(".", {}), ("..", {}), ("x" * 10_000 + ".png", {}), ("ok.png", {"subfolder": "afile"}),
                     ("ok.png", {"subfolder": "afile/deeper"}), ("ok.png", {"subfolder": "y" * 300})]
            for name, fields in cases:
                async with srv.session.post(srv.url + "/upload/image", data=_form(png_bytes(), name, **fields)) as r:
                    text = await r.text()
                    assert r.status == 400, (name[:20], fields, r.status, text[:200])
                    assert str(tmp_path) not in text
            async with srv.session.get(srv.url + "/view", params={"filename": "v" * 10_000 + ".png",
                                                                  "type": "input"}) as r:
                text = await r.text()
                assert r.status in (400, 404) and str(tmp_path) not in text
            assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["afile"]

    run(body)


def test_bad_userdata_writes_and_moves_are_400(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            url = srv.url + "/userdata/"
            async with srv.session.post(url + "workflows%2Fa.json", data=b"{}") as r:
                assert r.status == 200
            async with srv.session.post(url + "plain.json", data=b"{}") as r:
                assert r.status == 200
            bad_writes = ["workflows", "plain.json%2Finner.json", "z" * 400]
            for target in bad_writes:
                async with srv.session.post(url + target, data=b"{}") as r:
                    text = await r.text()
                    assert r.status in (400, 409), (target[:20], r.status, text[:200])
                    assert str(tmp_path) not in text
            for dest in ("workflows", "plain.json%2Fx.json", "q" * 400, "..%2F..%2Fescape.json"):
                async with srv.session.post(f"{url}workflows%2Fa.json/move/{dest}?overwrite=true") as r:
                    text = await r.text()
                    assert r.status in (400, 409), (dest[:20], r.status, text[:200])
                    assert str(tmp_path) not in text
            async with srv.session.get(url + "workflows%2Fa.json") as r:
                assert r.status == 200 and await r.read() == b"{}"

    run(body)


def test_error_bodies_never_show_server_paths() -> None:
    from server.http import scrub_paths
    text = scrub_paths("[Errno 36] File name too long: '/srv/loom/input/x.png' at C:\\Users\\me\\a.txt http://h/p")
    assert "/srv/loom" not in text and "Users" not in text and "x.png" in text and "http://h/p" in text
