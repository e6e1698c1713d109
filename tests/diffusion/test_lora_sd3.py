"""SD3 LoRAs (diffusion/adapters/lora_mmdit.py): a diffusers/PEFT LoRA over every linear layer of diffusers'
SD3Transformer2DModel, added to that independent network's weights, gives the same output as Loom's MMDiT with the
LoRA applied through its key map (the fused q/k/v slices included); kohya names on the SD3 paths; OneTrainer's."""
from __future__ import annotations

import pytest
import torch

from diffusion.files.assemble import diffusion_model
from diffusion.adapters.lora import apply_lora
from diffusion.patcher import ModelHandle

pytest.importorskip("diffusers")
from tests.test_parity_mmdit import CONFIGS, diffusers_twin, random_mmdit  # noqa: E402

# diffusers modules whose SD3 counterpart stores (shift, scale) where diffusers stores (scale, shift) (and the
# pre-only last block's context modulation)
_SWAPPED = ("norm_out.linear",)


def _peft_lora(ref: torch.nn.Module, prefix: str, rank: int = 2, seed: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    swapped = (*_SWAPPED, f"transformer_blocks.{ref.config.num_layers - 1}.norm1_context.linear")
    for name, module in ref.named_modules():
        if not isinstance(module, torch.nn.Linear) or name in swapped:
            continue
        sd[f"{prefix}{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.1
        sd[f"{prefix}{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.1
    return sd


def _forward(net, x, t, ctx, y, diffusers: bool = False) -> torch.Tensor:
    with torch.no_grad():
        if diffusers:
            return net(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=y, timestep=t).sample
        return net(x, t, context=ctx, y=y)


@pytest.mark.parametrize("prefix", ["transformer.", "base_model.model."])
def test_diffusers_lora_matches_patched_diffusers_model(prefix: str) -> None:
    net = random_mmdit(CONFIGS["sd35_medium_like"])
    ref = diffusers_twin(net)
    lora = _peft_lora(ref, prefix)
    with torch.no_grad():
        for name, module in ref.named_modules():
            if f"{prefix}{name}.lora_A.weight" in lora:
                module.weight += lora[f"{prefix}{name}.lora_B.weight"] @ lora[f"{prefix}{name}.lora_A.weight"]
    handle = ModelHandle(diffusion_model(net, "sd3", "flow"), kind="unet")
    result = apply_lora(dict(lora), handle, None, 1.0, 0.0, "lora")
    assert result.unknown == []
    assert "diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight" in result.patched_model_keys
    patched = {k: result.model.patched_copy_of(k) for k in set(result.patched_model_keys)}
    torch.manual_seed(1)
    x, t = torch.randn(2, 16, 12, 10), torch.tensor([1000.0, 437.5])
    ctx, y = torch.randn(2, 7, net.config.context_dim), torch.randn(2, net.config.adm_in_channels)
    before = _forward(net, x, t, ctx, y)
    with torch.no_grad():
        for key, value in patched.items():
            net.get_parameter(key.removeprefix("diffusion_model.")).copy_(value)
    ours, theirs = _forward(net, x, t, ctx, y), _forward(ref, x, t, ctx, y, diffusers=True)
    assert (ours - before).abs().max() > 1e-2  # the LoRA does change the output
    assert (ours - theirs).abs().max().item() <= 1e-4 * max(1.0, theirs.abs().max().item())


def test_kohya_and_onetrainer_names() -> None:
    net = random_mmdit(CONFIGS["sd3_medium_like"])
    handle = ModelHandle(diffusion_model(net, "sd3", "flow"), kind="unet")
    gen = torch.Generator().manual_seed(0)
    d = net.config.hidden_size
    up, down = torch.randn(3 * d, 4, generator=gen), torch.randn(4, d, generator=gen)
    kohya = {"lora_unet_joint_blocks_1_x_block_attn_qkv.lora_up.weight": up,
             "lora_unet_joint_blocks_1_x_block_attn_qkv.lora_down.weight": down,
             "lora_unet_joint_blocks_1_x_block_attn_qkv.alpha": torch.tensor(2.0)}
    result = apply_lora(kohya, handle, None, 0.5, 0.0, "kohya")
    key = "diffusion_model.joint_blocks.1.x_block.attn.qkv.weight"
    assert result.unknown == [] and result.patched_model_keys == [key]
    base = net.state_dict()[key.removeprefix("diffusion_model.")]
    torch.testing.assert_close(result.model.patched_copy_of(key), base + 0.5 * (2.0 / 4) * up @ down)

    v_up, v_down = torch.randn(d, 2, generator=gen), torch.randn(2, d, generator=gen)
    onetrainer = {"lora_transformer_transformer_blocks_0_attn_add_v_proj.lora_up.weight": v_up,
                  "lora_transformer_transformer_blocks_0_attn_add_v_proj.lora_down.weight": v_down}
    result = apply_lora(onetrainer, handle, None, 1.0, 0.0, "onetrainer")
    key = "diffusion_model.joint_blocks.0.context_block.attn.qkv.weight"
    base = net.state_dict()[key.removeprefix("diffusion_model.")]
    delta = result.model.patched_copy_of(key) - base
    assert delta[: 2 * d].abs().max() == 0  # q and k untouched
    torch.testing.assert_close(delta[2 * d:], v_up @ v_down)
