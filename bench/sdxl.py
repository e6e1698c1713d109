"""SDXL on the CPU: load time, seconds per sampling step at 512² and 1024² (batch 1, cfg 7: cond and uncond in one
UNet call, euler/normal), VAE decode time and peak RSS, for the full-size reference checkpoint
(`.cache/reference/loom-ref-sdxl.safetensors`, 2.6 B UNet parameters, fp16 in the file), computed in fp32 or
bf16, with the UNet's weights stored in the compute dtype or (`--storage`) in bf16/fp16/fp8 and upcast layer by
layer (what `--bf16-unet`, `--fp16-unet` and `--fp8_e4m3fn-unet` do on a CPU).

    flock /tmp/loom-bigmodel.lock python bench/sdxl.py --dtype fp32 [--storage bf16] [--sizes 512 1024]
                         [--steps 2] [--decode-size 512] [--json out.json] [--results-md FILE]

On a CPU without native bf16 (no avx512_bf16/AMX) `--dtype bf16` is emulated by torch and many times slower:
use `--dtype fp32 --storage bf16` there (what Loom itself picks).

One dtype per run, so the process's peak RSS (ru_maxrss) belongs to that dtype. The model goes through Loom's
real loading path (tensor by tensor from the mmap, cast while reading; text encoders kept in the file's fp16 and
computed in fp32, as ComfyUI does on CPU) and the prompts through both text towers and the ADM vector. A step's
time is the wall time between two sampler callbacks; the first (warm-up) step is reported separately.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusion.files.assemble import Precision, load_checkpoint_modules  # noqa: E402
from diffusion.sampling.sample import sample  # noqa: E402
from diffusion.text.text_encoders import CLIP  # noqa: E402
from diffusion.networks.vae import VAE  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
STORAGE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}
DEFAULT_CKPT = REPO / ".cache" / "reference" / "loom-ref-sdxl.safetensors"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def time_steps(model: torch.nn.Module, positive: list, negative: list, size: int, steps: int) -> dict:
    stamps = [time.perf_counter()]
    with torch.no_grad():
        latent = sample(model, noise=None, positive=positive, negative=negative, cfg=7.0, sampler_name="euler",
                        scheduler="normal", steps=steps, latent_image=torch.zeros(1, 4, size // 8, size // 8),
                        seed=0, callback=lambda i, x0, x, n: stamps.append(time.perf_counter()))
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = per_step[1:] or per_step
    return {"size": size, "steps": steps, "first_step_s": per_step[0], "s_per_step": sum(steady) / len(steady),
            "latent": latent}


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [f"### {m['machine']} ({m.get('cpu', '?')}), {m['date']} ({m['dtype']} compute, {m['storage']} UNet weights)", "",
             f"torch {m['torch']}, {m['threads']} threads, load average at start {m['load']} (shared machine). "
             f"Load {result['load_s']:.1f} s; VAE decode {result['decode_size']}² {result['decode_s']:.1f} s; "
             f"peak RSS {result['peak_rss_gib']:.2f} GiB.", "",
             "| size | compute / storage | s/step (steady) | first step (s) | steps |", "| --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['size']}×{r['size']} | {m['dtype']} / {m['storage']} | {r['s_per_step']:.2f} | {r['first_step_s']:.2f} "
                     f"| {r['steps']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--storage", default=None, choices=sorted(STORAGE),
                        help="UNet weight storage (default: the compute dtype)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--decode-size", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--results-md", type=Path, default=None, help="append a table to this markdown file")
    args = parser.parse_args()
    if not args.ckpt.is_file():
        sys.exit(f"{args.ckpt} is missing: build it with tests/fixtures/reference.py (reference_checkpoint 'sdxl')")
    dtype = DTYPES[args.dtype]
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    meta = {"machine": f"{platform.machine()} CPU", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "load": load, "dtype": args.dtype,
            "storage": args.storage or args.dtype, "cpu": cpu_name()}
    t0 = time.perf_counter()
    modules = load_checkpoint_modules(args.ckpt, Precision(unet=dtype, vae=dtype, text_encoder=torch.float16,
                                                                   unet_weights=STORAGE.get(args.storage or "")))
    load_s = time.perf_counter() - t0
    print(f"loaded in {load_s:.1f} s, RSS peak {peak_rss_gib():.2f} GiB", flush=True)
    clip = CLIP(modules["clip"])
    cond, pooled = clip.encode("a photograph of an astronaut riding a horse")
    uncond, upooled = clip.encode("blurry, lowres")
    positive, negative = [[cond, {"pooled_output": pooled}]], [[uncond, {"pooled_output": upooled}]]
    rows, latent = [], None
    for size in args.sizes:
        row = time_steps(modules["unet"], positive, negative, size, args.steps)
        sampled = row.pop("latent")
        latent = sampled if size == args.decode_size else latent
        print(f"{size}x{size}: {row['s_per_step']:.2f} s/step (first {row['first_step_s']:.2f} s), "
              f"RSS peak {peak_rss_gib():.2f} GiB", flush=True)
        rows.append(row)
    if latent is None:
        latent = torch.zeros(1, 4, args.decode_size // 8, args.decode_size // 8)
    vae = VAE(modules["vae"], scale_factor=0.13025)
    t0 = time.perf_counter()
    with torch.no_grad():
        vae.decode(latent)
    decode_s = time.perf_counter() - t0
    result = {"meta": meta, "load_s": load_s, "decode_size": args.decode_size, "decode_s": decode_s,
              "peak_rss_gib": peak_rss_gib(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.results_md:
        with args.results_md.open("a") as f:
            f.write("\n" + markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
