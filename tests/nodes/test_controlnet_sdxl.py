"""SDXL ControlNets and T2I-Adapters in the diffusers layout, through ControlNetLoader on real files.

diffusers itself is the oracle: a tiny `ControlNetModel` with an SDXL-style config (text-time addition embedding,
per-level transformer depths, linear projections) and a tiny `T2IAdapter` of type `full_adapter_xl`, every weight
random (diffusers zero-initialises the zero convs, which would make any comparison pass), written with
`save_pretrained` as `diffusion_pytorch_model.safetensors`, loaded by Loom's ControlNetLoader and run on the same
inputs as diffusers' forward. Then the same ControlNet drives sampling of a tiny SDXL checkpoint end to end.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffusion.adapters.controlnet import ControlNet, T2IAdapter
from diffusion.families.sdxl import size_embeddings
from diffusion.networks.unet import UNetModel
from tests.fixtures.tiny_checkpoints import _random_like, tiny_vae_state_dict
from tests.fixtures.tiny_sdxl import G_WIDTH, XL_ADM, XL_CONTEXT, tiny_sdxl_state_dict, tiny_sdxl_unet_config, write
from tests.nodes.sd_env import SDEnv, txt2img
from tests.nodes.test_controlnet import save_hint, with_control

diffusers = pytest.importorskip("diffusers")

XL_CKPT = "tiny-sdxl.safetensors"


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.05
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if name.endswith("norm.weight") else 0.0))
    return module.eval()


def diffusers_sdxl_controlnet(seed: int = 5) -> torch.nn.Module:
    """A tiny diffusers ControlNetModel with the block layout of the tiny SDXL UNet (tests.fixtures.tiny_sdxl)."""
    net = diffusers.ControlNetModel(
        in_channels=4, conditioning_channels=3, layers_per_block=2, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 1, 1), cross_attention_dim=XL_CONTEXT,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=XL_ADM, norm_num_groups=32,
    )
    return _randomised(net, seed)


def save_diffusers(model: torch.nn.Module, tmp: Path, dest: Path) -> Path:
    """`save_pretrained` into `tmp`, then its safetensors file copied to `dest` (as users download it)."""
    model.save_pretrained(tmp, safe_serialization=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp / "diffusion_pytorch_model.safetensors", dest)
    return dest


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_sdxl_state_dict(), tmp_path / "models" / "checkpoints" / XL_CKPT)
    return env


def load_node(env: SDEnv, name: str):
    return env.value({"1": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}}, "1")


def test_diffusers_sdxl_controlnet_matches_diffusers(env: SDEnv, tmp_path: Path) -> None:
    theirs = diffusers_sdxl_controlnet()
    save_diffusers(theirs, tmp_path / "pretrained", env.base / "models" / "controlnet" / "xl_canny.safetensors")
    control = load_node(env, "xl_canny.safetensors")
    assert isinstance(control, ControlNet)
    ours = control.handle.model.float()

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    hint = torch.rand(2, 3, 128, 128, generator=gen)
    context = torch.randn(2, 77, XL_CONTEXT, generator=gen)
    pooled = torch.randn(2, G_WIDTH, generator=gen)
    time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0], [768.0, 512.0, 16.0, 8.0, 768.0, 512.0]])
    y = torch.cat([pooled, torch.cat([size_embeddings(row.tolist()) for row in time_ids])], dim=1)
    t = torch.tensor([981.0, 37.0])
    with torch.no_grad():
        down, mid = theirs(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False,
                           added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
        got = ours(x, hint, t, context, y=y)
    assert len(got["output"]) == len(down) == 9
    assert max((a - b).abs().max().item() for a, b in zip(got["output"], down)) <= 1e-4
    assert (got["middle"][0] - mid).abs().max().item() <= 1e-4
    assert mid.abs().max().item() > 1e-2  # the comparison is not of zeros


def test_diffusers_controlnet_samples_like_its_ldm_conversion(env: SDEnv, tmp_path: Path) -> None:
    """The same network as a diffusers file and as an original-layout file (`control_model.*`) gives the same
    SDXL sampling result, and differs from sampling without it."""
    folder = env.base / "models" / "controlnet"
    save_diffusers(diffusers_sdxl_controlnet(), tmp_path / "pretrained", folder / "xl_diffusers.safetensors")
    ldm = load_node(env, "xl_diffusers.safetensors").handle.model.state_dict()
    write({f"control_model.{k}": v for k, v in ldm.items()}, folder / "xl_ldm.safetensors")
    save_hint(env)
    plain = env.value(txt2img(XL_CKPT, size=64), "3")["samples"]
    prompts = {}
    for name in ("xl_diffusers.safetensors", "xl_ldm.safetensors"):
        prompt = with_control(env, name, strength=0.8)
        prompt["4"]["inputs"]["ckpt_name"] = XL_CKPT
        prompt["5"]["inputs"].update(width=64, height=64)
        prompts[name] = env.value(prompt, "3")["samples"]
    assert torch.equal(prompts["xl_diffusers.safetensors"], prompts["xl_ldm.safetensors"])
    assert (prompts["xl_ldm.safetensors"] - plain).abs().max().item() > 1e-3


def test_diffusers_controlnet_with_foreign_keys_is_refused(env: SDEnv, tmp_path: Path) -> None:
    theirs = diffusers_sdxl_controlnet()
    sd = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    sd["class_embedding.linear_1.weight"] = torch.zeros(4, 4)
    write(sd, env.base / "models" / "controlnet" / "odd.safetensors")
    result = env.run({"1": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "odd.safetensors"}},
                      "g": {"class_type": "Grab", "inputs": {"value": ["1", 0]}}})
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "odd.safetensors" in message and "class_embedding.linear_1.weight" in message


# ---- T2I-Adapter (SDXL) ---------------------------------------------------------------------------------------

def adapter_unet_config():
    """A tiny SDXL UNet whose widths are those of an SDXL adapter (c, 2c, 4c), as the real 320/640/1280."""
    return replace(tiny_sdxl_unet_config(), channel_mult=(1, 2, 4))


def diffusers_xl_adapter(in_channels: int = 3, seed: int = 9) -> torch.nn.Module:
    net = diffusers.T2IAdapter(in_channels=in_channels, channels=[32, 64, 128, 128], num_res_blocks=2,
                               downscale_factor=16, adapter_type="full_adapter_xl")
    return _randomised(net, seed)


@pytest.mark.parametrize("in_channels", [3, 1])
def test_diffusers_sdxl_t2i_adapter_matches_diffusers(env: SDEnv, tmp_path: Path, in_channels: int) -> None:
    theirs = diffusers_xl_adapter(in_channels)
    save_diffusers(theirs, tmp_path / "pretrained", env.base / "models" / "controlnet" / "xl_sketch.safetensors")
    control = load_node(env, "xl_sketch.safetensors")
    assert isinstance(control, T2IAdapter)
    net = control.handle.model.float()
    assert net.xl and net.unshuffle_amount == 16 and net.input_channels == in_channels
    hint = torch.rand(1, in_channels, 128, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = theirs(hint)
        got = net(hint)
    # Counted from the list's end as the UNet consumes them: the feature of each adapter level lands on the
    # input block of the same width and size (3: level 0's downsample, 5: level 1, 8: level 2), the last one
    # on the middle block.
    inputs = got["input"]
    placed = {i: inputs[len(inputs) - 1 - i] for i in range(len(inputs))}
    assert [i for i, f in placed.items() if f is not None] == [3, 5, 8]
    for block, feature in zip((3, 5, 8), expected[:3]):
        assert (placed[block] - feature).abs().max().item() <= 1e-5
    assert (got["middle"][0] - expected[3]).abs().max().item() <= 1e-5

    # The features fit the UNet's blocks: a UNet of the adapter's widths runs with them as its control.
    with torch.device("meta"):
        unet = UNetModel(adapter_unet_config())
    unet.load_state_dict(_random_like(unet, 3, torch.float32), assign=True)
    x = torch.randn(1, 4, 16, 12, generator=torch.Generator().manual_seed(1))
    context, y = torch.randn(1, 77, XL_CONTEXT), torch.randn(1, XL_ADM)
    with torch.no_grad():
        base = unet(x, torch.tensor([500.0]), context, y=y)
        steered = unet(x, torch.tensor([500.0]), context, y=y, control=got)
    assert (steered - base).abs().max().item() > 1e-3


def test_sdxl_t2i_adapter_samples_an_sdxl_checkpoint(env: SDEnv, tmp_path: Path) -> None:
    with torch.device("meta"):
        unet = UNetModel(adapter_unet_config())
    sd = {"model.diffusion_model." + k: v for k, v in _random_like(unet, 0, torch.float16).items()}
    full = tiny_sdxl_state_dict()
    sd.update({k: v for k, v in full.items() if not k.startswith("model.diffusion_model.")})
    sd.update({"first_stage_model." + k: v for k, v in tiny_vae_state_dict(seed=1).items()})
    write(sd, env.base / "models" / "checkpoints" / "xl-wide.safetensors")
    save_diffusers(diffusers_xl_adapter(), tmp_path / "pretrained",
                   env.base / "models" / "controlnet" / "xl_adapter.safetensors")
    save_hint(env)
    plain = txt2img("xl-wide.safetensors", size=64)
    controlled = with_control(env, "xl_adapter.safetensors")
    controlled["4"]["inputs"]["ckpt_name"] = "xl-wide.safetensors"
    controlled["5"]["inputs"].update(width=64, height=64)
    a = env.value(plain, "3")["samples"]
    b = env.value(controlled, "3")["samples"]
    assert a.shape == b.shape == (1, 4, 8, 8)
    assert (a - b).abs().max().item() > 1e-3
