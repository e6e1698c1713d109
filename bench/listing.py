"""`python bench/listing.py [--prompts 1000] [--mb 1] [--pending 20] [--runs 5] [--big-mb 50]`: latency
of the listings clients poll (`/queue`, `/history?max_items=10`, `/api/jobs?limit=10`, `/history/{id}`)
through the real server, with N stored finished prompts of M MB each and some pending ones, plus
how long a small request (`/prompt`) waits while a listing is being built (the event loop must stay
free); then the same for POST /prompt of a --big-mb MB prompt (its worst small-request wait).

The history is written straight into the queue's SQLite file (the same `PromptQueue` the server
uses), so filling it takes seconds, not N real runs. Prints a markdown table; medians of --runs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "server")]

import aiohttp  # noqa: E402

from executor.queue import PromptQueue  # noqa: E402
from harness import LiveServer, build_test_runtime  # noqa: E402
from server.app import QUEUE_FILE  # noqa: E402
from server.keys import WORKER  # noqa: E402


def fill(path: Path, prompts: int, megabytes: float, pending: int) -> None:
    queue = PromptQueue(path, max_history=prompts + 10)
    bulk = "x" * int(megabytes * 1024 * 1024)
    for i in range(prompts + pending):
        prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": f"{i}:{bulk}"}}}
        queue.put(f"p{i:05d}", prompt, {"client_id": "bench"}, ["1"])
        if i < prompts:
            item = queue.get(timeout=1)
            assert item is not None
            queue.task_done(item, {"1": {"text": [str(i)]}},
                            {"status_str": "success", "completed": True, "messages": []})
    queue.close()


async def timed(session: aiohttp.ClientSession, url: str) -> float:
    start = time.perf_counter()
    async with session.get(url) as r:
        await r.read()
        assert r.status == 200, (url, r.status)
    return time.perf_counter() - start


def big_prompt_body(megabytes: float) -> bytes:
    """A POST /prompt body of about `megabytes` MB: many 500-byte nodes and one output."""
    nodes = max(1, int(megabytes * 1024 * 1024 / 520))
    prompt = {str(i): {"class_type": "PrimitiveString", "inputs": {"value": f"{i}:" + "x" * 470}} for i in range(nodes)}
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["0", 0]}}
    return json.dumps({"prompt": prompt, "client_id": "bench"}).encode()


async def post_big(srv: LiveServer, raw: bytes, runs: int) -> tuple[float, float]:
    """Median time of POST /prompt with `raw`, and the median of the worst wait of small GET
    /prompt requests sent one after another while it was in flight (after its body was sent)."""
    times, waits = [], []
    for _ in range(runs):
        sent = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            for at in range(0, len(raw), 1 << 20):
                yield raw[at:at + (1 << 20)]
            sent.set()

        async def post() -> float:
            start = time.perf_counter()
            async with srv.session.post(srv.url + "/prompt", data=chunks(),
                                        headers={"Content-Type": "application/json"}) as r:
                await r.read()
                assert r.status == 200, r.status
            return time.perf_counter() - start
        big = asyncio.ensure_future(post())
        await sent.wait()
        worst = 0.0
        while not big.done():
            worst = max(worst, await timed(srv.session, srv.url + "/prompt"))
        times.append(await big)
        waits.append(worst)
    return statistics.median(times), statistics.median(waits)


async def measure(base: Path, runs: int, big_mb: float) -> list[tuple[str, float, float]]:
    runtime = build_test_runtime(base)
    rows = []
    async with LiveServer(runtime, max_json_bytes=int((big_mb + 10) * 1024 * 1024)) as srv:
        srv.app[WORKER].stop()  # keep the pending ones pending
        for path in ("/queue", "/history?max_items=10", "/api/jobs?limit=10", "/history/p00000"):
            times, waits = [], []
            for _ in range(runs):
                listing = asyncio.ensure_future(timed(srv.session, srv.url + path))
                await asyncio.sleep(0.005)
                waits.append(await timed(srv.session, srv.url + "/prompt"))
                times.append(await listing)
            rows.append((path, statistics.median(times), statistics.median(waits)))
        if big_mb > 0:
            raw = big_prompt_body(big_mb)
            latency, wait = await post_big(srv, raw, runs)
            rows.append((f"POST /prompt ({len(raw) / 1e6:.0f} MB)", latency, wait))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--pending", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--big-mb", type=float, default=50.0, help="size of the big POST /prompt (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "user").mkdir(parents=True)
        start = time.perf_counter()
        fill(base / "user" / QUEUE_FILE, args.prompts, args.mb, args.pending)
        print(f"filled {args.prompts} finished + {args.pending} pending prompts of {args.mb} MB "
              f"in {time.perf_counter() - start:.1f} s")
        rows = asyncio.run(measure(base, args.runs, args.big_mb))
    print("| request | median latency (s) | a concurrent GET /prompt waited (s) |")
    print("| --- | --- | --- |")
    for path, latency, wait in rows:
        print(f"| `{path}` | {latency:.3f} | {wait:.3f} |")


if __name__ == "__main__":
    main()
