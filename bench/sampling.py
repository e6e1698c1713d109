"""Seconds per sampling step of the full-size SD1.5 UNet (the shared reference checkpoint), batch 1, cfg 7
(cond and uncond batched into one UNet call), euler/normal, at 256×256 and 512×512 in fp32 and bf16.

    python bench/sampling.py [--sizes 256 512] [--dtypes fp32 bf16] [--steps 4] [--threads N]
                             [--ckpt PATH] [--json out.json] [--results-md bench/RESULTS.md]

The checkpoint is `.cache/reference/loom-ref-sd15.safetensors`, built with
`../shared/reference/make_random_checkpoint.py` when missing. A step's time is the wall time between two
sampler callbacks; the first step (warm-up) is reported separately and left out of the mean.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusion.files.checkpoint import read_state_dict, split_components  # noqa: E402
from diffusion.networks.diffusion_model import DiffusionModel  # noqa: E402
from diffusion.families import detect_checkpoint  # noqa: E402
from diffusion.sampling.sample import sample  # noqa: E402
from diffusion.networks.unet import build_unet  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_CKPT = REPO / ".cache" / "reference" / "loom-ref-sd15.safetensors"


def ensure_checkpoint(path: Path) -> Path:
    """Build the reference checkpoint with the shared recipe if it is not there."""
    if path.exists():
        return path
    shared = REPO / ".." / "shared" / "reference"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(shared / "make_random_checkpoint.py"), str(shared / "sd15_keys.json"),
                    str(path)], check=True)
    return path


def load_model(path: Path, dtype: torch.dtype) -> DiffusionModel:
    sd = read_state_dict(path, dtype=dtype)
    info = detect_checkpoint(sd)
    unet = build_unet(info.unet, split_components(sd).unet, dtype=dtype)
    return DiffusionModel(unet)


def time_steps(model: DiffusionModel, size: int, steps: int) -> dict:
    """Run `steps` euler steps at size×size with random 77-token contexts; per-step wall times."""
    gen = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 77, 768, generator=gen), {}]]
    neg = [[torch.randn(1, 77, 768, generator=gen), {}]]
    stamps = [time.perf_counter()]
    with torch.no_grad():
        sample(model, noise=None, positive=pos, negative=neg, cfg=7.0, sampler_name="euler", scheduler="normal",
               steps=steps, latent_image=torch.zeros(1, 4, size // 8, size // 8), seed=0,
               callback=lambda i, x0, x, n: stamps.append(time.perf_counter()))
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = per_step[1:] or per_step
    return {"size": size, "steps": steps, "first_step_s": per_step[0], "s_per_step": sum(steady) / len(steady),
            "per_step_s": per_step}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"### {meta['machine']}, {meta['date']}", "",
             f"torch {meta['torch']}, {meta['threads']} threads, load average at start {meta['load']}.", "",
             "| size | dtype | s/step (steady) | first step (s) | steps |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['size']}×{r['size']} | {r['dtype']} | {r['s_per_step']:.2f} | {r['first_step_s']:.2f} | "
                     f"{r['steps']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--results-md", type=Path, default=None, help="append a table to this markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = ensure_checkpoint(args.ckpt)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    meta = {"machine": f"{platform.machine()} CPU ({platform.processor() or 'unknown'})",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load": load}
    rows = []
    for name in args.dtypes:
        t0 = time.perf_counter()
        model = load_model(path, DTYPES[name])
        print(f"{name}: loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        for size in args.sizes:
            row = {"dtype": name, **time_steps(model, size, args.steps)}
            print(f"{name} {size}x{size}: {row['s_per_step']:.2f} s/step (first {row['first_step_s']:.2f} s)",
                  flush=True)
            rows.append(row)
        del model
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.results_md:
        with args.results_md.open("a") as f:
            f.write("\n" + markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
