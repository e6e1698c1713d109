"""VAEEncodeForInpaint and InpaintModelConditioning through the real executor, and a 9-channel inpainting
checkpoint sampled through KSampler with the conditioning's masked-image latent."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.nodes.ops_env import _feed_node
from tests.nodes.sd_env import SDEnv, txt2img

INPAINT = "tiny-inpaint.safetensors"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("inpaint"), family="sd15_inpaint", name=INPAINT)
    env.fed = {}  # type: ignore[attr-defined]
    env.registry.register(_feed_node(env.fed))  # type: ignore[attr-defined]
    return env


def _picture(h: int = 36, w: int = 44) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    pixels = torch.rand(1, h, w, 3, generator=gen)
    mask = torch.zeros(1, h, w)
    mask[:, 10:20, 12:30] = 1.0
    return pixels, mask


def _fed(env: SDEnv, **values: Any) -> dict[str, Any]:
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": INPAINT}}}
    for name, value in values.items():
        key = f"{name}{len(env.fed)}"  # type: ignore[attr-defined]  # a new key: Feed outputs are cached by key
        env.fed[key] = value  # type: ignore[attr-defined]
        prompt[name] = {"class_type": "Feed", "inputs": {"key": key}}
    return prompt


def _blank_crop(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference: crop 36×44 to 32×40 around the centre, masked pixels to 0.5."""
    crop, m = pixels[:, 2:34, 2:42].clone(), mask[:, 2:34, 2:42]
    crop[m > 0.5] = 0.5
    return crop


def test_vae_encode_for_inpaint(env: SDEnv) -> None:
    pixels, mask = _picture()
    prompt = _fed(env, pixels=pixels, mask=mask)
    prompt["e"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["pixels", 0], "vae": ["4", 2],
                                                                   "mask": ["mask", 0], "grow_mask_by": 6}}
    latent = env.value(prompt, "e")
    vae = env.value(prompt, "4", 2)
    assert latent["samples"].shape == (1, 4, 4, 5)
    torch.testing.assert_close(latent["samples"], vae.encode(_blank_crop(pixels, mask)), rtol=1e-4, atol=1e-4)
    # grown by a 6×6 box placed 3 pixels up/left of each pixel (ComfyUI's padding), then cropped to the image
    cropped = mask[:, None, 2:34, 2:42]
    grown = F.max_pool2d(F.pad(cropped, (3, 3, 3, 3)), kernel_size=6, stride=1)[:, :, :32, :40]
    assert torch.equal(latent["noise_mask"], grown)
    prompt["e"]["inputs"]["grow_mask_by"] = 0
    assert torch.equal(env.value(prompt, "e")["noise_mask"], cropped)


def test_inpaint_model_conditioning(env: SDEnv) -> None:
    pixels, mask = _picture()
    prompt = _fed(env, pixels=pixels, mask=mask)
    prompt["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}}
    prompt["7"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}
    prompt["c"] = {"class_type": "InpaintModelConditioning",
                   "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["pixels", 0],
                              "mask": ["mask", 0], "noise_mask": True}}
    positive, latent = env.value(prompt, "c", 0), env.value(prompt, "c", 2)
    negative = env.value(prompt, "c", 1)
    vae = env.value(prompt, "4", 2)
    for cond in (positive, negative):
        extra = cond[0][1]
        torch.testing.assert_close(extra["concat_latent_image"], vae.encode(_blank_crop(pixels, mask)),
                                   rtol=1e-4, atol=1e-4)
        assert torch.equal(extra["concat_mask"], mask[:, None, 2:34, 2:42])
    torch.testing.assert_close(latent["samples"], vae.encode(pixels), rtol=1e-4, atol=1e-4)
    assert torch.equal(latent["noise_mask"], mask[:, None, 2:34, 2:42])
    prompt["c"]["inputs"]["noise_mask"] = False
    assert "noise_mask" not in env.value(prompt, "c", 2)
    info = env.registry.object_info(env.folders)["InpaintModelConditioning"]
    assert info["output_name"] == ["positive", "negative", "latent"]
    assert info["category"] == "conditioning/inpaint"


def _inpaint_graph(env: SDEnv, rgb: tuple[float, float, float]) -> dict[str, Any]:
    """txt2img on the inpainting checkpoint whose conditioning carries a flat image with its left half masked; the
    starting latent is the empty one, so only the concatenated image differs between calls."""
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0
    pixels = torch.tensor(rgb).view(1, 1, 1, 3).expand(1, 32, 32, 3).contiguous()
    prompt = {**txt2img(ckpt=INPAINT, steps=2, size=32), **_fed(env, pixels=pixels, mask=mask)}
    prompt["c"] = {"class_type": "InpaintModelConditioning",
                   "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["pixels", 0],
                              "mask": ["mask", 0], "noise_mask": False}}
    prompt["3"]["inputs"].update(positive=["c", 0], negative=["c", 1])
    return prompt


def test_inpainting_checkpoint_samples_with_the_concat_image(env: SDEnv) -> None:
    grey = env.value(_inpaint_graph(env, (0.5, 0.5, 0.5)), "8")
    red = env.value(_inpaint_graph(env, (1.0, 0.0, 0.0)), "8")
    assert grey.shape == (1, 32, 32, 3) and torch.isfinite(grey).all()
    assert (grey - red).abs().max() > 1e-3  # the 9-channel UNet sees the masked image's latent


def test_inpainting_checkpoint_with_vae_encode_for_inpaint(env: SDEnv) -> None:
    prompt = txt2img(ckpt=INPAINT, steps=2, size=32)
    prompt["img"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                            "color": 0x3366CC}}
    prompt["m"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}
    prompt["e"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["img", 0], "vae": ["4", 2],
                                                                   "mask": ["m", 0], "grow_mask_by": 6}}
    prompt["3"]["inputs"]["latent_image"] = ["e", 0]
    image = env.value(prompt, "8")
    assert image.shape == (1, 32, 32, 3) and torch.isfinite(image).all()
