"""`python bench/packs.py [--packs 30] [--nodes 25] [--runs 5] [--processes 2]`: what loading N ComfyUI-style custom
node packs adds to Loom's start-up (`runtime.build_runtime`: compatibility modules, registry, pack import and
registration).

Each generated pack imports what popular packs import (`comfy.samplers`, `comfy.sample`, `comfy.utils`,
`comfy.model_management`, `folder_paths`, `nodes`, `server.PromptServer`, `comfy_extras.nodes_custom_sampler`,
`comfy.samplers.CFGGuider` subclassed), reads `nodes.KSampler` and `KSampler.SAMPLERS`, adds a route and an
on-prompt handler, declares `--nodes` classic node classes and a WEB_DIRECTORY. Each of --processes fresh Python
processes first builds a runtime without packs (Loom's own imports: torch and the node library, the same for every
start-up), then times `build_runtime` without packs and with the N packs, --runs times in turn; "added" is the median
of the paired differences. Prints a markdown table.
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
from runtime import build_runtime

def timed(args):
    started = time.perf_counter()
    runtime = build_runtime(parse_args(args, {{}}))
    return time.perf_counter() - started, runtime

timed({bare!r})  # Loom's own imports (torch, the node library), paid by every start-up alike
rows = []
for _ in range({reps}):
    without, _rt = timed({bare!r})
    with_packs, runtime = timed({loaded!r})
    packs = runtime.custom_packs
    rows.append({{"without": without, "with": with_packs, "ok": sum(p.state == "ok" for p in packs),
                 "import_seconds": sum(p.seconds for p in packs)}})
print(json.dumps(rows))
'''


def write_packs(folder: Path, count: int, nodes: int) -> None:
    for i in range(count):
        name = f"bench_pack_{i:02d}"
        pack = folder / name
        (pack / "web").mkdir(parents=True)
        (pack / "web" / "ext.js").write_text("export {};\n")
        source = PACK_HEAD.format(name=name) + "".join(NODE.format(index=n, name=name) for n in range(nodes))
        (pack / "__init__.py").write_text(source)


def runs_in_a_process(base: Path, packs_dir: Path, reps: int) -> list[dict]:
    """`reps` paired timings of build_runtime without and with the packs, in one fresh process."""
    bare = ["--base-directory", str(base), "--cpu", "--disable-all-custom-nodes"]
    loaded = ["--base-directory", str(base), "--cpu", "--custom-nodes-directory", str(packs_dir)]
    source = CHILD.format(root=str(ROOT), bare=bare, loaded=loaded, reps=reps)
    out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5, help="paired runs per process")
    parser.add_argument("--processes", type=int, default=2)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, packs_dir = Path(tmp) / "base", Path(tmp) / "packs"
        for sub in ("input", "output", "temp", "user", "custom_nodes"):
            (base / sub).mkdir(parents=True)
        write_packs(packs_dir, ns.packs, ns.nodes)
        rows = [row for _ in range(ns.processes) for row in runs_in_a_process(base, packs_dir, ns.runs)]
    assert all(r["ok"] == ns.packs for r in rows), rows[-1]
    median = statistics.median
    print("| packs | nodes | build_runtime without packs (s) | with packs (s) | added (s) | pack imports (s) | runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {ns.packs} | {ns.packs * ns.nodes} | {median(r['without'] for r in rows):.3f} | "
          f"{median(r['with'] for r in rows):.3f} | {median(r['with'] - r['without'] for r in rows):.3f} | "
          f"{median(r['import_seconds'] for r in rows):.3f} | {len(rows)} |")


if __name__ == "__main__":
    main()
