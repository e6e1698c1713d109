"""The invisible-watermark and safety-checker nodes through the real executor: the watermark round-trips through
the real `imwatermark` decoder; the safety checker runs diffusers' StableDiffusionSafetyChecker from a tiny
random-weight folder in models/safety_checker and gives a clear message when the weights are absent."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from executor.memory import MemoryPolicy, ModelManager
from executor.run import Executor
from tests.nodes.ops_env import OpsEnv


@pytest.fixture()
def env(tmp_path: Path) -> OpsEnv:
    env = OpsEnv(tmp_path)
    env.executor = Executor(env.registry, folders=env.folders, models=ModelManager(MemoryPolicy()))
    return env


def photo(seed: int = 0, size: int = 256) -> torch.Tensor:
    """A smooth test picture (watermarks survive on natural-looking content, not on white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, 8, 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return smooth.clamp(0.05, 0.95).movedim(1, -1)


def test_watermark_round_trip_with_default_bytes(env: OpsEnv) -> None:
    info = env.info("InvisibleWatermarkEncode")["input"]["required"]
    assert info["watermark"][1]["default"] == "StableDiffusionV1" and info["method"][0][0] == "dwtDct"
    # dwtDct is a fragile mark (the SD scripts only write it): it reads back reliably from detailed 512-pixel
    # content, which seeded full-range noise is.
    img = torch.rand((1, 512, 512, 3), generator=torch.Generator().manual_seed(0))
    marked = env.value("InvisibleWatermarkEncode", {"images": img, "watermark": "StableDiffusionV1",
                                                    "method": "dwtDct"})
    assert marked.shape == img.shape
    assert 0 < float((marked - img).abs().mean()) < 0.1
    decoded = env.value("InvisibleWatermarkDecode", {"images": marked, "length": 17, "method": "dwtDct"})
    assert decoded == "StableDiffusionV1"
    assert env.value("InvisibleWatermarkDecode", {"images": img, "length": 17, "method": "dwtDct"}) \
        != "StableDiffusionV1"


def test_watermark_rejects_small_images(env: OpsEnv) -> None:
    result = env.run(env.prompt("InvisibleWatermarkEncode", {"images": photo(size=64)}) |
                     {"grab": {"class_type": "Grab", "inputs": {"value": ["n", 0]}}})
    assert result.status == "error" and "256" in result.error["exception_message"]


def test_safety_checker_without_weights_says_where_to_put_them(env: OpsEnv) -> None:
    prompt = env.prompt("SafetyChecker", {"images": photo()})
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", 0]}}
    result = env.run(prompt)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "safety checker" in message and "safety_checker" in message and "config.json" in message


def write_tiny_checker(folder: Path, threshold: float) -> None:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    config = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2},
        projection_dim=16)
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    checker.save_pretrained(str(folder))


@pytest.mark.parametrize("threshold,flagged", [(2.0, False), (-2.0, True)])
def test_safety_checker_flags_by_concept_threshold(env: OpsEnv, threshold: float, flagged: bool) -> None:
    write_tiny_checker(env.base / "models" / "safety_checker" / "sd", threshold)
    img = torch.cat([photo(0), photo(1)])
    out = env.value("SafetyChecker", {"images": img})
    nsfw = env.value("SafetyChecker", {"images": img}, index=1)
    assert nsfw is flagged
    if flagged:
        assert float(out.abs().max()) == 0.0  # cosine similarity always exceeds −2: every image blacked out
    else:
        torch.testing.assert_close(out, img)  # similarity never exceeds 2: images untouched
