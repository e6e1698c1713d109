"""Attention multiply, Differential Diffusion and InstructPix2Pix conditioning through the real executor on tiny
checkpoints (SD1.5 and an 8-input-channel InstructPix2Pix UNet in the real key layout)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from diffusion.sampling.differential_diffusion import DifferentialMask
from diffusion.sampling.model_sampling import ModelSampling
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.nodes.sd_env import SDEnv, txt2img

IP2P = "tiny-ip2p.safetensors"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("patches_b"))
    write_tiny_checkpoint(env.base / "models" / "checkpoints" / IP2P, family="sd15_ip2p")
    return env


def latent(env: SDEnv, patch: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
           clip_from: list | None = None) -> torch.Tensor:
    prompt = txt2img(steps=3)
    del prompt["8"], prompt["9"]
    if patch is not None:
        prompt["p"] = patch
        prompt["3"]["inputs"]["model"] = ["p", 0]
    if clip_from is not None:
        prompt["6"]["inputs"]["clip"] = clip_from
        prompt["7"]["inputs"]["clip"] = clip_from
    prompt.update(extra or {})
    return env.value(prompt, "3")["samples"]


FACTORS = {"q": 1.0, "k": 1.0, "v": 1.0, "out": 1.0}


@pytest.mark.parametrize("class_type,attn", [("UNetSelfAttentionMultiply", "attn1"),
                                             ("UNetCrossAttentionMultiply", "attn2")])
def test_unet_attention_multiply(env: SDEnv, class_type: str, attn: str) -> None:
    base = latent(env)
    neutral = {"class_type": class_type, "inputs": {"model": ["4", 0], **FACTORS}}
    torch.testing.assert_close(latent(env, neutral), base)
    node = {"class_type": class_type, "inputs": {"model": ["4", 0], **FACTORS, "q": 1.5, "out": 0.5}}
    assert (latent(env, node) - base).abs().max() > 1e-4
    handle = env.value({"4": txt2img()["4"], "p": node}, "p")
    keys = sorted(handle.state_keys())
    q_key = next(k for k in keys if k.endswith(f"{attn}.to_q.weight"))
    out_bias = next(k for k in keys if k.endswith(f"{attn}.to_out.0.bias"))
    k_key = next(k for k in keys if k.endswith(f"{attn}.to_k.weight"))
    other = next(k for k in keys if k.endswith(("attn2" if attn == "attn1" else "attn1") + ".to_q.weight"))
    sd = handle.model.state_dict()
    torch.testing.assert_close(handle.patched_copy_of(q_key), sd[q_key] * 1.5)
    torch.testing.assert_close(handle.patched_copy_of(out_bias), sd[out_bias] * 0.5)
    assert k_key not in handle.patches or torch.equal(handle.patched_copy_of(k_key), sd[k_key])
    assert other not in handle.patches


def test_clip_attention_multiply(env: SDEnv) -> None:
    base = latent(env)
    node = {"class_type": "CLIPAttentionMultiply", "inputs": {"clip": ["4", 1], **FACTORS}}
    torch.testing.assert_close(latent(env, extra={"c": node}, clip_from=["c", 0]), base)
    node["inputs"].update(k=2.0, v=0.5)
    assert (latent(env, extra={"c": node}, clip_from=["c", 0]) - base).abs().max() > 1e-4
    clip = env.value({"4": txt2img()["4"], "c": node}, "c")
    handle = clip.handle
    key = next(k for k in sorted(handle.state_keys()) if k.endswith("attn.in_proj_weight"))
    w = handle.model.state_dict()[key]
    third = w.shape[0] // 3
    expected = torch.cat([w[:third], w[third:2 * third] * 2.0, w[2 * third:] * 0.5])
    torch.testing.assert_close(handle.patched_copy_of(key), expected)
    original = env.value({"4": txt2img()["4"]}, "4", 1)
    assert key not in original.handle.patches  # the loader's CLIP is untouched


def test_differential_mask_thresholds() -> None:
    ms = ModelSampling()
    sigmas = torch.tensor([float(ms.sigma_max), 5.0, 1.0, 0.0])

    class Denoiser:
        inner_model = type("M", (), {"model_sampling": ms})()

    mask = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    fn = DifferentialMask()
    options = {"model": Denoiser(), "sigmas": sigmas}
    first = fn(sigmas[:1], mask, options)
    assert torch.equal(first, (mask >= 1.0).float())  # at the start only fully masked pixels are regenerated
    t_from, t_to = float(ms.timestep(sigmas[0])), float(ms.timestep(ms.sigma_min))
    t_mid = float(ms.timestep(torch.tensor(5.0)))
    mid = fn(torch.tensor([5.0]), mask, options)
    assert torch.equal(mid, (mask >= (t_mid - t_to) / (t_from - t_to)).float())
    assert mid.sum() > first.sum()
    soft = DifferentialMask(0.25)(torch.tensor([5.0]), mask, options)
    torch.testing.assert_close(soft, 0.25 * mid + 0.75 * mask)


def test_differential_diffusion_node(env: SDEnv) -> None:
    image = {"i": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                          "color": 0x808080}},
             "e": {"class_type": "VAEEncode", "inputs": {"pixels": ["i", 0], "vae": ["4", 2]}},
             "s": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 32, "height": 32}},
             "m": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["e", 0], "mask": ["s", 0]}}}

    def run(patch: dict | None, value: float) -> torch.Tensor:
        image["s"]["inputs"]["value"] = value
        prompt = txt2img(steps=4)
        del prompt["8"], prompt["9"]
        prompt.update(image)
        prompt["3"]["inputs"]["latent_image"] = ["m", 0]
        prompt["3"]["inputs"]["denoise"] = 1.0
        if patch is not None:
            prompt["p"] = patch
            prompt["3"]["inputs"]["model"] = ["p", 0]
        return env.value(prompt, "3")["samples"]

    dd = {"class_type": "DifferentialDiffusion", "inputs": {"model": ["4", 0]}}
    # a full mask stays full at every step: the same as plain inpainting
    torch.testing.assert_close(run(dd, 1.0), run(None, 1.0))
    # a half mask: plain inpainting blends softly at every step, differential diffusion regenerates the region
    # only in the later steps, so the results differ
    assert (run(dd, 0.5) - run(None, 0.5)).abs().max() > 1e-4
    info = env.registry.object_info(env.folders)["DifferentialDiffusion"]
    assert info["display_name"] == "Differential Diffusion"
    assert info["input"]["optional"]["strength"][1] == {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}


def test_instruct_pix2pix_conditioning(env: SDEnv) -> None:
    def prompt(color: int, size: int = 36) -> dict[str, Any]:
        graph = txt2img(ckpt=IP2P, steps=2)
        del graph["8"], graph["9"], graph["5"]
        graph["i"] = {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                             "color": color}}
        graph["x"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["i", 0]}}
        graph["3"]["inputs"].update(positive=["x", 0], negative=["x", 1], latent_image=["x", 2])
        return graph

    out = env.value(prompt(0xFF0000), "x", 2)["samples"]
    assert out.shape == (1, 4, 4, 4) and not out.any()  # 36 px cropped to 32, an empty latent of its size
    cond = env.value(prompt(0xFF0000), "x", 0)
    encoded = env.value({**prompt(0xFF0000), "e": {"class_type": "VAEEncode", "inputs": {
        "pixels": ["c", 0], "vae": ["4", 2]}}, "c": {"class_type": "ImageCrop", "inputs": {
            "image": ["i", 0], "width": 32, "height": 32, "x": 2, "y": 2}}}, "e")["samples"]
    torch.testing.assert_close(cond[0][1]["concat_latent_image"], encoded)
    red = env.value(prompt(0xFF0000), "3")["samples"]
    blue = env.value(prompt(0x0000FF), "3")["samples"]
    assert red.shape == (1, 4, 4, 4) and (red - blue).abs().max() > 1e-4  # the model sees the image


def test_sd_4x_upscale_conditioning(env: SDEnv) -> None:
    graph = {"4": txt2img()["4"], "6": txt2img()["6"], "7": txt2img()["7"],
             "i": {"class_type": "EmptyImage", "inputs": {"width": 12, "height": 8, "batch_size": 2,
                                                          "color": 0xFF8000}},
             "u": {"class_type": "SD_4XUpscale_Conditioning", "inputs": {
                 "images": ["i", 0], "positive": ["6", 0], "negative": ["7", 0], "scale_ratio": 2.0,
                 "noise_augmentation": 0.25}}}
    positive = env.value(graph, "u", 0)
    latent = env.value(graph, "u", 2)["samples"]
    assert latent.shape == (2, 4, 4, 6) and not latent.any()  # 24×16 target, a quarter each way
    image = positive[0][1]["concat_image"]
    assert image.shape == (2, 3, 4, 6) and positive[0][1]["noise_augmentation"] == 0.25
    torch.testing.assert_close(image[0, :, 0, 0], torch.tensor([1.0, 128 / 255 * 2 - 1, -1.0]))
    negative = env.value(graph, "u", 1)
    assert "concat_image" in negative[0][1]
    info = env.registry.object_info(env.folders)["SD_4XUpscale_Conditioning"]
    assert info["output_name"] == ["positive", "negative", "latent"]
    assert info["category"] == "conditioning/upscale_diffusion"
