"""CLIPVisionLoader/CLIPVisionEncode, StyleModelLoader/StyleModelApply and unCLIPConditioning through the real
executor; the open_clip tower built from an HF-layout file is checked against transformers' own
CLIPVisionModelWithProjection on the same weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.networks.clip_vision import CLIP_MEAN, CLIP_STD, ClipVisionOutput, clip_preprocess
from diffusion.adapters.style_model import StyleAdapter
from executor.memory import MemoryPolicy, ModelManager
from executor.run import Executor
from tests.fixtures.tiny_checkpoints import _random_like
from tests.fixtures.tiny_clip_vision import tiny_clip_vision_model, tiny_clip_vision_state_dict
from tests.nodes.ops_env import OpsEnv


@pytest.fixture()
def env(tmp_path: Path) -> OpsEnv:
    env = OpsEnv(tmp_path)
    env.executor = Executor(env.registry, folders=env.folders, models=ModelManager(MemoryPolicy()))
    save_file(tiny_clip_vision_state_dict(), str(_mkdir(tmp_path / "models" / "clip_vision") / "tiny_vit.safetensors"))
    with torch.device("meta"):
        adapter = StyleAdapter(width=64, context_dim=128, heads=8, layers=2, num_token=4)
    save_file(_random_like(adapter, 5, torch.float32), str(_mkdir(tmp_path / "models" / "style_models") / "style.safetensors"))
    return env


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def image(h: int = 200, w: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.rand((2, h, w, 3), generator=torch.Generator().manual_seed(seed))


def encode_prompt(env: OpsEnv, img: torch.Tensor, crop: str = "center") -> dict:
    prompt = env.prompt("CLIPVisionEncode", {"image": img, "crop": crop})
    prompt["cv"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny_vit.safetensors"}}
    prompt["n"]["inputs"]["clip_vision"] = ["cv", 0]
    return prompt


def grab(env: OpsEnv, prompt: dict, node: str = "n", index: int = 0) -> object:
    prompt = dict(prompt)
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": [node, index]}}
    env.ok(prompt)
    return env.grabbed[-1]


def test_declarations_match_comfyui(env: OpsEnv) -> None:
    enc = env.info("CLIPVisionEncode")
    assert enc["input"]["required"]["crop"][0] == ["center", "none"]
    assert enc["output"] == ["CLIP_VISION_OUTPUT"] and enc["category"] == "conditioning"
    style = env.info("StyleModelApply")["input"]["required"]
    assert style["strength"][1] == {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}
    assert style["strength_type"][0] == ["multiply", "attn_bias"]
    unclip = env.info("unCLIPConditioning")["input"]["required"]
    assert unclip["strength"][1] == {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}
    assert unclip["noise_augmentation"][1] == {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}
    assert env.info("CLIPVisionLoader")["input"]["required"]["clip_name"][0] == ["tiny_vit.safetensors"]


def test_preprocess_resizes_crops_and_normalises() -> None:
    img = torch.full((1, 100, 300, 3), 0.5)
    px = clip_preprocess(img)
    assert px.shape == (1, 3, 224, 224)
    expected = (torch.tensor(round(0.5 * 255) / 255) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(px[0, :, 100, 100], expected.float(), atol=1e-5, rtol=0)
    ramp = torch.linspace(0, 1, 448).view(1, 1, 448, 1).expand(1, 224, 448, 3)
    centre = clip_preprocess(ramp, crop=True)[0, 0, 0]
    squashed = clip_preprocess(ramp, crop=False)[0, 0, 0]
    assert centre[0] > squashed[0] + 0.8  # the centre crop drops the dark left quarter (0.25 vs 0 grey)


@pytest.mark.parametrize("crop", ["center", "none"])
def test_encode_matches_transformers(env: OpsEnv, crop: str) -> None:
    img = image()
    out = grab(env, encode_prompt(env, img, crop))
    assert isinstance(out, ClipVisionOutput)
    reference = tiny_clip_vision_model()
    with torch.no_grad():
        ref = reference(pixel_values=clip_preprocess(img, crop=crop == "center"), output_hidden_states=True)
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.penultimate_hidden_states, ref.hidden_states[-2], atol=1e-4, rtol=1e-4)
    assert out["image_embeds"] is out.image_embeds


def test_style_model_appends_tokens_scaled_by_strength(env: OpsEnv) -> None:
    cond = [[torch.randn(1, 77, 128), {"pooled_output": torch.randn(1, 128)}]]
    img = image()
    prompt = encode_prompt(env, img)
    env.fed["cond"] = cond
    prompt["c"] = {"class_type": "Feed", "inputs": {"key": "cond"}}
    prompt["sm"] = {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "style.safetensors"}}
    prompt["apply"] = {"class_type": "StyleModelApply", "inputs": {
        "conditioning": ["c", 0], "style_model": ["sm", 0], "clip_vision_output": ["n", 0], "strength": 1.0,
        "strength_type": "multiply"}}
    one = grab(env, prompt, "apply")
    prompt["apply"]["inputs"]["strength"] = 0.5
    half = grab(env, prompt, "apply")
    # two images × four style tokens appended after the 77 text tokens
    assert one[0][0].shape == (1, 77 + 8, 128)
    torch.testing.assert_close(one[0][0][:, :77], cond[0][0])
    torch.testing.assert_close(half[0][0][:, 77:], 0.5 * one[0][0][:, 77:])
    assert one[0][1]["pooled_output"] is cond[0][1]["pooled_output"]
    prompt["apply"]["inputs"]["strength_type"] = "attn_bias"
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["apply", 0]}}
    result = env.run(prompt)
    assert result.status == "error" and "attn_bias" in result.error["exception_message"]


def test_unclip_conditioning_records_the_embedding(env: OpsEnv) -> None:
    cond = [[torch.randn(1, 77, 128), {}]]
    prompt = encode_prompt(env, image())
    env.fed["cond2"] = cond
    prompt["c"] = {"class_type": "Feed", "inputs": {"key": "cond2"}}
    prompt["u"] = {"class_type": "unCLIPConditioning", "inputs": {
        "conditioning": ["c", 0], "clip_vision_output": ["n", 0], "strength": 0.8, "noise_augmentation": 0.1}}
    prompt["u2"] = {"class_type": "unCLIPConditioning", "inputs": {
        "conditioning": ["u", 0], "clip_vision_output": ["n", 0], "strength": 0.3, "noise_augmentation": 0.0}}
    out = grab(env, prompt, "u2")
    entries = out[0][1]["unclip_conditioning"]
    assert [(e["strength"], e["noise_augmentation"]) for e in entries] == [(0.8, 0.1), (0.3, 0.0)]
    assert entries[0]["clip_vision_output"].image_embeds.shape == (2, 48)
    assert "unclip_conditioning" not in cond[0][1]


def test_unclip_checkpoint_samples_with_image_conditioning(tmp_path: Path) -> None:
    from tests.fixtures.tiny_clip_vision import tiny_unclip_checkpoint_state_dict
    from tests.nodes.sd_env import SDEnv, txt2img

    env = SDEnv(tmp_path, family="sd21")
    save_file(tiny_unclip_checkpoint_state_dict(), str(tmp_path / "models" / "checkpoints" / "unclip.safetensors"))
    env.fed = {"img": image(64, 80)}
    from tests.nodes.ops_env import _feed_node
    env.registry.register(_feed_node(env.fed))
    prompt = txt2img(ckpt="unclip.safetensors")
    prompt["4"]["class_type"] = "unCLIPCheckpointLoader"
    prompt["img"] = {"class_type": "Feed", "inputs": {"key": "img"}}
    prompt["enc"] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 3], "image": ["img", 0],
                                                                  "crop": "center"}}
    prompt["un"] = {"class_type": "unCLIPConditioning", "inputs": {
        "conditioning": ["6", 0], "clip_vision_output": ["enc", 0], "strength": 1.0, "noise_augmentation": 0.0}}
    prompt["3"]["inputs"]["positive"] = ["un", 0]
    with_image = env.value(prompt, "3")["samples"]
    encoded = env.value(prompt, "enc")
    reference = tiny_clip_vision_model()
    with torch.no_grad():
        ref = reference(pixel_values=clip_preprocess(env.fed["img"]))
    # The checkpoint stores the tower in fp16; the HF reference holds the fp32 weights.
    torch.testing.assert_close(encoded.image_embeds, ref.image_embeds, atol=3e-2, rtol=3e-2)
    prompt["un"]["inputs"]["strength"] = 0.0
    without = env.value(prompt, "3")["samples"]
    assert torch.isfinite(with_image).all() and (with_image - without).abs().max() > 1e-3


def test_unclip_adm_noise_levels() -> None:
    from diffusion.adapters.unclip import NoiseAugmentor, unclip_adm
    from diffusion.networks.unet_blocks import timestep_embedding

    aug = NoiseAugmentor(4)
    embeds = torch.randn(1, 4)
    out = ClipVisionOutput(last_hidden_state=torch.zeros(1), image_embeds=embeds,
                           penultimate_hidden_states=torch.zeros(1))
    clean = unclip_adm([{"clip_vision_output": out, "strength": 2.0, "noise_augmentation": 0.0}], aug)
    # level 0 of the cosine schedule: √ᾱ₀ ≈ 1, so the embedding passes almost unchanged; the level embedding is t=0's
    torch.testing.assert_close(clean[:, :4], 2.0 * embeds, atol=0.05, rtol=0.05)
    torch.testing.assert_close(clean[:, 4:], 2.0 * timestep_embedding(torch.zeros(1), 4))
    noisy = unclip_adm([{"clip_vision_output": out, "strength": 1.0, "noise_augmentation": 1.0}], aug)
    assert float((noisy[:, :4] - embeds).abs().mean()) > 0.3  # level 999: almost pure noise
    merged = unclip_adm([{"clip_vision_output": out, "strength": 1.0, "noise_augmentation": 0.0}] * 2, aug)
    torch.testing.assert_close(merged[:, 4:], timestep_embedding(torch.tensor([float(round(999 * 0.05))]), 4))
