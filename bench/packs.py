"""`python bench/packs.py [--packs 30] [--nodes 25] [--runs 5]`: what loading N ComfyUI-style custom node packs adds
to Loom's start-up (`runtime.build_runtime`: compatibility modules, registry, pack import and registration).

Each generated pack imports what popular packs import (`comfy.samplers`, `comfy.sample`, `comfy.utils`,
`comfy.model_management`, `folder_paths`, `nodes`, `server.PromptServer`, `comfy_extras.nodes_custom_sampler`,
`comfy.samplers.CFGGuider` subclassed), reads `nodes.KSampler` and `KSampler.SAMPLERS`, adds a route and an
on-prompt handler, declares `--nodes` classic node classes and a WEB_DIRECTORY. Every run is a fresh Python process
timing `build_runtime` with no packs and with N packs; prints a markdown table of medians over --runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PACK_HEAD = '''import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import nodes
from aiohttp import web
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
from server import PromptServer

SAMPLERS = comfy.samplers.KSampler.SAMPLERS
BASE = nodes.KSampler


class Guider(comfy.samplers.CFGGuider):
    def predict_noise(self, x, timestep, model_options={{}}, seed=None):
        return super().predict_noise(x, timestep, model_options, seed)


@PromptServer.instance.routes.get("/{name}/ping")
async def ping(request):
    return web.json_response({{"pack": "{name}"}})


PromptServer.instance.add_on_prompt_handler(lambda data: data)
WEB_DIRECTORY = "./web"
NODE_CLASS_MAPPINGS = {{}}
'''

NODE = '''

class Node{index}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"image": ("IMAGE",), "amount": ("FLOAT", {{"default": 1.0, "min": 0.0, "max": 2.0}}),
                             "sampler": (SAMPLERS,), "mode": (["a", "b", "c"],)}},
                "hidden": {{"unique_id": "UNIQUE_ID"}}}}

    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("image", "count")
    FUNCTION = "run"
    CATEGORY = "bench/{name}"

    def run(self, image, amount, sampler, mode, unique_id=None):
        return (image * amount, image.shape[0])


NODE_CLASS_MAPPINGS["{name}_Node{index}"] = Node{index}
'''

CHILD = '''
import json, sys, time
sys.path.insert(0, {root!r})
from config import parse_args
started = time.perf_counter()
from runtime import build_runtime
runtime = build_runtime(parse_args({args!r}, {{}}))
elapsed = time.perf_counter() - started
packs = [p for p in runtime.custom_packs]
print(json.dumps({{"seconds": elapsed, "ok": sum(p.state == "ok" for p in packs), "packs": len(packs),
                  "import_seconds": sum(p.seconds for p in packs)}}))
'''


def write_packs(folder: Path, count: int, nodes: int) -> None:
    for i in range(count):
        name = f"bench_pack_{i:02d}"
        pack = folder / name
        (pack / "web").mkdir(parents=True)
        (pack / "web" / "ext.js").write_text("export {};\n")
        source = PACK_HEAD.format(name=name) + "".join(NODE.format(index=n, name=name) for n in range(nodes))
        (pack / "__init__.py").write_text(source)


def one_run(base: Path, packs_dir: Path | None) -> dict:
    args = ["--base-directory", str(base), "--cpu"]
    args += ["--custom-nodes-directory", str(packs_dir)] if packs_dir is not None else ["--disable-all-custom-nodes"]
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), args=args)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, packs_dir = Path(tmp) / "base", Path(tmp) / "packs"
        for sub in ("input", "output", "temp", "user", "custom_nodes"):
            (base / sub).mkdir(parents=True)
        write_packs(packs_dir, ns.packs, ns.nodes)
        bare, loaded = [], []
        for _ in range(ns.runs):  # alternate, so a load change on the machine hits both alike
            bare.append(one_run(base, None))
            loaded.append(one_run(base, packs_dir))
    assert all(r["ok"] == ns.packs for r in loaded), loaded[-1]
    median = statistics.median
    print(f"| packs | nodes | build_runtime without packs (s) | with packs (s) | added (s) | pack imports (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    without, with_packs = median(r["seconds"] for r in bare), median(r["seconds"] for r in loaded)
    print(f"| {ns.packs} | {ns.packs * ns.nodes} | {without:.2f} | {with_packs:.2f} | {with_packs - without:.2f} | "
          f"{median(r['import_seconds'] for r in loaded):.2f} |")


if __name__ == "__main__":
    main()
