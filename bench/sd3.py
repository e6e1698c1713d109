"""Benchmark: the full-size SD3.5 Medium reference checkpoint on this machine's CPU — load time and peak RSS, and
MMDiT forward time at batch 2 (a cfg pair) for 256² and 512² images (32² and 64² latents), fp32 weights and fp8
storage (float8_e4m3fn linear weights upcast per layer).

    flock /tmp/loom-bigmodel.lock python bench/sd3.py [--runs 3] [--sides 32 64] [--tokens 77] [--warmup 1]
                                                       [--storage fp32 fp8] [--dtype fp32|bf16]

Load is `diffusion.files.assemble.load_checkpoint_modules` (read, build MMDiT + VAE on `meta`, assign) of the fp16
reference file into fp32 (`--dtype bf16`: into bf16, computing in bf16, for CPUs with native bf16; `--storage` is then
ignored). The forward figures are the median of `--runs` calls after `--warmup` warm-up calls,
with `--tokens` context tokens (77: two CLIPs alone; 154: CLIP ‖ T5, as with T5-XXL loaded). A forward at batch 2 is
one sampling step at cfg > 1 (the sampler's own work is negligible beside it). The checkpoint is built with shared/reference/make_random_checkpoint.py into
<repo>/.cache/reference when missing (tests/fixtures/reference.py). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusion.files.assemble import Precision, load_checkpoint_modules  # noqa: E402
from tests.fixtures.reference import reference_checkpoint  # noqa: E402


def forward_seconds(net: torch.nn.Module, side: int, runs: int, tokens: int = 77, warmup: int = 1) -> float:
    dtype = next(net.parameters()).dtype
    x, t = torch.randn(2, 16, side, side, dtype=dtype), torch.tensor([1000.0, 1000.0])
    ctx, y = torch.randn(2, tokens, 4096, dtype=dtype), torch.randn(2, 2048, dtype=dtype)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            net(x, t, context=ctx, y=y)
        for _ in range(runs):
            start = time.perf_counter()
            net(x, t, context=ctx, y=y)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def to_fp8(net: torch.nn.Module) -> None:
    """Linear weights to float8_e4m3fn storage (the MMDiT's Linear upcasts them per call)."""
    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data = module.weight.data.to(torch.float8_e4m3fn)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64], help="latent sides (pixels / 8)")
    parser.add_argument("--tokens", type=int, default=77, help="context tokens (154 with T5)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--storage", nargs="+", default=["fp32", "fp8"], choices=("fp32", "fp8"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="compute dtype")
    args = parser.parse_args()
    compute = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if compute == torch.bfloat16:
        args.storage = ["bf16"]
    path = reference_checkpoint(REPO / ".." / "shared", "sd35m")
    start = time.perf_counter()
    net = load_checkpoint_modules(path, Precision(unet=compute))["unet"].diffusion_model
    load = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"load average {Path('/proc/loadavg').read_text().split()[0]}, {args.tokens} context tokens, "
          f"median of {args.runs} after {args.warmup} warm-up", flush=True)
    print("| case | seconds |\n|---|---|")
    print(f"| load fp16 file → {args.dtype} (peak RSS {rss:.1f} GiB) | {load:.1f} |", flush=True)
    for storage in args.storage:
        if storage == "fp8":
            to_fp8(net)
        for side in args.sides:
            seconds = forward_seconds(net, side, args.runs, args.tokens, args.warmup)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
            print(f"| MMDiT forward, batch 2, {side * 8}², {storage} (peak RSS so far {rss:.1f} GiB) | {seconds:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
