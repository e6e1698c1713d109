"""Benchmark: loading the full-size SD1.5 reference checkpoint, and UNet forward time, on this machine's CPU.

    python bench/models.py [--runs 5] [--write]

Each measurement runs in a fresh subprocess so its peak resident set (VmHWM of /proc/self/status) belongs to it
alone. Loading is `diffusion.files.loading.load_checkpoint` (read, detect, build UNet + VAE + text tower on `meta`,
assign) of the fp16 reference file into fp32, into bf16, and in ComfyUI's CPU placement (UNet/VAE fp32, CLIP fp16);
modules (torch, open_clip) are imported before the clock starts, as a server imports them at start-up.
The forward figures are the median of `--runs` UNet calls at batch 2 (a cfg pair) after one warm-up call.
`--write` replaces the "## Models (bench/models.py)" section of bench/RESULTS.md with the table.
The checkpoint is built with shared/reference/make_random_checkpoint.py into <repo>/.cache/reference when missing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CHECKPOINT = REPO / ".cache" / "reference" / "loom-ref-sd15.safetensors"
RESULTS = REPO / "bench" / "RESULTS.md"
HEADING = "## Models (bench/models.py)"
LOAD_CASES = {
    "fp16 file → fp32": {"dtype": "float32"},
    "fp16 file → bf16": {"dtype": "bfloat16"},
    "fp16 file → fp32 UNet/VAE, fp16 CLIP (ComfyUI's CPU placement)": {"dtype": "float32", "te": "float16"},
}
FORWARD_CASES = [(32, "float32"), (64, "float32"), (32, "bfloat16"), (64, "bfloat16")]


def _peak_rss_bytes() -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_load(dtype: str, te_dtype: str | None) -> dict:
    """Load the checkpoint once; time it and report the peak RSS (run in a fresh process)."""
    import open_clip  # noqa: F401  (imported at server start-up; `diffusion.text.text_encoders` imports it lazily)
    import torch

    from diffusion.files.loading import load_checkpoint

    before = _peak_rss_bytes()
    cpu = _cpu_seconds()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    loaded = load_checkpoint(
        CHECKPOINT, dtype=getattr(torch, dtype), text_encoder_dtype=getattr(torch, te_dtype) if te_dtype else None
    )
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    assert loaded.unet is not None and loaded.vae is not None and loaded.text_encoder is not None
    return {"seconds": seconds, "cpu_seconds": cpu, "load_average": load, "peak_rss": _peak_rss_bytes(),
            "rss_after_import": before}


def child_forward(size: int, dtype: str, runs: int) -> dict:
    """Median UNet forward time at batch 2 on `size`×`size` latents (run in a fresh process)."""
    import torch

    from diffusion.files.checkpoint import read_state_dict, split_components
    from diffusion.networks.unet import UNetConfig, build_unet

    torch_dtype = getattr(torch, dtype)
    unet_sd = split_components(read_state_dict(CHECKPOINT, dtype=torch_dtype)).unet
    unet = build_unet(UNetConfig.sd1(), unet_sd, dtype=torch_dtype)
    del unet_sd
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, size, size, generator=g)
    context = torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([500.0, 500.0])
    times = []
    load = os.getloadavg()[0]
    with torch.inference_mode():
        for i in range(runs + 1):
            start = time.perf_counter()
            out = unet(x, t, context)
            if i:  # the first call warms caches and allocators
                times.append(time.perf_counter() - start)
    assert torch.isfinite(out).all()
    return {"median": statistics.median(times), "times": times, "load_average": load, "peak_rss": _peak_rss_bytes()}


def _run_child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ensure_checkpoint() -> None:
    if CHECKPOINT.is_file():
        return
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    tmp = CHECKPOINT.with_suffix(f".{os.getpid()}.tmp")
    script = SHARED / "reference" / "make_random_checkpoint.py"
    subprocess.run([sys.executable, str(script), str(SHARED / "reference" / "sd15_keys.json"), str(tmp)], check=True)
    os.replace(tmp, CHECKPOINT)


def _machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    import torch

    load = os.getloadavg()
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}; load average at start {load[0]:.1f} (the machine is shared)"
    )


def _table(load: dict[str, dict], forward: dict[tuple[int, str], dict], machine: str, runs: int) -> str:
    gb = 1e9
    lines = [
        HEADING, "",
        f"Machine: {machine}.  ",
        f"Command: `python bench/models.py --runs {runs} --write`. Checkpoint: the SD1.5 reference file "
        "(fp16, 2.13 GB) from the OS page cache (warm).", "",
        "| load case | wall s | CPU s (user+sys) | peak RSS (GB) | load average |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_rss'] / gb:.2f} | {r['load_average']:.1f} |"
        for name, r in load.items()
    ]
    lines += [
        "", "For scale: ComfyUI on this machine loads the file in about 13 s and peaks at 6.3 GB RSS during a 256×256 "
        "run; the target is ≤ 6.5 s and ≤ 6.3 GB.", "",
        f"UNet forward, batch 2 (a cfg pair), median of {runs} after one warm-up:", "",
        "| latent | dtype | median s | runs (s) | load average |", "| --- | --- | ---: | --- | ---: |",
    ]
    for (size, dtype), r in forward.items():
        runs_s = ", ".join(f"{t:.2f}" for t in r["times"])
        lines.append(
            f"| {size}×{size} ({size * 8}px) | {dtype} | {r['median']:.2f} | {runs_s} | {r['load_average']:.1f} |"
        )
    lines += [
        "", "A load average above the core count means other processes were sharing the CPU, which inflates every "
        "wall time above (the forward runs most); the CPU-seconds column of the load table is the figure that "
        "contention hardly moves.",
    ]
    return "\n".join(lines) + "\n"


def _write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.is_file() else ""
    if HEADING in text:
        head, rest = text.split(HEADING, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        kind, *rest = args.child
        result = child_load(rest[0], rest[1] or None) if kind == "load" else child_forward(
            int(rest[0]), rest[1], int(rest[2])
        )
        print(json.dumps(result))
        return
    _ensure_checkpoint()
    machine = _machine()
    load = {name: _run_child(["load", c["dtype"], c.get("te", "")]) for name, c in LOAD_CASES.items()}
    for name, r in load.items():
        print(f"load {name}: {r['seconds']:.2f} s ({r['cpu_seconds']:.2f} s CPU), peak RSS "
              f"{r['peak_rss'] / 1e9:.2f} GB, load average {r['load_average']:.1f}", flush=True)
    forward = {}
    for size, dtype in FORWARD_CASES:
        forward[(size, dtype)] = _run_child(["forward", str(size), dtype, str(args.runs)])
        print(f"forward {size}x{size} {dtype}: median {forward[(size, dtype)]['median']:.2f} s", flush=True)
    section = _table(load, forward, machine, args.runs)
    print(section)
    if args.write:
        _write_section(section)


if __name__ == "__main__":
    main()
