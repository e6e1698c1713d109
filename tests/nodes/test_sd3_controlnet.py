"""SD3 ControlNets through the real executor on tiny files: Stability's SD3.5 format (ControlNetLoader detection,
ControlNetApplyAdvanced with its `vae` input, the residuals reaching the MMDiT after each joint block; a freshly
initialised ControlNet leaves sampling unchanged, strength 0 too; a missing VAE is a clear error) and the diffusers
layout (InstantX: loading, one model call's residuals and hint latent; inpainting files refused)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.adapters.controlnet_mmdit import ControlNetSD35, SD35ControlNetNet, sincos_grid
from diffusion.adapters.controlnet_sd3_diffusers import ControlNetSD3Diffusers
from diffusion.networks.mmdit import MMDiT
from diffusion.sampling.model_sampling_flow import FlowSampling
from tests.fixtures.tiny_sd3 import TINY_SD3, write_tiny_sd3
from tests.fixtures.tiny_sd3_controlnet import tiny_sd35_controlnet_state_dict
from tests.fixtures.tiny_sdxl import tiny_clip_g_hf, tiny_clip_l_hf, write
from tests.nodes.sd_env import SDEnv
from tests.nodes.test_sd3_nodes import CKPT, sd3_txt2img

diffusers = pytest.importorskip("diffusers")
from diffusers import SD3ControlNetModel  # noqa: E402


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write_tiny_sd3(tmp_path / "models" / "checkpoints" / CKPT)
    write(tiny_clip_l_hf(), tmp_path / "models" / "text_encoders" / "clip_l.safetensors")
    write(tiny_clip_g_hf(), tmp_path / "models" / "text_encoders" / "clip_g.safetensors")
    write(tiny_sd35_controlnet_state_dict(), tmp_path / "models" / "controlnet" / "sd35_depth.safetensors")
    write(tiny_sd35_controlnet_state_dict(zero_out=True), tmp_path / "models" / "controlnet" / "zero.safetensors")
    return env


def with_control(name: str, strength: float = 1.0, vae: bool = True) -> dict[str, Any]:
    prompt = sd3_txt2img()
    prompt["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
    prompt["21"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1,
                                                          "color": 0x336699}}
    apply = {"positive": ["2", 0], "negative": ["3", 0], "control_net": ["20", 0], "image": ["21", 0],
             "strength": strength, "start_percent": 0.0, "end_percent": 1.0}
    if vae:
        apply["vae"] = ["1", 2]
    prompt["22"] = {"class_type": "ControlNetApplyAdvanced", "inputs": apply}
    prompt["5"]["inputs"]["positive"] = ["22", 0]
    prompt["5"]["inputs"]["negative"] = ["22", 1]
    return prompt


def latent(env: SDEnv, prompt: dict[str, Any]) -> torch.Tensor:
    return env.value(prompt, "5")["samples"]


def test_loader_detects_the_sd35_format(env: SDEnv) -> None:
    control = env.value({"20": {"class_type": "ControlNetLoader",
                                "inputs": {"control_net_name": "sd35_depth.safetensors"}}}, "20")
    assert isinstance(control, ControlNetSD35) and control.control_type == "depth"
    net = control.handle.model
    assert isinstance(net, SD35ControlNetNet) and len(net.transformer_blocks) == 2 and net.main_depth == 1


def test_control_changes_sampling_and_zero_or_strength_zero_does_not(env: SDEnv) -> None:
    plain = latent(env, sd3_txt2img())
    controlled = latent(env, with_control("sd35_depth.safetensors"))
    assert (controlled - plain).abs().max() > 1e-3
    assert torch.allclose(latent(env, with_control("zero.safetensors")), plain, atol=1e-6)
    assert torch.allclose(latent(env, with_control("sd35_depth.safetensors", strength=0.0)), plain, atol=1e-6)
    # before sampling, the ControlNet took the model's own patch embedder (its file has none)
    control = env.value(with_control("sd35_depth.safetensors"), "20")
    model = env.value(sd3_txt2img(), "1")
    assert torch.equal(control.handle.model.x_embedder.proj.weight,
                       model.model.diffusion_model.x_embedder.proj.weight.to(control.handle.model.dtype))


def test_controlnet_apply_sd3_is_the_advanced_node_with_a_vae(env: SDEnv) -> None:
    info = env.registry.object_info()["ControlNetApplySD3"]
    assert list(info["input"]["required"]) == ["positive", "negative", "control_net", "vae", "image", "strength",
                                               "start_percent", "end_percent"]
    assert info["display_name"] == "Apply Controlnet with VAE" and info["deprecated"] is True
    prompt = with_control("sd35_depth.safetensors")
    prompt["22"]["class_type"] = "ControlNetApplySD3"
    assert torch.equal(latent(env, prompt), latent(env, with_control("sd35_depth.safetensors")))


def test_missing_vae_is_a_clear_error(env: SDEnv) -> None:
    result = env.run({**with_control("sd35_depth.safetensors", vae=False),
                      "grab": {"class_type": "Grab", "inputs": {"value": ["22", 0]}}})
    assert result.status == "error" and result.error["node_type"] == "ControlNetApplyAdvanced"
    assert "connect a VAE" in result.error["exception_message"] and "'vae'" in result.error["exception_message"]


def test_mmdit_adds_each_residual_after_its_joint_block() -> None:
    torch.manual_seed(0)
    net = MMDiT(TINY_SD3).eval()
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([500.0])
    ctx, y = torch.randn(1, 5, 4096), torch.randn(1, TINY_SD3.adm_in_channels)
    residual = torch.randn(1, 16, 64)
    captured: list[torch.Tensor] = []
    hook = net.joint_blocks[1].register_forward_pre_hook(lambda _m, args: captured.append(args[1].clone()))
    with torch.no_grad():
        net(x, t, context=ctx, y=y)
        net(x, t, context=ctx, y=y, control={"output": [residual]})
    hook.remove()
    assert torch.allclose(captured[1], captured[0] + residual, atol=1e-5)  # block 1 sees block 0's output + r


def test_sincos_grid_centre_and_layout() -> None:
    grid = sincos_grid(8, w=4, h=2)
    assert grid.shape == (8, 8)
    # rows span 7.5 ± 7.5 (the shorter side), columns 7.5 ± 15; the first half of the features is the column
    cols = torch.linspace(-7.5, 22.5, 4)
    assert torch.allclose(grid[:4, 0], torch.sin(cols), atol=1e-6)
    assert torch.allclose(grid[::4, 4], torch.sin(torch.tensor([0.0, 15.0])), atol=1e-6)


def test_diffusers_layout_sd3_controlnet_loads_and_inpainting_is_refused(env: SDEnv, tmp_path: Path) -> None:
    def instantx(hint_channels: int) -> dict[str, torch.Tensor]:
        ref = SD3ControlNetModel(sample_size=32, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=64,
                                 num_attention_heads=2, joint_attention_dim=4096, caption_projection_dim=128,
                                 pooled_projection_dim=TINY_SD3.adm_in_channels, pos_embed_max_size=16,
                                 extra_conditioning_channels=hint_channels - 16)
        return {k: v.contiguous() for k, v in ref.state_dict().items()}

    folder = tmp_path / "models" / "controlnet"
    write(instantx(16), folder / "instantx.safetensors")
    write(instantx(17), folder / "instantx_inpaint.safetensors")
    control = env.value({"20": {"class_type": "ControlNetLoader",
                                "inputs": {"control_net_name": "instantx.safetensors"}}}, "20")
    assert isinstance(control, ControlNetSD3Diffusers) and control.handle.model.depth == 2
    # one model call's residuals: the hint through the SD3 VAE (no shift), the text context passed in
    vae = env.value(sd3_txt2img(), "1", 2)
    applied = control.copy().set_cond_hint(torch.rand(1, 3, 48, 64), 0.5, vae=vae)
    applied.model_sampling = FlowSampling(3.0)
    x, sigma = torch.randn(2, 16, 6, 8), torch.tensor([0.8, 0.8])
    out = applied.get_control(x, sigma, {"c_crossattn": torch.randn(2, 7, 4096)}, 2)
    assert len(out["output"]) == 1 and out["output"][0].shape == (2, 12, 128)
    hint = applied._hint
    expected = vae.encode(applied.hint_original.movedim(1, -1))  # already the latent size × 8: no resize
    assert torch.allclose(hint, expected * 1.5305, atol=1e-5)
    result = env.run({"20": {"class_type": "ControlNetLoader",
                             "inputs": {"control_net_name": "instantx_inpaint.safetensors"}},
                      "grab": {"class_type": "Grab", "inputs": {"value": ["20", 0]}}})
    assert result.status == "error" and result.error["node_type"] == "ControlNetLoader"
    assert "17 channels" in result.error["exception_message"]
