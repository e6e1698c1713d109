"""SD3.5 Large (8.1 B) with T5-XXL (4.8 B) on this 24 GB CPU machine: the whole workflow through the real server.

    flock /tmp/loom-bigmodel.lock python bench/sd3_large.py [--size 256] [--steps 1] [--cfg 4.5] [--keep-files]

No SD3.5 Large or T5-XXL key list is in ../shared/reference, so `bench/synthetic_weights.py` writes deterministic
random-weight files in their real layouts (shapes from Loom's MMDiT at SD3.5 Large's config and from transformers'
T5EncoderModel at T5-v1.1-XXL's), tensor by tensor, into `.cache/bench/sd35-large/` (about 15 GB; removed after the
run unless `--keep-files`): `unet/sd3.5_large_fp8_e4m3fn.safetensors` (matrices in float8_e4m3fn, 8.2 GB),
`clip/t5xxl_fp8_e4m3fn.safetensors` (4.9 GB), CLIP-L and bigG in fp16 from the shared SD3 key lists, and the SD3
VAE from the SD3.5 Medium key list. T5's tokenizer is the tiny T5-shaped test tokenizer (the real one is a file
users place beside the weights; the ids it gives do not change the cost).

The workflow is what ComfyUI users run for 3.5 Large on small machines: UNETLoader (weight_dtype default: the
file's fp8 stays fp8 in memory, upcast layer by layer) → ModelSamplingSD3 (shift 3) → KSampler, TripleCLIPLoader
(CLIP-L, bigG, T5-XXL fp8) → CLIPTextEncode ×2, EmptySD3LatentImage, VAELoader → VAEDecode → SaveImage, posted to
`python main.py` over HTTP with a websocket listening. Reported: seconds per node (from the websocket's
`executing` messages), the server's resident memory when each node starts and its peak (VmHWM) over the run.
Then, in this process, SD3 text encoding of one prompt with and without T5 (CLIP-L + bigG alone, as DualCLIPLoader
type sd3 gives): the first call and the median of the next `--encode-runs`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.pipeline import free_port, load_avg, peak_rss_gb, post_and_wait, start_server  # noqa: E402
from bench.synthetic_weights import (sd35_large_mmdit_spec, spec_from_key_list, t5xxl_spec,  # noqa: E402
                                     write_streamed)

SHARED = REPO / ".." / "shared" / "reference"
FILES = REPO / ".cache" / "bench" / "sd35-large"
UNET, T5 = "sd3.5_large_fp8_e4m3fn.safetensors", "t5xxl_fp8_e4m3fn.safetensors"
CLIP_L, CLIP_G, VAE = "clip_l.safetensors", "clip_g.safetensors", "sd35_vae.safetensors"


def build_files() -> dict[str, float]:
    """Write whatever file is missing; seconds per file written."""
    from tests.fixtures.tiny_t5 import write_tiny_t5_tokenizer

    plan = {
        FILES / "unet" / UNET: lambda: sd35_large_mmdit_spec(torch.float8_e4m3fn),
        FILES / "clip" / T5: lambda: t5xxl_spec(torch.float8_e4m3fn),
        FILES / "clip" / CLIP_L: lambda: spec_from_key_list(SHARED / "sd3_clip_l_keys.json"),
        FILES / "clip" / CLIP_G: lambda: spec_from_key_list(SHARED / "sd3_clip_g_keys.json"),
        FILES / "vae" / VAE: lambda: spec_from_key_list(SHARED / "sd35m_keys.json", "first_stage_model.",
                                                        "first_stage_model."),
    }
    took = {}
    for path, spec in plan.items():
        if not path.is_file():
            t0 = time.perf_counter()
            write_streamed(path, spec())
            took[path.name] = time.perf_counter() - t0
            print(f"wrote {path.name} ({path.stat().st_size / 1e9:.2f} GB) in {took[path.name]:.0f} s", flush=True)
    tokenizer = FILES / "clip" / T5.replace(".safetensors", ".tokenizer.json")
    if not tokenizer.is_file():
        write_tiny_t5_tokenizer(tokenizer)
    return took


def workflow(size: int, steps: int, cfg: float) -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
        "2": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "3": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": CLIP_L, "clip_name2": CLIP_G,
                                                            "clip_name3": T5}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a lighthouse on a cliff at dusk"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "blurry"}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "seed": 0, "steps": steps, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "sgm_uniform",
                                                   "denoise": 1.0}},
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["8", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "sd35large"}},
    }


def rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def run_prompt(port: int, pid: int, prompt: dict) -> list[dict[str, Any]]:
    """Post `prompt`; for each node the websocket names: start time and the server's RSS at that moment."""
    events: list[dict[str, Any]] = []
    asyncio.run(post_and_wait(port, prompt, lambda node, t: events.append({"node": node, "t": t,
                                                                             "rss_gb": rss_gb(pid)})))
    return events


def node_table(events: list[dict[str, Any]], prompt: dict) -> list[dict[str, Any]]:
    rows = []
    for here, after in zip(events, events[1:]):
        rows.append({"node": here["node"], "class_type": prompt[here["node"]]["class_type"],
                     "seconds": after["t"] - here["t"], "rss_at_start_gb": here["rss_gb"]})
    return rows


def watch_peak(pid: int, stop: threading.Event, out: dict[str, float]) -> None:
    while not stop.wait(0.5):
        try:
            out["max_rss_gb"] = max(out.get("max_rss_gb", 0.0), rss_gb(pid))
        except OSError:
            return


def text_encode_seconds(runs: int) -> dict[str, dict[str, float]]:
    """Seconds to encode one prompt with CLIP-L + bigG, and with CLIP-L + bigG + T5-XXL (fp8), through Loom's
    SD3 text-encoder loading (fp32 compute, weights as stored)."""
    import statistics

    from diffusion.files.assemble import load_sd3_text_encoder_module
    from diffusion.text.text_encoders import CLIP

    clip_dir = FILES / "clip"
    out = {}
    for name, files in (("clip_l+clip_g", [CLIP_L, CLIP_G]), ("clip_l+clip_g+t5xxl_fp8", [CLIP_L, CLIP_G, T5])):
        clip = CLIP(load_sd3_text_encoder_module([str(clip_dir / f) for f in files], torch.float32, [str(clip_dir)]))
        times = []
        with torch.inference_mode():
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                clip.encode("a lighthouse on a cliff at dusk")
                times.append(time.perf_counter() - t0)
        out[name] = {"first_s": times[0], "median_s": statistics.median(times[1:])}
        print(f"text encode {name}: first {times[0]:.2f} s, then {out[name]['median_s']:.2f} s", flush=True)
        del clip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--cfg", type=float, default=4.5)
    parser.add_argument("--keep-files", action="store_true")
    parser.add_argument("--encode-runs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    built = build_files()
    base = Path(tempfile.mkdtemp(prefix="loom-bench-sd35l-"))
    for folder in ("unet", "clip", "vae"):
        (base / "models" / folder).mkdir(parents=True)
        for f in (FILES / folder).iterdir():
            (base / "models" / folder / f.name).symlink_to(f)
    prompt = workflow(args.size, args.steps, args.cfg)
    port, load0 = free_port(), load_avg()
    proc, _ = start_server(base, port, ["--cpu"])
    stop, watched = threading.Event(), {}
    watcher = threading.Thread(target=watch_peak, args=(proc.pid, stop, watched), daemon=True)
    watcher.start()
    try:
        t0 = time.perf_counter()
        events = run_prompt(port, proc.pid, prompt)
        total = time.perf_counter() - t0
        peak = peak_rss_gb(proc.pid)
        images = sorted((base / "output").glob("sd35large*.png"))
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=120)
        shutil.rmtree(base, ignore_errors=True)
    try:
        encode = text_encode_seconds(args.encode_runs)
    finally:
        if not args.keep_files:
            shutil.rmtree(FILES, ignore_errors=True)
    result = {"text_encode": encode, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_at_start": load0,
              "size": args.size, "steps": args.steps, "cfg": args.cfg, "built_s": built, "total_s": total,
              "peak_rss_gb": peak, "sampled_max_rss_gb": watched.get("max_rss_gb"), "images": len(images),
              "nodes": node_table(events, prompt), "ram_gb": _ram_gb()}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _ram_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


if __name__ == "__main__":
    main()
