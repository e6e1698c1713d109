"""Execution-model benchmark: a loop by node expansion and many concurrent async nodes.

- `loop N`: the while-loop of `tests/execution/packs/exec_pack` (open → add 1 → compare →
  close, the close node re-expanding itself) run for N iterations: 4·N expanded nodes, N
  nested expansions. Run on a fresh cache each time; `rerun` is the same prompt again (served
  from the cache).
- `async N`: N independent `ExecSleep` nodes (async, each awaiting `--sleep` seconds and
  reporting progress) feeding N output nodes; concurrent, so near `--sleep` rather than N·sleep.

Each figure is the median of `--repeat` runs of `validate_prompt` + `Executor.execute` on a
runtime that loaded the test pack (events collected in memory, as the server's sink would be
fed). Wall-clock and process CPU seconds are both reported.

    python bench/execution_model.py [--loops 100 1000] [--asyncs 100] [--sleep 0.5] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "execution"), str(REPO / "tests" / "custom_nodes")]

from config import parse_args  # noqa: E402
from executor.validate import validate_prompt  # noqa: E402
from runtime import build_runtime  # noqa: E402

PACKS = REPO / "tests" / "execution" / "packs"


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def loop_prompt(iterations: int) -> dict[str, Any]:
    return {"1": node("ExecInt", value=0), "2": node("ExecWhileOpen", value=["1", 0]),
            "3": node("ExecMath", a=["2", 1], b=1, op="add"), "4": node("ExecMath", a=["3", 0], b=iterations, op="lt"),
            "5": node("ExecWhileClose", flow_control=["2", 0], value=["3", 0], condition=["4", 0]),
            "6": node("ExecRecord", value=["5", 0])}


def async_prompt(count: int, seconds: float) -> dict[str, Any]:
    prompt = {"1": node("ExecInt", value=1)}
    for i in range(count):
        prompt[f"s{i}"] = node("ExecSleep", value=["1", 0], seconds=seconds)
        prompt[f"r{i}"] = node("ExecRecord", value=[f"s{i}", 0])
    return prompt


def runtime(base: Path) -> Any:
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return build_runtime(parse_args(["--base-directory", str(base), "--cpu", "--custom-nodes-directory",
                                     str(PACKS)], {}))


def timed(rt: Any, prompt: dict[str, Any]) -> tuple[float, float, int]:
    """(wall s, CPU s, events) of validating and executing `prompt` once."""
    events: list[Any] = []
    wall, cpu = time.perf_counter(), time.process_time()
    checked = validate_prompt(prompt, rt.registry, rt.folders)
    assert checked.ok, checked.response()
    result = rt.executor.execute(checked.prompt, "bench", outputs_to_execute=checked.outputs, emit=events.append)
    assert result.status == "success", result.error
    return time.perf_counter() - wall, time.process_time() - cpu, len(events)


def median_of(repeat: int, once: Callable[[], tuple[float, float, int]]) -> tuple[float, float, int]:
    runs = [once() for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[-1][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--asyncs", type=int, nargs="*", default=[100])
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rt = runtime(Path(tempfile.mkdtemp(prefix="loom-bench-exec-")))
    print("| case | wall s (median) | CPU s | events |\n| --- | --- | --- | --- |")
    for n in args.loops:
        def first() -> tuple[float, float, int]:
            rt.executor.cache.clear()
            return timed(rt, loop_prompt(n))
        wall, cpu, events = median_of(args.repeat, first)
        print(f"| loop {n} iterations, first run | {wall:.3f} | {cpu:.3f} | {events} |")
        wall, cpu, events = median_of(args.repeat, lambda: timed(rt, loop_prompt(n)))
        print(f"| loop {n} iterations, rerun (cached) | {wall:.4f} | {cpu:.4f} | {events} |")
    for n in args.asyncs:
        def fresh() -> tuple[float, float, int]:
            rt.executor.cache.clear()
            return timed(rt, async_prompt(n, args.sleep))
        wall, cpu, events = median_of(args.repeat, fresh)
        print(f"| {n} concurrent async nodes sleeping {args.sleep} s each | {wall:.3f} | {cpu:.3f} | {events} |")


if __name__ == "__main__":
    main()
