"""Executor benchmark: API graphs of N nodes through validation and execution, with the real
built-in nodes.

Graphs (N = 500, 2000, 10000 by default):
- `string chain`: PrimitiveString → (N−2) × StringConcatenate → PreviewAny
- `image chain`: EmptyImage 8×8 → (N−2) × ImageInvert → PreviewImage
- `4 image chains`: four independent image chains of N/4 nodes each
- `fan`: one PrimitiveString feeding N/2 StringConcatenate → PreviewAny pairs

For each: `first` (a fresh executor and cache), `rerun` (nothing changed), `changed` (the first
node's value changed, so everything downstream reruns). Each figure is the median of `--repeat`
runs of `validate_prompt` + `Executor.execute`, what the server does for one prompt; with
`--server`, also through POST /prompt on a loopback server. Wall-clock and process CPU seconds
are both reported: on a shared machine the CPU time is what a quiet machine's wall time would be.

    python bench/executor.py [--sizes 500 2000 10000] [--repeat 5] [--write bench/RESULTS.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.run import Executor  # noqa: E402
from executor.validate import validate_prompt  # noqa: E402

SECTION = "## Executor (bench/executor.py)"


def string_chain(n: int, first: str = "a") -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveString", "inputs": {"value": first}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "StringConcatenate",
                          "inputs": {"string_a": [str(i - 1), 0], "string_b": "b", "delimiter": ""}}
    prompt[str(n - 1)] = {"class_type": "PreviewAny", "inputs": {"source": [str(n - 2), 0]}}
    return prompt


def image_chain(n: int, first: int = 0, prefix: str = "") -> dict[str, Any]:
    prompt: dict[str, Any] = {f"{prefix}0": {"class_type": "EmptyImage",
                                             "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": first}}}
    for i in range(1, n - 1):
        prompt[f"{prefix}{i}"] = {"class_type": "ImageInvert", "inputs": {"image": [f"{prefix}{i - 1}", 0]}}
    prompt[f"{prefix}{n - 1}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"{prefix}{n - 2}", 0]}}
    return prompt


def four_chains(n: int, first: int = 0) -> dict[str, Any]:
    prompt: dict[str, Any] = {}
    for c in range(4):
        prompt.update(image_chain(n // 4, first if c == 0 else c, prefix=f"c{c}_"))
    return prompt


def fan(n: int, first: str = "a") -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveString", "inputs": {"value": first}}}
    for i in range(1, n // 2 + 1):
        prompt[f"s{i}"] = {"class_type": "StringConcatenate",
                           "inputs": {"string_a": ["0", 0], "string_b": str(i), "delimiter": "-"}}
        prompt[f"p{i}"] = {"class_type": "PreviewAny", "inputs": {"source": [f"s{i}", 0]}}
    return prompt


GRAPHS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[[int], Any]]] = {
    "string chain": (string_chain, lambda rep: f"v{rep}"),
    "image chain": (image_chain, lambda rep: 1000 + rep),
    "4 image chains": (four_chains, lambda rep: 1000 + rep),
    "fan": (fan, lambda rep: f"v{rep}"),
}


def run_once(executor: Executor, prompt: dict[str, Any], registry: Any, folders: Any) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one validate + execute."""
    start, cpu = time.perf_counter(), time.process_time()
    checked = validate_prompt(prompt, registry, folders)
    if not checked.ok:
        raise RuntimeError(f"benchmark graph invalid: {checked.error}")
    result = executor.execute(checked.prompt, "bench", outputs_to_execute=checked.outputs)
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    if result.status != "success":
        raise RuntimeError(f"benchmark graph failed: {result.error}")
    return elapsed


def measure(name: str, n: int, repeat: int, registry: Any, folders: Any) -> dict[str, float]:
    build, changed_value = GRAPHS[name]
    runs: dict[str, list[tuple[float, float]]] = {"first": [], "rerun": [], "changed": []}
    for rep in range(repeat):
        executor = Executor(registry, folders=folders)
        runs["first"].append(run_once(executor, build(n), registry, folders))
        runs["rerun"].append(run_once(executor, build(n), registry, folders))
        runs["changed"].append(run_once(executor, build(n, changed_value(rep)), registry, folders))
    return _medians(len(build(n)), runs)


def _medians(nodes: int, runs: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    out: dict[str, float] = {"nodes": nodes}
    for key, pairs in runs.items():
        out[key] = statistics.median(p[0] for p in pairs)
        out[key + "_cpu"] = statistics.median(p[1] for p in pairs)
    return out


async def _server_times(build: Callable[..., dict[str, Any]], n: int, changed_value: Callable[[int], Any],
                        repeat: int, base: Path) -> dict[str, float]:
    """The same three runs through a real server on a loopback port: POST /prompt, then wait
    for the websocket's `executing` message with `node: null` and for the history entry."""

    import aiohttp
    from aiohttp import web

    from folders import Folders
    from nodes.registry import build_builtin_registry
    from runtime import assemble_runtime
    from server.app import create_app

    runs: dict[str, list[tuple[float, float]]] = {"first": [], "rerun": [], "changed": []}
    for rep in range(repeat):
        folders = Folders.for_base(base / f"server{rep}")
        registry = build_builtin_registry()
        runtime = assemble_runtime(registry, folders)
        runner = web.AppRunner(create_app(runtime), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws?clientId=bench") as ws:
                for key, prompt in (("first", build(n)), ("rerun", build(n)), ("changed", build(n, changed_value(rep)))):
                    start, cpu = time.perf_counter(), time.process_time()
                    async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": "bench"}) as reply:
                        body = await reply.json()
                        if reply.status != 200:
                            raise RuntimeError(f"POST /prompt failed: {body}")
                    await _wait_done(ws, body["prompt_id"])
                    await _wait_history(session, url, body["prompt_id"])
                    runs[key].append((time.perf_counter() - start, time.process_time() - cpu))
        finally:
            await runner.cleanup()
    return _medians(len(build(n)), runs)


async def _wait_done(ws: Any, prompt_id: str) -> None:
    import aiohttp

    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        event = message.json()
        data = event.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            continue
        if event["type"] == "execution_error":
            raise RuntimeError(f"benchmark graph failed: {data}")
        if event["type"] == "executing" and data.get("node") is None:
            return


async def _wait_history(session: Any, url: str, prompt_id: str) -> None:
    """Until GET /history/{id} has the prompt: the run is finished and recorded."""
    import asyncio

    while True:
        async with session.get(f"{url}/history/{prompt_id}") as reply:
            if prompt_id in await reply.json():
                return
        await asyncio.sleep(0.002)


def measure_server(name: str, n: int, repeat: int, base: Path) -> dict[str, float]:
    import asyncio

    build, changed_value = GRAPHS[name]
    return asyncio.run(_server_times(build, n, changed_value, repeat, base))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, {platform.system()}"


def table(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    lines = ["| graph | N | nodes | first run: wall (CPU) s | rerun, nothing changed: wall (CPU) s | "
             "rerun, first value changed: wall (CPU) s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, n, r in rows:
        cells = [f"{r[k]:.3f} ({r[k + '_cpu']:.3f})" for k in ("first", "rerun", "changed")]
        lines.append(f"| {name} | {n} | {int(r['nodes'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(where: str, name: str, n: int, r: dict[str, float]) -> None:
    print(f"{where:>12} {name:>15} N={n:>6}: first {r['first']:.3f} ({r['first_cpu']:.3f} CPU) s  rerun "
          f"{r['rerun']:.4f} ({r['rerun_cpu']:.4f}) s  changed {r['changed']:.3f} ({r['changed_cpu']:.3f}) s", flush=True)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("\n" + text[end + 1:] if end >= 0 else "\n")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    parser.add_argument("--write", type=Path, help="update this benchmark's section of a RESULTS.md")
    parser.add_argument("--server", action="store_true", help="also measure through POST /prompt on a loopback server")
    args = parser.parse_args(argv)

    from folders import Folders
    from nodes.registry import build_builtin_registry

    registry = build_builtin_registry()
    with tempfile.TemporaryDirectory() as base:
        folders = Folders.for_base(Path(base))
        rows, server_rows = [], []
        for n in args.sizes:
            for name in args.graphs:
                result = measure(name, n, args.repeat, registry, folders)
                rows.append((name, n, result))
                _report("in-process", name, n, result)
                if args.server:
                    result = measure_server(name, n, args.repeat, Path(base))
                    server_rows.append((name, n, result))
                    _report("POST /prompt", name, n, result)
    load = os.getloadavg()
    command = (f"python bench/executor.py --sizes {' '.join(map(str, args.sizes))} --repeat {args.repeat}"
               + (" --server" if args.server else ""))
    body = (f"{SECTION}\n\nMachine: {machine()}. Command: `{command}`. Each figure is the median of "
            f"{args.repeat} runs. Load average when it finished: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min; "
            f"above 2 the two cores were shared and wall-clock figures are inflated).\n\nIn-process: `validate_prompt` + `Executor.execute`, what the server does per "
            f"prompt, without HTTP.\n\n{table(rows)}\n")
    if server_rows:
        body += (f"\nThrough the server: `POST /prompt` on a loopback port until the websocket's `executing` "
                 f"message with `node: null` for that prompt and until `GET /history/{{id}}` has it.\n\n"
                 f"{table(server_rows)}\n")
    print(body)
    if args.write:
        write_section(args.write, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
