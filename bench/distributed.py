"""Cluster mode benchmark: per-prompt dispatch overhead and throughput against worker count.

Usage: `.venv/bin/python bench/distributed.py [--runs 5] [--prompts 8] [--seconds 1.0]`

Starts a local Ray cluster on 127.0.0.1 (4 logical CPUs), the real head server on a loopback
port, and measures, through POST /prompt and GET /history:
- dispatch overhead: median POST-to-history time of a trivial prompt (PrimitiveString ->
  PreviewAny) on one worker, minus the same through a single-process server;
- throughput: `--prompts` prompts of a node that waits `--seconds` (tests/cluster/packs'
  ClusterTestWait, so the machine's cores are not the limit) on 1, 2 and 4 workers.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

import config  # noqa: E402
import runtime  # noqa: E402
from cluster import connect  # noqa: E402
from cluster.dispatcher import ClusterDispatcher  # noqa: E402
from cluster.routes import cluster_routes_hook  # noqa: E402
from server.app import create_app  # noqa: E402

PACKS = ROOT / "tests" / "cluster" / "packs"
TRIVIAL = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def build(base: Path, workers: int | None) -> Any:
    rt = runtime.build_runtime(config.parse_args(
        ["--base-directory", str(base), "--cpu", "--custom-nodes-directory", str(PACKS)], {}))
    if workers:
        made: list[ClusterDispatcher] = []

        def factory(queue: Any, sink: Any) -> ClusterDispatcher:
            made.append(ClusterDispatcher(queue, sink, folders=rt.folders, config=rt.config, workers=workers,
                                          namespace=f"bench-{workers}", kill_workers_on_stop=True))
            return made[-1]
        rt.worker_factory = factory
        rt.server_hooks.append(cluster_routes_hook(lambda: made[-1]))
    return rt


async def serve(rt: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(rt), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def wait_idle(session: aiohttp.ClientSession, url: str, workers: int) -> None:
    while True:
        async with session.get(url + "/loom/cluster") as r:
            states = [w["state"] for w in (await r.json())["workers"]]
        if states == ["idle"] * workers:
            return
        await asyncio.sleep(0.2)


async def finish(session: aiohttp.ClientSession, url: str, prompts: list[dict[str, Any]]) -> float:
    """Seconds from the first POST until every prompt is in history."""
    start = time.perf_counter()
    ids = []
    for prompt in prompts:
        async with session.post(url + "/prompt", json={"prompt": prompt}) as r:
            ids.append((await r.json())["prompt_id"])
    for pid in ids:
        while True:
            async with session.get(f"{url}/history/{pid}") as r:
                if await r.json():
                    break
            await asyncio.sleep(0.005)
    return time.perf_counter() - start


async def measure(base: Path, workers: int | None, args: argparse.Namespace) -> dict[str, float]:
    rt = build(base, workers)
    runner, url = await serve(rt)
    try:
        async with aiohttp.ClientSession() as session:
            if workers:
                await wait_idle(session, url, workers)
            await finish(session, url, [TRIVIAL])  # warm up
            trivial = [await finish(session, url, [dict(TRIVIAL, n={"class_type": "PrimitiveInt",
                                                                     "inputs": {"value": i}})])
                       for i in range(args.runs * 4)]
            out = {"trivial_ms": statistics.median(trivial) * 1000}
            if workers:
                waits = [{"1": {"class_type": "ClusterTestWait",
                                "inputs": {"seconds": args.seconds, "steps": 10, "text": f"{time.time()}-{i}"}}}
                         for i in range(args.prompts)]
                out["throughput"] = args.prompts / await finish(session, url, waits)
            return out
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    connect.connect("local", 4)
    with tempfile.TemporaryDirectory() as tmp:
        local = asyncio.run(measure(Path(tmp) / "local", None, args))
        print(f"single process: trivial prompt POST->history median {local['trivial_ms']:.1f} ms")
        for workers in (1, 2, 4):
            got = asyncio.run(measure(Path(tmp) / f"w{workers}", workers, args))
            print(f"{workers} worker(s): trivial prompt median {got['trivial_ms']:.1f} ms "
                  f"(dispatch overhead {got['trivial_ms'] - local['trivial_ms']:.1f} ms); "
                  f"{args.prompts} x {args.seconds:.1f} s waits: {got['throughput']:.2f} prompts/s "
                  f"(ideal {workers / args.seconds:.2f})")


if __name__ == "__main__":
    main()
