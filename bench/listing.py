"""`python bench/listing.py [--prompts 1000] [--mb 1] [--pending 20] [--runs 5]`: latency of the
listings clients poll (`/queue`, `/history?max_items=10`, `/api/jobs?limit=10`, `/history/{id}`)
through the real server, with N stored finished prompts of M MB each and some pending ones, plus
how long a small request (`/prompt`) waits while a listing is being built (the event loop must stay free).

The history is written straight into the queue's SQLite file (the same `PromptQueue` the server
uses), so filling it takes seconds, not N real runs. Prints a markdown table; medians of --runs.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


async def measure(base: Path, runs: int) -> list[tuple[str, float, float]]:
    runtime = build_test_runtime(base)
    rows = []
    async with LiveServer(runtime) as srv:
        srv.app[WORKER].stop()  # keep the pending ones pending
        for path in ("/queue", "/history?max_items=10", "/api/jobs?limit=10", "/history/p00000"):
            times, waits = [], []
            for _ in range(runs):
                listing = asyncio.ensure_future(timed(srv.session, srv.url + path))
                await asyncio.sleep(0.005)
                waits.append(await timed(srv.session, srv.url + "/prompt"))
                times.append(await listing)
            rows.append((path, statistics.median(times), statistics.median(waits)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--pending", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "user").mkdir(parents=True)
        start = time.perf_counter()
        fill(base / "user" / QUEUE_FILE, args.prompts, args.mb, args.pending)
        print(f"filled {args.prompts} finished + {args.pending} pending prompts of {args.mb} MB "
              f"in {time.perf_counter() - start:.1f} s")
        rows = asyncio.run(measure(base, args.runs))
    print("| request | median latency (s) | a concurrent GET /prompt waited (s) |")
    print("| --- | --- | --- |")
    for path, latency, wait in rows:
        print(f"| `{path}` | {latency:.3f} | {wait:.3f} |")


if __name__ == "__main__":
    main()
