"""ControlNet union (controlnet-union-sdxl) through ControlNetLoader and SetUnionControlNetType on a real file.

The file is a tiny diffusers `ControlNetUnionModel` (the layout xinsir's union files ship in: the SDXL ControlNet
plus `task_embedding`, `transformer_layes`, `spatial_ch_projs`, `control_add_embedding`) written by
`save_pretrained`. The oracle is diffusers' plain `ControlNetModel` holding the same weights, with ComfyUI's
union semantics put in by hooks computed with the union model's own modules: the time embedding gets
`control_add_embedding` of the control type's one-hot added, and the encoded hint is replaced by the encoded hint
plus `spatial_ch_projs(transformer_layes(mean(encoded hint) + task_embedding[type]))` (one token; "auto": no
type, plain encoded hint)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.adapters.controlnet_union import UNION_CONTROLNET_TYPES
from diffusion.families.sdxl import size_embeddings
from tests.fixtures.tiny_sdxl import G_WIDTH, XL_ADM, XL_CONTEXT, tiny_sdxl_state_dict, write
from tests.nodes.sd_env import SDEnv, txt2img
from tests.nodes.test_controlnet import save_hint, with_control
from tests.nodes.test_controlnet_sdxl import _randomised, save_diffusers

diffusers = pytest.importorskip("diffusers")

BLOCKS = dict(
    in_channels=4, conditioning_channels=3, layers_per_block=2, block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 1, 1), cross_attention_dim=XL_CONTEXT,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=XL_ADM, norm_num_groups=32,
    conditioning_embedding_out_channels=(16, 32, 96, 256),
)


def union_model() -> torch.nn.Module:
    """8 control types, the union transformer as wide as the tiny UNet's first level (SDXL: 320 and 320)."""
    return _randomised(diffusers.ControlNetUnionModel(**BLOCKS, num_control_type=8, num_trans_channel=32,
                                                      num_trans_head=8, num_proj_channel=32), seed=13)


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_sdxl_state_dict(), tmp_path / "models" / "checkpoints" / "tiny-xl.safetensors")
    return env


def union_control(env: SDEnv, kind: str):
    return env.value({
        "1": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "union.safetensors"}},
        "2": {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["1", 0], "type": kind}},
    }, "2")


def oracle(theirs: torch.nn.Module, control_type: int | None, x, t, context, hint, pooled, time_ids):
    plain = diffusers.ControlNetModel(**BLOCKS).eval()
    missing, _ = plain.load_state_dict(theirs.state_dict(), strict=False)
    assert not missing
    one_hot = torch.zeros(8)
    if control_type is not None:
        one_hot[control_type] = 1.0
    with torch.no_grad():
        add = theirs.control_add_embedding(theirs.control_type_proj(one_hot).reshape(1, -1))
        encoded = theirs.controlnet_cond_embedding(hint)
        if control_type is not None:
            token = (encoded.mean(dim=(2, 3)) + theirs.task_embedding[control_type]).unsqueeze(1)
            fused = token
            for layer in theirs.transformer_layes:
                fused = layer(fused)
            encoded = encoded + theirs.spatial_ch_projs(fused[:, 0])[..., None, None]
    hooks = [plain.time_embedding.register_forward_hook(lambda m, a, out: out + add),
             plain.controlnet_cond_embedding.register_forward_hook(lambda m, a, out: encoded)]
    with torch.no_grad():
        down, mid = plain(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
    for hook in hooks:
        hook.remove()
    return list(down) + [mid]


def test_set_union_controlnet_type_declaration(env: SDEnv) -> None:
    info = env.registry.object_info()["SetUnionControlNetType"]
    assert info["category"] == "conditioning/controlnet"
    assert info["input"]["required"]["type"][0] == ["auto", *UNION_CONTROLNET_TYPES]
    assert info["output"] == ["CONTROL_NET"]


@pytest.mark.parametrize("kind", ["auto", "depth", "canny/lineart/anime_lineart/mlsd"])
def test_union_controlnet_matches_comfyui_semantics(env: SDEnv, tmp_path: Path, kind: str) -> None:
    theirs = union_model()
    save_diffusers(theirs, tmp_path / "pretrained", env.base / "models" / "controlnet" / "union.safetensors")
    control = union_control(env, kind)
    net = control.handle.model.float()
    assert net.union == (8, 32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    hint = torch.rand(1, 3, 128, 128, generator=gen)
    context = torch.randn(1, 77, XL_CONTEXT, generator=gen)
    pooled = torch.randn(1, G_WIDTH, generator=gen)
    time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]])
    y = torch.cat([pooled, size_embeddings(time_ids[0].tolist())], dim=1)
    t = torch.tensor([640.0])
    with torch.no_grad():
        got = net(x, hint, t, context, y=y, **control.extra_args)
    number = UNION_CONTROLNET_TYPES.get(kind)
    expected = oracle(theirs, number, x, t, context, hint, pooled, time_ids)
    ours = got["output"] + got["middle"]
    assert len(ours) == len(expected) == 10
    assert max((a - b).abs().max().item() for a, b in zip(ours, expected)) <= 1e-4
    assert control.extra_args == {"control_type": [] if number is None else [number]}


def test_union_type_steers_sampling(env: SDEnv, tmp_path: Path) -> None:
    save_diffusers(union_model(), tmp_path / "pretrained", env.base / "models" / "controlnet" / "union.safetensors")
    save_hint(env)
    results = {}
    for kind in ("auto", "depth", "openpose"):
        prompt = with_control(env, "union.safetensors")
        prompt["4"]["inputs"]["ckpt_name"] = "tiny-xl.safetensors"
        prompt["5"]["inputs"].update(width=64, height=64)
        prompt["23"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["20", 0], "type": kind}}
        prompt["22"]["inputs"]["control_net"] = ["23", 0]
        results[kind] = env.value(prompt, "3")["samples"]
    plain = env.value(txt2img("tiny-xl.safetensors", size=64), "3")["samples"]
    assert (results["auto"] - plain).abs().max().item() > 1e-3
    assert (results["depth"] - results["auto"]).abs().max().item() > 1e-4
    assert (results["depth"] - results["openpose"]).abs().max().item() > 1e-4
