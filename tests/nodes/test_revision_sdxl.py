"""SDXL Revision: CLIPVisionLoader of a ViT-bigG vision file (HF CLIPVisionModelWithProjection layout, made by
transformers: 48 layers, GELU, 16 heads as the real one, at width 64 with a projection to the tiny SDXL's pooled
width) → CLIPVisionEncode → unCLIPConditioning on a tiny SDXL base, through the real executor.

The tower is checked against transformers' forward; the ADM vector against ComfyUI's rule for SDXL
(`sdxl_pooled`): the pooled part is the image embedding noise-augmented on the cosine schedule at level
round(999·noise_augmentation) with a generator seeded by the sampling seed − 10, times the strength; the size
embeddings are unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.networks.clip_vision import clip_preprocess
from diffusion.families.sdxl import size_embeddings
from diffusion.adapters.unclip import cosine_alphas_cumprod
from tests.fixtures.tiny_sdxl import G_WIDTH, XL_ADM, tiny_sdxl_state_dict, write
from tests.nodes.sd_env import SDEnv, txt2img

transformers = pytest.importorskip("transformers")

XL = "tiny-xl.safetensors"


def tiny_bigg_vision(seed: int = 0) -> torch.nn.Module:
    config = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=48,
                                           num_attention_heads=16, image_size=224, patch_size=32,
                                           projection_dim=G_WIDTH, hidden_act="gelu")
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0)
                        + 0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_sdxl_state_dict(), tmp_path / "models" / "checkpoints" / XL)
    tower = tiny_bigg_vision()
    write({k: v.contiguous() for k, v in tower.state_dict().items() if not k.endswith("position_ids")},
          tmp_path / "models" / "clip_vision" / "clip_vision_g.safetensors")
    env.tower = tower  # type: ignore[attr-defined]
    from PIL import Image
    env.folders.input_directory.mkdir(parents=True, exist_ok=True)
    pixels = (torch.rand(96, 80, 3, generator=torch.Generator().manual_seed(1)) * 255).round().byte().numpy()
    Image.fromarray(pixels).save(env.folders.input_directory / "ref.png")
    return env


def revision(strength: float = 1.0, noise_augmentation: float = 0.0, seed: int = 7) -> dict:
    prompt = txt2img(XL, size=64, seed=seed)
    prompt["30"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_g.safetensors"}}
    prompt["31"] = {"class_type": "LoadImage", "inputs": {"image": "ref.png"}}
    prompt["32"] = {"class_type": "CLIPVisionEncode",
                    "inputs": {"clip_vision": ["30", 0], "image": ["31", 0], "crop": "center"}}
    prompt["33"] = {"class_type": "unCLIPConditioning", "inputs": {
        "conditioning": ["6", 0], "clip_vision_output": ["32", 0], "strength": strength,
        "noise_augmentation": noise_augmentation}}
    prompt["3"]["inputs"]["positive"] = ["33", 0]
    return prompt


def test_bigg_vision_tower_matches_transformers(env: SDEnv) -> None:
    prompt = revision()
    output = env.value(prompt, "32", 0)
    image = env.value(prompt, "31", 0)
    with torch.no_grad():
        expected = env.tower(pixel_values=clip_preprocess(image, 224, crop=True)).image_embeds  # type: ignore[attr-defined]
    assert output.image_embeds.shape == (1, G_WIDTH)
    assert (output.image_embeds.float() - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("strength,augmentation", [(1.0, 0.0), (0.6, 0.3)])
def test_revision_y_is_the_noise_augmented_image_embedding(env: SDEnv, strength: float, augmentation: float) -> None:
    prompt = revision(strength, augmentation)
    cond = env.value(prompt, "33", 0)
    embeds = env.value(prompt, "32", 0).image_embeds.float()
    model = env.value(prompt, "4", 0).model
    noise = torch.zeros(1, 4, 8, 8)
    y = model.extra_conds(cond[0][1], noise=noise, seed=7)["y"]
    assert y.shape == (1, XL_ADM)

    ac = cosine_alphas_cumprod()
    level = round(999 * augmentation)
    eps = torch.randn((1, G_WIDTH), generator=torch.Generator().manual_seed(7 - 10))
    expected = (ac[level].sqrt() * embeds + (1 - ac[level]).sqrt() * eps).float() * strength
    torch.testing.assert_close(y[:, :G_WIDTH], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[:, G_WIDTH:], size_embeddings([64, 64, 0, 0, 64, 64]))
    # The text's pooled output is replaced, not added to.
    assert not torch.allclose(y[:, :G_WIDTH], cond[0][1]["pooled_output"].float())


def test_revision_steers_sdxl_sampling(env: SDEnv) -> None:
    plain = env.value(txt2img(XL, size=64, seed=7), "3")["samples"]
    first = env.value(revision(), "3")["samples"]
    assert (first - plain).abs().max().item() > 1e-3
    # The augmentation is seeded by the sampling seed: another seed gives another y, so another image.
    other = env.value(revision(seed=8), "3")["samples"]
    assert not torch.equal(other, first)


def test_vision_tower_of_the_wrong_width_is_refused(env: SDEnv, tmp_path: Path) -> None:
    from tests.fixtures.tiny_clip_vision import tiny_clip_vision_state_dict

    write(tiny_clip_vision_state_dict(), env.base / "models" / "clip_vision" / "vit_l.safetensors")  # 48 wide
    prompt = revision()
    prompt["30"]["inputs"]["clip_name"] = "vit_l.safetensors"
    result = env.run(prompt)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "48" in message and str(G_WIDTH) in message and "unCLIPConditioning" in message
