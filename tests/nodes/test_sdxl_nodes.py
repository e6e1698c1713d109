"""SDXL through the real executor on tiny files: DualCLIPLoader (type sdxl), SDXL checkpoints, the SDXL text and
ADM conditioning nodes, with the model manager and folders of a real Loom instance."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.clip_multi import MultiTextEncoder
from diffusion.text_encoders import CLIP
from tests.fixtures.tiny_sdxl import G_WIDTH, L_WIDTH, tiny_clip_g_hf, tiny_clip_l_hf, write
from tests.nodes.sd_env import SDEnv

PROMPT = "a photograph of an astronaut riding a horse"


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_clip_l_hf(), tmp_path / "models" / "text_encoders" / "clip_l.safetensors")
    write(tiny_clip_g_hf(), tmp_path / "models" / "clip" / "clip_g.safetensors")
    return env


def _dual(first: str = "clip_l.safetensors", second: str = "clip_g.safetensors", kind: str = "sdxl") -> dict:
    return {
        "1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": first, "clip_name2": second, "type": kind}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 0]}},
    }


def _with_output(prompt: dict) -> dict:
    return {**prompt, "out": {"class_type": "Grab", "inputs": {"value": ["2", 0]}}}


def test_dual_clip_loader_sdxl(env: SDEnv) -> None:
    info = env.registry.object_info()["DualCLIPLoader"]
    assert info["input"]["required"]["type"][0][:2] == ["sdxl", "sd3"]
    assert info["category"] == "advanced/loaders"
    clip = env.value(_dual(), "1", 0)
    assert isinstance(clip, CLIP) and isinstance(clip.model, MultiTextEncoder) and clip.family == "sdxl"
    cond = env.value(_dual(), "2", 0)
    assert cond[0][0].shape == (1, 77, L_WIDTH + G_WIDTH) and cond[0][1]["pooled_output"].shape == (1, G_WIDTH)
    swapped = env.value(_dual("clip_g.safetensors", "clip_l.safetensors"), "2", 0)
    assert torch.equal(swapped[0][0], cond[0][0])


def test_dual_clip_loader_refuses_bad_input(env: SDEnv) -> None:
    result = env.run(_with_output(_dual("clip_l.safetensors", "clip_l.safetensors")))
    assert result.status == "error" and "needs one CLIP-L and one CLIP-G" in result.error["exception_message"]
    assert result.error["node_type"] == "DualCLIPLoader"
    result = env.run(_with_output(_dual(kind="flux")))
    assert result.status == "error" and "type 'flux' is not supported" in result.error["exception_message"]
    env.ok(_with_output(_dual()))  # nothing else was affected
