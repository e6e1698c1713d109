"""RAM soak through the whole engine (slow): 50 prompts through the real runtime (registry, executor, output cache,
model manager) alternating two tiny checkpoints and a LoRA at changing strengths and seeds. Resident memory must
stop growing after the first cycle: a leaked model copy, patch backup, cached output or node instance would add
megabytes per prompt."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import config
import runtime
from tests.executor.test_memory_soak import MIB, rss
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.fixtures.tiny_loras import write_tiny_lora
from tests.nodes.sd_env import txt2img

pytestmark = pytest.mark.slow

PROMPTS = 50
WARM_UP = 10  # prompts before the baseline reading: both checkpoints, the LoRA and the caches have been through once
TOLERANCE = 48 * MIB


def _prompt(index: int) -> dict[str, Any]:
    """Checkpoint a/b in turn; every prompt through a LoRA whose strength and seed change, so sampling reruns."""
    ckpt = "a.safetensors" if index % 2 == 0 else "b.safetensors"
    prompt = txt2img(ckpt=ckpt, seed=index, steps=1, size=32)
    prompt["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                           "lora_name": "tiny.safetensors",
                                                           "strength_model": 0.5 + (index % 3) * 0.25,
                                                           "strength_clip": 1.0}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    prompt["6"]["inputs"]["clip"] = ["10", 1]
    prompt["9"]["inputs"]["filename_prefix"] = f"soak/{index % 2}"
    return prompt


def test_resident_memory_stops_growing_over_50_prompts(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_tiny_checkpoint(models / "checkpoints" / "a.safetensors", family="sd15", seed=1)
    write_tiny_checkpoint(models / "checkpoints" / "b.safetensors", family="sd15", seed=2)
    write_tiny_lora(models / "loras" / "tiny.safetensors", layout="kohya")
    rt = runtime.build_runtime(config.parse_args(["--base-directory", str(tmp_path), "--cpu"], {}))
    readings = []
    for index in range(PROMPTS):
        result = rt.executor.execute(_prompt(index), f"soak-{index}")
        assert result.status == "success", result.error
        if index + 1 >= WARM_UP:
            readings.append(rss())
    baseline, peak, final = readings[0], max(readings), readings[-1]
    assert final - baseline < TOLERANCE, (
        f"resident memory grew by {(final - baseline) / MIB:.1f} MiB over {PROMPTS - WARM_UP} prompts "
        f"(baseline {baseline / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB)")
    assert len(list((tmp_path / "output" / "soak").rglob("*.png"))) == PROMPTS
