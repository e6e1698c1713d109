"""EasyCache on the tiny random-weight SD1.5 checkpoint at 20 steps: model calls skipped, total time and PSNR of
the decoded image against the uncached one (median of several runs). Usage: .venv/bin/python bench/easycache.py"""
from __future__ import annotations

import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.nodes.sd_env import SDEnv, txt2img  # noqa: E402  (builds the tiny checkpoint)


class _Counts(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"skipped \d+ of \d+", record.getMessage())
        if m:
            self.found.append(m[0])


def main(runs: int = 3, steps: int = 20) -> None:
    env = SDEnv(Path(tempfile.mkdtemp()))
    handler = _Counts()
    logging.getLogger("loom.step_cache").addHandler(handler)
    logging.getLogger("loom.step_cache").setLevel(logging.INFO)
    results = {}
    for label, cache in (("uncached", None), ("EasyCache defaults", {})):
        times, image = [], None
        for seed in range(1, runs + 1):
            prompt = txt2img(steps=steps, size=64, seed=seed)
            if cache is not None:
                prompt["c"] = {"class_type": "EasyCache", "inputs": {"model": ["4", 0], "reuse_threshold": 0.2,
                                                                     "start_percent": 0.15, "end_percent": 0.95,
                                                                     "verbose": False}}
                prompt["3"]["inputs"]["model"] = ["c", 0]
            t0 = time.perf_counter()
            out = env.value(prompt, "8")
            times.append(time.perf_counter() - t0)
            image = out if seed == 1 else image
        results[label] = (statistics.median(times), image)
    mse = float(((results["uncached"][1] - results["EasyCache defaults"][1]) ** 2).mean())
    psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
    print(f"uncached {results['uncached'][0]:.3f} s, EasyCache {results['EasyCache defaults'][0]:.3f} s, "
          f"PSNR {psnr:.1f} dB, {handler.found[:1]}")


if __name__ == "__main__":
    main()
