"""SD1.5 reference checkpoint (full size, random weights) speed and memory, fp32 weights against fp8 storage.

`weights` mode (one process per storage choice, so peak RSS is that choice's own): checkpoint load seconds, UNet
seconds per step (one CFG step: batch 2), VAE decode seconds and peak RSS, at the given size.
`pair` mode: the UNet's seconds per step with fp32 weights and then, converted in place, fp8 storage, alternating
runs in one process (so both see the same machine load).
`easycache` mode: KSampler through the executor at `--steps` with and without EasyCache at its defaults: model
calls skipped, total seconds and PSNR of the decoded image against the uncached one.
`convs` mode: the UNet's seconds per step (batch 2) with its fp32 3×3 convolutions all by oneDNN's direct kernel and
by the algorithms diffusion/networks/conv3x3.py picks (Winograd F(2×2, 3×3) on big maps, one GEMM on small ones),
alternating runs in one process, and the relative RMS difference of the outputs.
`bf16` mode (for a CPU with native bf16, AVX512-BF16 or AMX): the UNet's seconds per step (batch 2) with fp32
weights by aten's kernels alone (Loom's convolution algorithms off: the kernels ComfyUI's fp32 CPU path runs), with
Loom's fp32 path, and in bf16 (what `--precision auto` picks on such a CPU), alternating runs in one process; then
a whole txt2img prompt through the executor at `--steps` in fp32 and with `--precision auto`, and the PSNR of the
bf16 image against the fp32 one.
`compile` mode: the UNet eager, then through `diffusion.networks.compile.compile_model` (TorchCompileModel's path,
inductor): seconds of the first compiled call (the compile), seconds per step after it, a call with new noise of the
same shape (no recompile), and the relative RMS difference from the eager output.

Usage: .venv/bin/python bench/speed.py weights --storage fp32|fp8 [--size 512] [--runs 3]
       .venv/bin/python bench/speed.py pair [--size 256] [--runs 3]
       .venv/bin/python bench/speed.py easycache [--size 512] [--steps 20]
       .venv/bin/python bench/speed.py convs|compile [--size 256] [--runs 3]
       .venv/bin/python bench/speed.py bf16 [--size 256] [--runs 3] [--steps 20]
Run it under `flock /tmp/loom-bigmodel.lock` on the shared machine; record the load average with the figures.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from diffusion.files.assemble import Precision, load_checkpoint_modules  # noqa: E402
from diffusion.networks.weight_cast import weight_bytes  # noqa: E402


def reference_sd15() -> Path:
    """The cached reference file, built (and verified) by tests/fixtures/reference.py when absent."""
    cached = ROOT / ".cache" / "reference" / "loom-ref-sd15.safetensors"
    if cached.is_file():
        return cached
    from tests.fixtures.reference import reference_checkpoint

    return reference_checkpoint(ROOT.parent / "shared", "sd15")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def weights_mode(storage: str, size: int, runs: int) -> None:
    stored = {"fp32": torch.float32, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}[storage]
    t0 = time.perf_counter()
    parts = load_checkpoint_modules(reference_sd15(), Precision(unet_weights=stored))
    load_s = time.perf_counter() - t0
    unet, vae = parts["unet"].diffusion_model, parts["vae"]
    side = size // 8
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, side, side, generator=gen), torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 77, 768, generator=gen)
    steps = []
    with torch.no_grad():
        unet(x, t, ctx)  # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            unet(x, t, ctx)
            steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vae.decode(x[:1])
        decode_s = time.perf_counter() - t0
    print(f"| SD1.5 {size}², {storage} UNet weights | {load_s:.1f} | {statistics.median(steps):.2f} | "
          f"{decode_s:.1f} | {peak_rss_gb():.2f} | {weight_bytes(unet) / 1024 ** 3:.2f} |")


def pair_mode(size: int, runs: int) -> None:
    from diffusion.networks.weight_cast import store_weights

    unet = load_checkpoint_modules(reference_sd15(), Precision())["unet"].diffusion_model
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, size // 8, size // 8, generator=gen), torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 77, 768, generator=gen)
    with torch.no_grad():
        want = unet(x, t, ctx)  # the fp32 output, and the warm-up
    # the cast layers run fp32 weights unchanged, so the two weight sets can be swapped in turn
    weights: dict[str, dict[str, torch.Tensor]] = {"fp32": {n: p.detach() for n, p in unet.named_parameters()}}
    store_weights(unet, torch.float8_e4m3fn, torch.float32)
    weights["fp8"] = {n: p.detach() for n, p in unet.named_parameters()}
    times: dict[str, list[float]] = {"fp32": [], "fp8": []}
    with torch.no_grad():
        for _ in range(runs):
            for label in ("fp32", "fp8"):
                for name, value in weights[label].items():
                    owner, _, attr = name.rpartition(".")
                    unet.get_submodule(owner)._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
                t0 = time.perf_counter()
                out = unet(x, t, ctx)
                times[label].append(time.perf_counter() - t0)
    rel = float((out - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt())
    print(f"| SD1.5 {size}², one CFG step (batch 2) | {statistics.median(times['fp32']):.2f} | "
          f"{statistics.median(times['fp8']):.2f} | {rel:.4f} |")


class _Skips(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"skipped \d+ of \d+", record.getMessage())
        if m:
            self.found.append(m[0])


def _reference_env(policy: Any = None) -> Any:
    """A Loom instance (tests/nodes/sd_env.py) with the reference file as models/checkpoints/ref-sd15.safetensors."""
    from tests.nodes.sd_env import SDEnv

    env = SDEnv(Path(tempfile.mkdtemp()), policy=policy)
    os.symlink(reference_sd15(), env.base / "models" / "checkpoints" / "ref-sd15.safetensors")
    return env


def _psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of an image in 0..1 against a reference one."""
    mse = float(((image - reference) ** 2).mean())
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def easycache_mode(size: int, steps: int) -> None:
    from tests.nodes.sd_env import txt2img

    env = _reference_env()
    skips = _Skips()
    logging.getLogger("loom.step_cache").addHandler(skips)
    logging.getLogger("loom.step_cache").setLevel(logging.INFO)
    env.value(txt2img(ckpt="ref-sd15.safetensors", steps=1, size=size), "4")  # load and encode once (cached)
    out = {}
    for label, cached in (("uncached", False), ("EasyCache defaults", True)):
        prompt = txt2img(ckpt="ref-sd15.safetensors", steps=steps, size=size, seed=3)
        if cached:
            prompt["c"] = {"class_type": "EasyCache", "inputs": {"model": ["4", 0], "reuse_threshold": 0.2,
                                                                 "start_percent": 0.15, "end_percent": 0.95,
                                                                 "verbose": False}}
            prompt["3"]["inputs"]["model"] = ["c", 0]
        t0 = time.perf_counter()
        image = env.value(prompt, "8")
        out[label] = (time.perf_counter() - t0, image)
    psnr = _psnr(out["EasyCache defaults"][1], out["uncached"][1])
    print(f"| SD1.5 {size}², {steps} steps | {out['uncached'][0]:.1f} | {out['EasyCache defaults'][0]:.1f} | "
          f"{skips.found[-1] if skips.found else 'none logged'} | {psnr:.1f} |")


def _unet_inputs(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 4, size // 8, size // 8, generator=gen), torch.tensor([500.0, 500.0])
    return x, t, torch.randn(2, 77, 768, generator=gen)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def convs_mode(size: int, runs: int) -> None:
    from diffusion.networks import conv3x3

    unet = load_checkpoint_modules(reference_sd15(), Precision())["unet"].diffusion_model
    x, t, ctx = _unet_inputs(size)
    times: dict[bool, list[float]] = {False: [], True: []}
    outs: dict[bool, torch.Tensor] = {}
    with torch.no_grad():
        for on in (False, True):  # warm-up of both paths
            conv3x3.ENABLED = on
            outs[on] = unet(x, t, ctx)
        for _ in range(runs):
            for on in (False, True):
                conv3x3.ENABLED = on
                t0 = time.perf_counter()
                unet(x, t, ctx)
                times[on].append(time.perf_counter() - t0)
    direct, wino = statistics.median(times[False]), statistics.median(times[True])
    print(f"| SD1.5 {size}², one CFG step (batch 2) | {direct:.2f} | {wino:.2f} | {direct / wino:.2f}× | "
          f"{_rel(outs[True], outs[False]):.1e} |")


def bf16_mode(size: int, runs: int, steps: int) -> None:
    from diffusion.networks import conv3x3
    from executor.memory import MemoryPolicy
    from tests.nodes.sd_env import txt2img

    nets = {"fp32": load_checkpoint_modules(reference_sd15(), Precision())["unet"].diffusion_model,
            "bf16": load_checkpoint_modules(reference_sd15(), Precision(unet=torch.bfloat16))["unet"].diffusion_model}
    x, t, ctx = _unet_inputs(size)
    cases = {"aten fp32": ("fp32", False), "Loom fp32": ("fp32", True), "bf16": ("bf16", True)}
    times: dict[str, list[float]] = {label: [] for label in cases}
    with torch.no_grad():
        for label in list(cases) * (runs + 1):  # the first round is the warm-up
            net, conv3x3.ENABLED = nets[cases[label][0]], cases[label][1]
            dtype = next(net.parameters()).dtype
            t0 = time.perf_counter()
            net(x.to(dtype), t, ctx.to(dtype))
            times[label].append(time.perf_counter() - t0)
    conv3x3.ENABLED = True
    del nets
    step = {label: statistics.median(ts[1:]) for label, ts in times.items()}
    images = {}
    for label, precision in (("fp32", None), ("bf16", "auto")):
        env = _reference_env(MemoryPolicy(precision=precision))
        prompt = txt2img(ckpt="ref-sd15.safetensors", steps=steps, size=size, seed=3)
        env.value(txt2img(ckpt="ref-sd15.safetensors", steps=1, size=size), "4")  # load once (cached)
        t0 = time.perf_counter()
        images[label] = (env.value(prompt, "8"), time.perf_counter() - t0)
        del env
    psnr = _psnr(images["bf16"][0], images["fp32"][0])
    aten = step["aten fp32"]
    print(f"| SD1.5 {size}², one CFG step (batch 2) | {aten:.2f} | {step['Loom fp32']:.2f} "
          f"({aten / step['Loom fp32']:.2f}×) | {step['bf16']:.2f} ({aten / step['bf16']:.2f}×) | "
          f"{images['fp32'][1]:.1f} | {images['bf16'][1]:.1f} | {psnr:.1f} |")


def compile_mode(size: int, runs: int) -> None:
    from diffusion.networks.compile import compile_model

    unet = load_checkpoint_modules(reference_sd15(), Precision())["unet"].diffusion_model
    x, t, ctx = _unet_inputs(size)
    eager = []
    with torch.no_grad():
        want = unet(x, t, ctx)
        for _ in range(runs):
            t0 = time.perf_counter()
            unet(x, t, ctx)
            eager.append(time.perf_counter() - t0)
        compile_model(unet, backend="inductor")
        t0 = time.perf_counter()
        got = unet(x, t, ctx)
        first = time.perf_counter() - t0
        after = []
        for _ in range(runs):
            t0 = time.perf_counter()
            unet(x, t, ctx)
            after.append(time.perf_counter() - t0)
        x2, _, _ = _unet_inputs(size, seed=1)
        t0 = time.perf_counter()
        unet(x2, t, ctx)
        reseed = time.perf_counter() - t0
    print(f"| SD1.5 {size}², one CFG step (batch 2) | {statistics.median(eager):.2f} | {first:.1f} | "
          f"{statistics.median(after):.2f} | {reseed:.2f} | {_rel(got, want):.1e} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("weights", "pair", "easycache", "convs", "compile", "bf16"))
    p.add_argument("--storage", choices=("fp32", "fp16", "fp8"), default="fp32")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if args.mode == "weights":
        weights_mode(args.storage, args.size, args.runs)
    elif args.mode == "pair":
        pair_mode(args.size, args.runs)
    elif args.mode == "convs":
        convs_mode(args.size, args.runs)
    elif args.mode == "bf16":
        bf16_mode(args.size, args.runs, args.steps)
    elif args.mode == "compile":
        compile_mode(args.size, args.runs)
    else:
        easycache_mode(args.size, args.steps)


if __name__ == "__main__":
    main()
