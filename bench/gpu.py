"""GPU benchmark of Loom's generation path and memory policy on an SD1.5-size model (issue 9).

Owns the measurements of the `## GPU (bench/gpu.py)` section of bench/RESULTS.md: time to first image, 512×512
it/s at batch 1 and 4 in fp16 with peak VRAM, the same under `--lowvram` with a 4 GB cap
(`torch.cuda.set_per_process_memory_fraction`), and a 20-step workflow alternating two checkpoints (normal and
capped). It drives the same pieces the nodes use: `diffusion.files.loading.load_checkpoint`, `diffusion.sampling.sample.sample`,
the CLIP and VAE wrappers, and `executor.memory.ModelManager` for every placement.

    python bench/gpu.py                         # builds the reference checkpoint if missing, runs everything
    python bench/gpu.py --results-md bench/RESULTS.md   # also appends the figures there
    python bench/gpu.py --smoke                 # tiny checkpoint on the CPU: checks the script itself

The checkpoint has random weights (shared/reference/make_random_checkpoint.py), so images are noise; the timings
are those of the real architecture. The second checkpoint is the same file loaded again as a separate model.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusion.networks.diffusion_model import DiffusionModel  # noqa: E402
from diffusion.files.loading import load_checkpoint  # noqa: E402
from diffusion.patcher import ModelHandle  # noqa: E402
from diffusion.sampling.sample import sample  # noqa: E402
from diffusion.text.text_encoders import CLIP  # noqa: E402
from executor.devices import CudaDevice, FakeDevice  # noqa: E402
from executor.memory import MemoryPolicy, ModelManager  # noqa: E402

SHARED = REPO / ".." / "shared" / "reference"
GIB = 1024 ** 3
PROMPT, NEGATIVE = "a photograph of an astronaut riding a horse", "blurry, lowres"


@dataclass
class Pipeline:
    """One loaded checkpoint as the nodes see it: MODEL handle, CLIP, VAE."""

    unet: ModelHandle
    clip: CLIP
    vae: Any
    vae_handle: ModelHandle


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ensure_checkpoint(path: Path) -> Path:
    """Build the SD1.5-size reference checkpoint with the shared recipe if it is not there yet."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    recipe = SHARED / "make_random_checkpoint.py"
    subprocess.run([sys.executable, str(recipe), str(SHARED / "sd15_keys.json"), str(path)], check=True)
    return path


def load(mm: ModelManager, path: Path) -> Pipeline:
    """CheckpointLoaderSimple's work: read in the policy's precisions, wrap in handles (no file cache: a second
    call gives a second, separate model, as a second checkpoint would)."""
    ckpt = load_checkpoint(path, dtype=mm.dtype_for("unet"), vae_dtype=mm.dtype_for("vae"),
                           text_encoder_dtype=mm.dtype_for("text_encoder"))
    unet = ModelHandle(DiffusionModel(ckpt.unet), name=path.name, kind="unet")
    clip = CLIP(ckpt.text_encoder)
    clip.handle = ModelHandle(clip.model, name=path.name, kind="text_encoder")
    vae_handle = ModelHandle(ckpt.vae.model, name=path.name, kind="vae")
    return Pipeline(unet, clip, ckpt.vae, vae_handle)


def generate(mm: ModelManager, pipe: Pipeline, *, steps: int, batch: int, size: int, seed: int = 42) -> dict:
    """Text-to-image as the default workflow does it; returns the per-stage timings in seconds."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    with mm.use([pipe.clip]):
        positive = pipe.clip.encode_from_tokens_scheduled(pipe.clip.tokenize(PROMPT))
        negative = pipe.clip.encode_from_tokens_scheduled(pipe.clip.tokenize(NEGATIVE))
    sync()
    times["encode"] = time.perf_counter() - t0
    latent = torch.zeros(batch, 4, size // 8, size // 8)
    work = pipe.unet.model.working_memory(tuple(latent.shape), dtype=mm.dtype_for("unet"))
    t1 = time.perf_counter()
    with mm.use([pipe.unet], working_memory=work) as device:
        samples = sample(pipe.unet.model, noise=None, positive=positive, negative=negative, cfg=7.0,
                         sampler_name="euler", scheduler="normal", steps=steps, latent_image=latent, seed=seed,
                         device=device, model_options=pipe.unet.options)
    sync()
    times["sample"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    decode_work = pipe.vae.memory_required_decode(tuple(samples.shape), mm.dtype_for("vae"))
    with mm.use([pipe.vae_handle], working_memory=decode_work):
        image = mm.retry_on_oom(lambda: pipe.vae.decode(samples), fallback=lambda: pipe.vae.decode_tiled(samples))
    sync()
    times["decode"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    times["it_per_s"] = steps / times["sample"]
    assert image.shape == (batch, size, size, 3) and torch.isfinite(image).all()
    return times


def peak_vram(fn: Callable[[], dict]) -> dict:
    """Run `fn` and add the peak VRAM allocated during it (GiB)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = fn()
    if torch.cuda.is_available():
        out["peak_vram_gib"] = torch.cuda.max_memory_allocated() / GIB
    return out


def switching(mm: ModelManager, pipes: list[Pipeline], *, steps: int, size: int, rounds: int) -> dict:
    """A `steps`-step workflow run `rounds` times, alternating checkpoints; mean and max seconds per image."""
    totals = [generate(mm, pipes[i % len(pipes)], steps=steps, batch=1, size=size)["total"] for i in range(rounds)]
    return {"per_image_mean_s": sum(totals) / len(totals), "per_image_max_s": max(totals), "rounds": rounds}


def cap_device(mm_old: ModelManager, cap_gib: float, smoke: bool) -> Any:
    """Free everything and cap the process's VRAM at `cap_gib` (or a fake device of that budget in smoke mode)."""
    mm_old.unload_all()
    if smoke:
        return FakeDevice(int(cap_gib * GIB))
    torch.cuda.empty_cache()
    total = torch.cuda.mem_get_info()[1]
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total))
    return CudaDevice()


def run(args: argparse.Namespace) -> dict:
    """All phases, in the order that keeps each figure honest (first image first, the capped runs last)."""
    results: dict[str, Any] = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                               "torch": torch.__version__, "size": args.size, "steps": args.steps}
    device = FakeDevice(64 * GIB) if args.smoke else CudaDevice()
    mm = ModelManager(MemoryPolicy(precision=args.precision, reserve_vram=0.0 if args.smoke else None),
                      device=device)
    results["dtype_unet"] = str(mm.dtype_for("unet"))
    t0 = time.perf_counter()
    first = load(mm, args.ckpt)
    results["load_s"] = time.perf_counter() - t0
    generate(mm, first, steps=args.steps, batch=1, size=args.size)
    results["time_to_first_image_s"] = time.perf_counter() - t0
    for batch in (1, 4):
        results[f"batch{batch}"] = peak_vram(lambda: generate(mm, first, steps=args.steps, batch=batch,
                                                             size=args.size))
    second = load(mm, args.ckpt)
    results["switching"] = switching(mm, [first, second], steps=args.steps, size=args.size, rounds=args.rounds)
    results["loaded_after_switching"] = mm.loaded_models()
    capped = ModelManager(MemoryPolicy(lowvram=True, precision=args.precision,
                                       reserve_vram=0.0 if args.smoke else None),
                          device=cap_device(mm, args.cap_gib, args.smoke))
    results["lowvram_cap_gib"] = args.cap_gib
    results["lowvram_batch1"] = peak_vram(lambda: generate(capped, first, steps=args.steps, batch=1, size=args.size))
    results["lowvram_partial"] = [m for m in capped.loaded_models() if m["partial"]]
    results["lowvram_switching"] = peak_vram(lambda: switching(capped, [first, second], steps=args.steps,
                                                               size=args.size, rounds=args.rounds))
    return results


def markdown(r: dict) -> str:
    """One run's figures, as a subsection of RESULTS.md's `## GPU (bench/gpu.py)`."""
    b1, b4, lv = r["batch1"], r["batch4"], r["lowvram_batch1"]
    sw, lsw = r["switching"], r["lowvram_switching"]
    lines = [
        f"### {r['device']}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
        f"Device: {r['device']}, torch {r['torch']}, UNet {r['dtype_unet']}, {r['size']}×{r['size']}, euler/normal, "
        f"cfg 7, {r['steps']} steps, SD1.5-size random-weight reference checkpoint (fp16 weights as read).", "",
        "| figure | value |", "| --- | --- |",
        f"| checkpoint load | {r['load_s']:.2f} s |",
        f"| time to first image (load + encode + {r['steps']} steps + decode) | {r['time_to_first_image_s']:.2f} s |",
        f"| batch 1 | {b1['it_per_s']:.2f} it/s, peak VRAM {b1.get('peak_vram_gib', 0):.2f} GiB |",
        f"| batch 4 | {b4['it_per_s']:.2f} it/s, peak VRAM {b4.get('peak_vram_gib', 0):.2f} GiB |",
        f"| --lowvram, {r['lowvram_cap_gib']} GiB cap, batch 1 | {lv['it_per_s']:.2f} it/s, peak VRAM "
        f"{lv.get('peak_vram_gib', 0):.2f} GiB, partially loaded: {[m['kind'] for m in r['lowvram_partial']]} |",
        f"| two checkpoints alternating, {sw['rounds']} images | {sw['per_image_mean_s']:.2f} s/image "
        f"(max {sw['per_image_max_s']:.2f}) |",
        f"| the same, --lowvram under the cap | {lsw['per_image_mean_s']:.2f} s/image (max "
        f"{lsw['per_image_max_s']:.2f}), peak VRAM {lsw.get('peak_vram_gib', 0):.2f} GiB |", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=Path("/tmp/loom-bench/loom-ref-sd15.safetensors"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--cap-gib", type=float, default=4.0)
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    parser.add_argument("--results-md", type=Path, default=None, help="append the markdown section here")
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoint on the CPU, to test the script")
    args = parser.parse_args()
    if args.smoke:
        from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint

        args.ckpt = write_tiny_checkpoint(Path("/tmp/loom-bench-smoke/tiny.safetensors"), "sd15")
        args.size, args.steps, args.rounds, args.precision, args.cap_gib = 64, 2, 2, "fp32", 0.05
    elif not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device (use --smoke to check the script on the CPU)")
    else:
        args.ckpt = ensure_checkpoint(args.ckpt)
    results = run(args)
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.results_md:
        with args.results_md.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
