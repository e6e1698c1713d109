"""The rest of the REST surface: info routes, /api/ prefixes, queue/history controls, jobs, user data."""
from __future__ import annotations

import asyncio
from pathlib import Path

from harness import LiveServer, build_test_runtime, concat_prompt, run, slow_prompt

GET_ROUTES = ["/object_info", "/object_info/PrimitiveString", "/embeddings", "/models", "/models/checkpoints",
              "/system_stats", "/extensions", "/features", "/i18n", "/prompt", "/queue", "/history", "/jobs",
              "/users", "/settings", "/settings/Comfy.Foo", "/v2/userdata", "/userdata?dir=."]


def test_every_route_bare_and_under_api(tmp_path: Path) -> None:
    async def body() -> None:
        (tmp_path / "models" / "checkpoints").mkdir(parents=True)
        (tmp_path / "models" / "checkpoints" / "tiny.safetensors").write_bytes(b"x")
        (tmp_path / "models" / "embeddings").mkdir(parents=True)
        (tmp_path / "models" / "embeddings" / "style.pt").write_bytes(b"x")
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            for path in GET_ROUTES:
                for prefix in ("", "/api"):
                    async with srv.session.get(srv.url + prefix + path) as r:
                        assert r.status == 200, (prefix + path, r.status, await r.text())
                        assert r.content_type == "application/json", path
            async with srv.session.get(f"{srv.url}/object_info") as r:
                info = await r.json()
            assert {"SlowSteps", "PrimitiveString", "PreviewAny"} <= set(info)
            assert info["SlowSteps"]["input"]["required"]["steps"][0] == "INT"
            async with srv.session.get(f"{srv.url}/object_info/PrimitiveString") as r:
                assert list(await r.json()) == ["PrimitiveString"]
            async with srv.session.get(f"{srv.url}/object_info/Unknown") as r:
                assert await r.json() == {}
            async with srv.session.get(f"{srv.url}/models/checkpoints") as r:
                assert await r.json() == ["tiny.safetensors"]
            async with srv.session.get(f"{srv.url}/embeddings") as r:
                assert await r.json() == ["style"]
            async with srv.session.get(f"{srv.url}/models") as r:
                assert "checkpoints" in await r.json()
            async with srv.session.get(f"{srv.url}/models/not_a_kind") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/system_stats") as r:
                stats = await r.json()
            assert stats["system"]["ram_total"] > 0 and stats["system"]["argv"]
            assert stats["system"]["python_version"] and stats["system"]["pytorch_version"]
            assert stats["devices"][0]["vram_total"] > 0
            async with srv.session.get(f"{srv.url}/features") as r:
                assert (await r.json())["max_upload_size"] == 100 * 1024 * 1024
            async with srv.session.get(f"{srv.url}/") as r:
                assert r.status == 200 and r.content_type == "text/html"

    run(body)


def test_prompt_id_number_front_and_queue_controls(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            blocker = (await srv.post_prompt(slow_prompt(steps=500, delay=0.02, text="block")))["prompt_id"]
            while True:
                async with srv.session.get(f"{srv.url}/queue") as r:
                    if (await r.json())["queue_running"]:
                        break
                await asyncio.sleep(0.01)
            a = await srv.post_prompt(concat_prompt("a", "1"), prompt_id="mine-a")
            again = await srv.post_prompt(concat_prompt("a", "1"), prompt_id="mine-a")
            assert a["prompt_id"] == again["prompt_id"] == "mine-a" and again["number"] == a["number"]
            b = await srv.post_prompt(concat_prompt("b", "1"), prompt_id="b", front=True)
            c = await srv.post_prompt(concat_prompt("c", "1"), prompt_id="c", number=-1000)
            d = await srv.post_prompt(concat_prompt("d", "1"), prompt_id="d")
            async with srv.session.get(f"{srv.url}/queue") as r:
                queue = await r.json()
            assert [e[1] for e in queue["queue_running"]] == [blocker]
            assert [e[1] for e in queue["queue_pending"]] == ["c", "b", "mine-a", "d"]
            assert all(len(e) == 5 for e in queue["queue_pending"] + queue["queue_running"])
            assert queue["queue_pending"][0][0] == -1000 and c["number"] == -1000 and b["number"] < 0 < d["number"]
            async with srv.session.get(f"{srv.url}/prompt") as r:
                assert await r.json() == {"exec_info": {"queue_remaining": 5}}
            async with srv.session.post(f"{srv.url}/queue", json={"delete": ["b"]}) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/api/jobs?status=pending") as r:
                jobs = await r.json()
            assert [j["id"] for j in jobs["jobs"]] == ["d", "c", "mine-a"]  # newest first
            assert jobs["pagination"] == {"offset": 0, "limit": 3, "total": 3, "has_more": False}
            async with srv.session.get(f"{srv.url}/api/jobs/{blocker}") as r:
                assert (await r.json())["status"] == "in_progress"
            async with srv.session.post(f"{srv.url}/api/jobs/d/cancel") as r:
                assert (await r.json())["status"] == "cancelled"
            async with srv.session.post(f"{srv.url}/api/jobs/cancel", json={"job_ids": ["mine-a", "zzz"]}) as r:
                assert await r.json() == {"cancelled": ["mine-a"]}
            async with srv.session.post(f"{srv.url}/api/jobs/cancel", json={"job_ids": []}) as r:
                assert r.status == 400
            async with srv.session.post(f"{srv.url}/queue", json={"clear": True}) as r:
                assert r.status == 200
            async with srv.session.post(f"{srv.url}/api/jobs/{blocker}/cancel") as r:
                assert r.status == 200
            await srv.wait_history(blocker)
            async with srv.session.get(f"{srv.url}/api/jobs/{blocker}") as r:
                job = await r.json()
            assert job["status"] == "cancelled" and job["create_time"] > 0
            async with srv.session.get(f"{srv.url}/api/jobs?status=cancelled") as r:
                assert [j["id"] for j in (await r.json())["jobs"]] == [blocker]
            async with srv.session.post(f"{srv.url}/api/jobs/{blocker}/cancel") as r:
                assert r.status == 409
            async with srv.session.post(f"{srv.url}/api/jobs/nonexistent/cancel") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/queue") as r:
                assert await r.json() == {"queue_running": [], "queue_pending": []}

    run(body)


def test_history_paging_deletion_retention_and_jobs(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path), max_history=4) as srv:
            ids = []
            for i in range(6):
                pid = (await srv.post_prompt(concat_prompt("h", str(i)), prompt_id=f"h{i}"))["prompt_id"]
                await srv.wait_history(pid)
                ids.append(pid)
            async with srv.session.get(f"{srv.url}/history") as r:
                assert list(await r.json()) == ids[2:]
            async with srv.session.get(f"{srv.url}/history?max_items=2") as r:
                assert list(await r.json()) == ids[4:]
            async with srv.session.get(f"{srv.url}/history?max_items=2&offset=1") as r:
                assert list(await r.json()) == ids[3:5]
            async with srv.session.get(f"{srv.url}/api/jobs?status=completed,failed&limit=2&offset=1") as r:
                jobs = await r.json()
            assert [j["id"] for j in jobs["jobs"]] == ["h4", "h3"]
            assert jobs["pagination"] == {"offset": 1, "limit": 2, "total": 4, "has_more": True}
            job = jobs["jobs"][0]
            assert job["status"] == "completed" and job["outputs_count"] == 0  # text items are not files
            assert job["execution_end_time"] >= job["execution_start_time"]
            async with srv.session.get(f"{srv.url}/api/jobs/h5") as r:
                full = await r.json()
            assert full["outputs"]["3"]["text"] == ["h-5"] and "prompt" in full["workflow"]
            async with srv.session.get(f"{srv.url}/api/jobs?status=bogus") as r:
                assert r.status == 400
            async with srv.session.get(f"{srv.url}/api/jobs/unknown") as r:
                assert r.status == 404
            async with srv.session.post(f"{srv.url}/history", json={"delete": ["h3"]}) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/history/h3") as r:
                assert await r.json() == {}
            async with srv.session.post(f"{srv.url}/api/history", json={"clear": True}) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/history") as r:
                assert await r.json() == {}
            async with srv.session.post(f"{srv.url}/free", json={"unload_models": True, "free_memory": True}) as r:
                assert r.status == 200

    run(body)


def test_settings_and_userdata(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            async with srv.session.post(f"{srv.url}/settings", json={"Comfy.A": 1, "Comfy.B": "x"}) as r:
                assert r.status == 200
            async with srv.session.post(f"{srv.url}/api/settings/Comfy.C", json=[1, 2]) as r:
                assert r.status == 200
            async with srv.session.get(f"{srv.url}/settings") as r:
                # Loom's defaults for settings the user has not set come with the stored ones
                assert await r.json() == {"Comfy.A": 1, "Comfy.B": "x", "Comfy.C": [1, 2],
                                          "Comfy.Notification.ShowVersionUpdates": False}
            async with srv.session.get(f"{srv.url}/settings/Comfy.B") as r:
                assert await r.json() == "x"
            url = f"{srv.url}/userdata/workflows%2Fmy%20flow.json"
            async with srv.session.post(url, data=b'{"nodes": []}') as r:
                assert r.status == 200 and await r.json() == "workflows/my flow.json"
            assert (tmp_path / "user" / "default" / "workflows" / "my flow.json").read_bytes() == b'{"nodes": []}'
            async with srv.session.post(url + "?overwrite=false", data=b"{}") as r:
                assert r.status == 409
            async with srv.session.get(url) as r:
                assert await r.read() == b'{"nodes": []}'
            async with srv.session.get(f"{srv.url}/api/userdata?dir=workflows") as r:
                assert await r.json() == ["my flow.json"]
            async with srv.session.get(f"{srv.url}/userdata?dir=workflows&full_info=true") as r:
                assert (await r.json())[0]["size"] == 13
            async with srv.session.get(f"{srv.url}/v2/userdata?path=workflows") as r:
                assert (await r.json())[0]["name"] == "my flow.json"
            async with srv.session.post(f"{url}/move/workflows%2Fb.json") as r:
                assert await r.json() == "workflows/b.json"
            async with srv.session.delete(f"{srv.url}/userdata/workflows%2Fb.json") as r:
                assert r.status == 204
            async with srv.session.get(f"{srv.url}/userdata?dir=missing") as r:
                assert r.status == 404
            async with srv.session.get(f"{srv.url}/userdata?dir=subgraphs") as r:
                assert r.status == 200 and await r.json() == []  # made with the user folder
            async with srv.session.get(f"{srv.url}/api/userdata/comfy.templates.json") as r:
                assert await r.json() == []
            async with srv.session.get(f"{srv.url}/api/userdata/user.css") as r:
                assert r.status == 200 and r.content_type == "text/css"
            async with srv.session.get(f"{srv.url}/api/userdata/workflows%2F.index.json") as r:
                assert r.status == 200 and await r.json() == {"favorites": []}
            (tmp_path / "user" / "secret.txt").write_text("CONTENT-OF-SECRET")
            for bad in ("..%2Fsecret.txt", "%2Fetc%2Fpasswd", "a%5C..%5C..%5Csecret.txt", "C%3A%2Fx", "x%00y"):
                for method in ("GET", "POST", "DELETE"):
                    async with srv.session.request(method, f"{srv.url}/userdata/{bad}", data=b"pwned") as r:
                        assert r.status in (400, 403, 404), (bad, method, r.status)
                        assert "CONTENT-OF-SECRET" not in await r.text()
            async with srv.session.get(f"{srv.url}/userdata?dir=..") as r:
                assert r.status in (400, 403)
            assert (tmp_path / "user" / "secret.txt").read_text() == "CONTENT-OF-SECRET"
            assert not list(tmp_path.rglob("*pwned*"))

    run(body)
