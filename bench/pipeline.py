"""The whole pipeline on this CPU, against ComfyUI's figures on the same machine (issue 9's speed targets).

    python bench/pipeline.py [--phases startup load steps server] [--repeat 3] [--steps 3] [--json out.json]

Phases, each in a fresh child process so memory and timings do not mix:

- `startup`: `python main.py` (no model loaded) until its first HTTP answer (`GET /system_stats`), wall seconds.
- `load`: the SD1.5 reference checkpoint (`.cache/reference/loom-ref-sd15.safetensors`, fp16 file, random weights,
  real shapes) loaded as CheckpointLoaderSimple does (UNet, VAE, CLIP text tower) in fp32 and in bf16, median of
  `--repeat` runs, wall and CPU (os.times user+sys) seconds.
- `steps`: seconds per euler step at 256×256, cfg 7 (cond and uncond in one UNet call), in fp32 and bf16, with the
  UNet's weights contiguous and channels-last; the median of the steps after the first.
- `server`: the real server (`python main.py --precision P` subprocess) runs shared/reference's 4-step 256×256
  txt2img prompt twice (the second with another seed, the model already loaded); time from POST /prompt to the
  websocket's `executing` with `node: null`, and the server's peak RSS (VmHWM) after the whole run.

The machine may be shared: every figure carries the 1-minute load average when it was taken, and CPU seconds
beside wall seconds where the process is ours.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CKPT = REPO / ".cache" / "reference" / "loom-ref-sd15.safetensors"
WORKFLOW = REPO / ".." / "shared" / "reference" / "p00_txt2img_sd15.json"


def load_avg() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    t = os.times()
    return t.user + t.system


def peak_rss_gb(pid: int | str = "self") -> float:
    """VmHWM (peak resident set) of a process, in GB (10⁹ bytes, as ComfyUI's figure)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def ensure_checkpoint() -> None:
    from bench.sampling import ensure_checkpoint as build

    build(CKPT)


# --- child phases (run as `python bench/pipeline.py --child PHASE ARGS`) ----------------------------------------
def child_load(dtype: str) -> dict[str, Any]:
    """Load the whole checkpoint as the loader node does: UNet and VAE in `dtype`, text tower in fp32."""
    import torch

    from diffusion.files.loading import load_checkpoint

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    load, t0, c0 = load_avg(), time.perf_counter(), cpu_seconds()
    ckpt = load_checkpoint(CKPT, dtype=dt, text_encoder_dtype=torch.float32)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    unet_dtypes = sorted({str(p.dtype) for p in ckpt.unet.parameters()})
    return {"wall_s": wall, "cpu_s": cpu, "load": load, "peak_rss_gb": peak_rss_gb(), "unet_dtypes": unet_dtypes}


def child_steps(dtype: str, channels_last: bool, steps: int) -> dict[str, Any]:
    """Median seconds per euler step of the full-size UNet at 256×256, cfg 7."""
    import torch

    from bench.sampling import load_model, time_steps

    model = load_model(CKPT, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    if channels_last:
        model.diffusion_model.to(memory_format=torch.channels_last)
    load, c0 = load_avg(), cpu_seconds()
    row = time_steps(model, 256, steps)
    steady = row["per_step_s"][1:] or row["per_step_s"]
    cpu_per_step = (cpu_seconds() - c0) / len(row["per_step_s"])
    return {"median_s": statistics.median(steady), "per_step_s": row["per_step_s"], "cpu_s_per_step": cpu_per_step,
            "load": load, "threads": torch.get_num_threads()}


def run_child(*args: str) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and return its JSON result."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True,
                         cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the server phases ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path, port: int, extra: list[str]) -> tuple[subprocess.Popen, float]:
    """Start `python main.py` and return it with the seconds until its first HTTP answer."""
    import urllib.request

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "main.py", "--port", str(port), "--base-directory", str(base),
                             "--disable-all-custom-nodes", *extra], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=1) as r:
                r.read()
            return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"main.py exited with {proc.returncode} before answering") from None
            time.sleep(0.02)


def make_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="loom-bench-pipeline-"))
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / CKPT.name).symlink_to(CKPT)
    return base


async def post_and_wait(port: int, prompt: dict, on_executing: Any = None) -> float:
    """Seconds from POST /prompt until the websocket says `executing` with node null for that prompt;
    `on_executing(node, seconds)` is called for each `executing` message of it (the last with node None)."""
    import aiohttp

    client_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/ws?clientId={client_id}", heartbeat=None,
                                      receive_timeout=None) as ws:
            t0 = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/prompt",
                                    json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"POST /prompt failed: {body}")
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["type"] == "execution_error":
                    raise RuntimeError(f"the prompt failed: {data['data'].get('exception_message')}")
                if data["type"] == "executing" and data["data"].get("prompt_id") == body["prompt_id"]:
                    if on_executing is not None:
                        on_executing(data["data"].get("node"), time.perf_counter() - t0)
                    if data["data"].get("node") is None:
                        return time.perf_counter() - t0
    raise RuntimeError("the websocket closed before the prompt finished")


def phase_startup(repeat: int) -> dict[str, Any]:
    walls, cpus, loads = [], [], []
    for _ in range(repeat):
        base = make_base()
        loads.append(load_avg())
        proc, wall = start_server(base, free_port(), [])
        walls.append(wall)
        cpus.append(_proc_cpu(proc.pid))
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    return {"median_s": statistics.median(walls), "median_cpu_s": statistics.median(cpus), "runs_s": walls,
            "runs_cpu_s": cpus, "load": max(loads)}


def phase_server(precision: str) -> dict[str, Any]:
    """Two 4-step prompts through the real server; the second one's time, and the server's peak RSS."""
    prompt = json.loads(WORKFLOW.read_text())
    base, port = make_base(), free_port()
    proc, _ = start_server(base, port, ["--precision", precision, "--cpu"])
    try:
        c0, load0 = _proc_cpu(proc.pid), load_avg()
        first = asyncio.run(post_and_wait(port, prompt))
        prompt["5"]["inputs"]["seed"] = 43
        c1, load1 = _proc_cpu(proc.pid), load_avg()
        second = asyncio.run(post_and_wait(port, prompt))
        c2 = _proc_cpu(proc.pid)
        rss = peak_rss_gb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    return {"first_s": first, "first_cpu_s": c1 - c0, "first_load": load0, "loaded_s": second,
            "loaded_cpu_s": c2 - c1, "loaded_load": load1, "peak_rss_gb": rss}


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="+", default=["startup", "load", "steps", "server"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--channels-last", choices=["both", "off", "on"], default="both")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phase, *rest = args.child
        result = child_load(rest[0]) if phase == "load" else child_steps(rest[0], rest[1] == "1", int(rest[2]))
        print(json.dumps(result))
        return
    ensure_checkpoint()
    results: dict[str, Any] = {}
    if "startup" in args.phases:
        results["startup"] = phase_startup(args.repeat)
        print("startup", results["startup"], flush=True)
    for dtype in args.dtypes:
        if "load" in args.phases:
            runs = [run_child("load", dtype) for _ in range(args.repeat)]
            results[f"load_{dtype}"] = {"median_wall_s": statistics.median(r["wall_s"] for r in runs),
                                        "median_cpu_s": statistics.median(r["cpu_s"] for r in runs), "runs": runs}
            print(f"load {dtype}", results[f"load_{dtype}"], flush=True)
        if "steps" in args.phases:
            for cl in {"both": ["0", "1"], "off": ["0"], "on": ["1"]}[args.channels_last]:
                key = f"steps_{dtype}_{'channels_last' if cl == '1' else 'contiguous'}"
                results[key] = run_child("steps", dtype, cl, str(args.steps))
                print(key, results[key], flush=True)
        if "server" in args.phases:
            results[f"server_{dtype}"] = phase_server(dtype)
            print(f"server {dtype}", results[f"server_{dtype}"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
