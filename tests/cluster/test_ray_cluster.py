"""The cluster mode end to end: a real local Ray cluster (loopback only, no dashboard, 2 CPUs)
started through `cluster.connect`, the real head server on a loopback port with its durable
queue, two CPU worker actors running tiny real checkpoints and the test pack in
tests/cluster/packs (a waiting node, a node that kills its worker). The actors are shared by
the tests of this module (a new head re-attaches to them, as a restarted head does)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-ray.txt -c constraints.txt)")

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

import config  # noqa: E402
import runtime  # noqa: E402
from cluster import connect, enable  # noqa: E402
from executor.queue import PromptQueue  # noqa: E402
from server.app import QUEUE_FILE, create_app  # noqa: E402
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint  # noqa: E402
from tests.nodes.sd_env import txt2img  # noqa: E402

PACKS = Path(__file__).parent / "packs"
WORKFLOW = {"nodes": [], "links": [], "version": 0.4, "extra": {"note": "cluster test"}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster-models")
    write_tiny_checkpoint(root / "checkpoints" / "a.safetensors", seed=1)
    write_tiny_checkpoint(root / "checkpoints" / "b.safetensors", seed=2)
    return root


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    assert connect.connect("local", 2), "a Ray session was already running in the test process"
    yield
    ray.shutdown()


def head_runtime(base: Path, models: Path, *, ray_address: str | None = "local") -> Any:
    argv = ["--base-directory", str(base), "--models-directory", str(models), "--cpu",
            "--custom-nodes-directory", str(PACKS)]
    if ray_address:
        argv += ["--ray-address", ray_address, "--ray-workers", "2"]
    rt = runtime.build_runtime(config.parse_args(argv, {}))
    if ray_address:
        enable(rt)
    return rt


class Head:
    """The real server for `rt` on 127.0.0.1:<free port>, with a client session."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    async def __aenter__(self) -> "Head":
        self.app = create_app(self.rt)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.runner.cleanup()

    async def get(self, path: str) -> Any:
        async with self.session.get(self.url + path) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.session.post(self.url + path, json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json() if r.content_type == "application/json" else None

    async def submit(self, prompt: dict[str, Any], client_id: str | None = None) -> str:
        body: dict[str, Any] = {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": WORKFLOW}}}
        if client_id:
            body["client_id"] = client_id
        return (await self.post("/prompt", body))["prompt_id"]

    async def workers_ready(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        return await self.until(lambda c: c if all(w["state"] == "idle" for w in c["workers"]) else None,
                                "/loom/cluster", timeout)

    async def history(self, prompt_id: str, timeout: float = 90.0) -> dict[str, Any]:
        return (await self.until(lambda h: h or None, f"/history/{prompt_id}", timeout))[prompt_id]

    async def until(self, pick: Any, path: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pick(await self.get(path))
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} did not reach the expected state in {timeout} s")


class Client:
    """A websocket client collecting the JSON messages it receives."""

    def __init__(self, head: Head, client_id: str) -> None:
        self.head, self.client_id, self.messages = head, client_id, []

    async def __aenter__(self) -> "Client":
        self.ws = await self.head.session.ws_connect(f"{self.head.url}/ws?clientId={self.client_id}")
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        self.task.cancel()

    def of(self, prompt_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] != "status" and (m.get("data") or {}).get("prompt_id") == prompt_id]


def run(coro: Any, timeout: float = 170.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_prompt(seconds: float, text: str, steps: int = 20) -> dict[str, Any]:
    return {"1": {"class_type": "ClusterTestWait", "inputs": {"seconds": seconds, "steps": steps, "text": text}}}


def saved_png(ckpt: str, seed: int, prefix: str) -> dict[str, Any]:
    prompt = txt2img(ckpt=ckpt, seed=seed, steps=2, size=32)
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    return prompt


def assert_in_order(events: list[dict[str, Any]]) -> None:
    """One prompt's messages: execution_start first, executing/null last, after execution_success."""
    types = [e["type"] for e in events]
    assert types[0] == "execution_start", types
    assert events[-1]["type"] == "executing" and events[-1]["data"]["node"] is None, types
    assert types.count("execution_success") == 1 and types.index("execution_success") == len(types) - 2, types
    progress = [(e["data"]["node"], e["data"]["value"]) for e in events if e["type"] == "progress"]
    for (node_a, a), (node_b, b) in zip(progress, progress[1:]):
        assert node_a != node_b or b >= a, progress


def assert_ray_listens_on_loopback_only(worker_pids: set[int]) -> None:
    """No listening socket of Ray's processes (GCS, raylet, workers) on a non-loopback address."""
    if shutil.which("ss") is None:
        return
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    ray_lines = [line for line in lines if "gcs_server" in line or "raylet" in line or "ray::" in line
                 or any(f"pid={pid}," in line for pid in worker_pids)]
    assert ray_lines, lines
    for line in ray_lines:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")), line


def images(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [img for out in entry["outputs"].values() for img in out.get("images", [])]


def test_prompts_of_several_clients_run_once_in_order_and_match_a_local_run(ray_cluster: Any, models: Path,
                                                                            tmp_path: Path) -> None:
    async def body() -> None:
        async with Head(head_runtime(tmp_path / "head", models)) as head:
            cluster = await head.workers_ready()
            assert [sorted(w) for w in cluster["workers"]] == [sorted(
                ["id", "node", "pid", "device", "state", "prompt_id", "models"])] * 2
            assert {w["node"] for w in cluster["workers"]} == {"127.0.0.1"}
            assert_ray_listens_on_loopback_only({w["pid"] for w in cluster["workers"]})
            assert len({w["pid"] for w in cluster["workers"]}) == 2
            stats = await head.get("/system_stats")
            assert [w["id"] for w in stats["workers"]] == ["0", "1"]
            async with Client(head, "c1") as c1, Client(head, "c2") as c2, Client(head, "c3") as c3:
                clients = [c1, c2, c3]
                sent = {}
                for i in range(6):
                    client = clients[i % 3]
                    sent[await head.submit(saved_png("a.safetensors", seed=i, prefix="same"), client.client_id)] = client
                entries = {pid: await head.history(pid) for pid in sent}
                await asyncio.sleep(0.3)
            all_history = await head.get("/history")
            assert sorted(all_history) == sorted(sent)
            for pid, client in sent.items():
                assert entries[pid]["status"]["status_str"] == "success"
                assert_in_order(client.of(pid))
                assert all(not other.of(pid) for other in clients if other is not client)
            names = sorted(img["filename"] for e in entries.values() for img in images(e))
            assert names == [f"same_{n:05}_.png" for n in range(1, 7)]
            assert sorted(os.listdir(tmp_path / "head" / "output")) == names
        # The same workflow and seed through a single-process server: same name, same bytes.
        first = next(iter(sent))
        first_image = images(entries[first])[0]["filename"]
        async with Head(head_runtime(tmp_path / "local", models, ray_address=None)) as local:
            pid = await local.submit(saved_png("a.safetensors", seed=0, prefix="same"))
            local_entry = await local.history(pid)
        assert images(local_entry) == [{"filename": "same_00001_.png", "subfolder": "", "type": "output"}]
        cluster_bytes = (tmp_path / "head" / "output" / first_image).read_bytes()
        assert cluster_bytes == (tmp_path / "local" / "output" / "same_00001_.png").read_bytes()
    run(body())


def test_model_affinity_two_checkpoints_alternating(ray_cluster: Any, models: Path, tmp_path: Path) -> None:
    async def body() -> None:
        async with Head(head_runtime(tmp_path, models)) as head:
            await head.workers_ready()
            await head.post("/free", {"unload_models": True, "free_memory": True})
            await head.until(lambda c: c if all(not w["models"] for w in c["workers"]) else None, "/loom/cluster", 10)
            ids = [await head.submit(saved_png("a.safetensors" if i % 2 == 0 else "b.safetensors", i, f"aff{i}"))
                   for i in range(6)]
            for pid in ids:
                assert (await head.history(pid))["status"]["status_str"] == "success"
            workers = (await head.get("/loom/cluster"))["workers"]
            assert sorted(tuple(w["models"]) for w in workers) == [("a.safetensors",), ("b.safetensors",)]
    run(body())


def test_killed_worker_prompt_completes_on_the_other_once(ray_cluster: Any, models: Path, tmp_path: Path) -> None:
    async def body() -> None:
        async with Head(head_runtime(tmp_path, models)) as head:
            await head.workers_ready()
            async with Client(head, "k") as client:
                pid = await head.submit(wait_prompt(4.0, "survivor"), "k")
                running = await head.until(
                    lambda c: next((w for w in c["workers"] if w["prompt_id"] == pid), None), "/loom/cluster", 30)
                await head.until(lambda _: True if any(m["type"] == "progress" for m in client.of(pid)) else None,
                                 "/queue", 30)
                os.kill(running["pid"], signal.SIGKILL)
                entry = await head.history(pid)
            assert entry["status"]["status_str"] == "success"
            assert entry["outputs"] == {"1": {"text": ["survivor"]}}
            assert list(await head.get("/history")) == [pid]
            assert (await head.get("/queue")) == {"queue_running": [], "queue_pending": []}
            types = [m["type"] for m in client.of(pid)]
            assert types.count("execution_start") == 2 and types.count("execution_success") == 1
            workers = (await head.workers_ready())["workers"]
            assert running["pid"] not in [w["pid"] for w in workers]
    run(body())


def test_prompt_that_kills_two_workers_fails_clearly(ray_cluster: Any, models: Path, tmp_path: Path) -> None:
    async def body() -> None:
        async with Head(head_runtime(tmp_path, models)) as head:
            await head.workers_ready()
            pid = await head.submit({"1": {"class_type": "ClusterTestCrash", "inputs": {"text": "x"}}})
            entry = await head.history(pid, timeout=120)
            assert entry["status"]["status_str"] == "error"
            error = dict(entry["status"]["messages"])["execution_error"]
            assert "2 workers were lost" in error["exception_message"]
            await head.workers_ready()
            after = await head.submit(wait_prompt(0.1, "still fine", steps=2))
            assert (await head.history(after))["status"]["status_str"] == "success"
    run(body(), timeout=200)


def test_interrupt_reaches_the_worker_running_that_prompt(ray_cluster: Any, models: Path, tmp_path: Path) -> None:
    async def body() -> None:
        async with Head(head_runtime(tmp_path, models)) as head:
            await head.workers_ready()
            keep = await head.submit(wait_prompt(3.0, "keep"))
            stop = await head.submit(wait_prompt(30.0, "stop", steps=300))
            await head.until(lambda c: c if {w["prompt_id"] for w in c["workers"]} == {keep, stop} else None,
                             "/loom/cluster", 30)
            await head.post("/interrupt", {"prompt_id": stop})
            stopped, kept = await head.history(stop, timeout=20), await head.history(keep)
            assert [m[0] for m in stopped["status"]["messages"]][-1] == "execution_interrupted"
            assert kept["status"]["status_str"] == "success"
    run(body())


def test_restarted_head_reattaches_and_resumes_its_queue(ray_cluster: Any, models: Path, tmp_path: Path) -> None:
    async def body() -> None:
        async with Head(head_runtime(tmp_path, models)) as head:
            before = sorted(w["pid"] for w in (await head.workers_ready())["workers"])
        # While no head runs, a prompt sits in the durable queue (as if queued just before a crash).
        queue = PromptQueue(tmp_path / "user" / QUEUE_FILE)
        queue.put("resumed", wait_prompt(0.2, "resumed", steps=2), {}, ["1"])
        queue.close()
        async with Head(head_runtime(tmp_path, models)) as head:
            entry = await head.history("resumed")
            assert entry["outputs"] == {"1": {"text": ["resumed"]}}
            assert sorted(w["pid"] for w in (await head.workers_ready())["workers"]) == before
    run(body())
