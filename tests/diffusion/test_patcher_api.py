"""ComfyUI's ModelPatcher surface on Loom's model handle: patch data translation (diffusion/adapters/patch_data.py), clone
semantics of options and registries, and the MMDiT's "dit" block replacement, on tiny real networks."""
from __future__ import annotations

import torch
from torch import nn

from diffusion.networks.mmdit import MMDiT
from diffusion.adapters.patch_data import SetDelta, delta_of
from diffusion.patcher import ModelHandle, WeightPatch
from tests.fixtures.tiny_sd3 import TINY_SD3


def _linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def test_comfy_patch_data_becomes_the_same_weights() -> None:
    base = ModelHandle(_linear(0))
    w = base.model.weight.detach()
    up, down, diff = torch.randn(2, 1), torch.randn(1, 3), torch.randn(2, 3)
    lora = base.clone()
    assert lora.add_patches({"weight": ("lora", (up, down, torch.tensor(2.0), None, None, None))}, 0.5) == ["weight"]
    assert torch.allclose(lora.patched_copy_of("weight"), w + 0.5 * 2.0 * (up @ down))
    full = base.clone()
    full.add_patches({"weight": (diff,), "no.such.key": (diff,)}, 0.25, 2.0)
    assert list(full.patches) == ["weight"]
    assert torch.allclose(full.patched_copy_of("weight"), 2.0 * w + 0.25 * diff)
    replaced = base.clone()
    replaced.add_patches({"weight": ("set", (diff,))}, 0.7)
    assert isinstance(replaced.patches["weight"][0].compute_delta, SetDelta)
    assert torch.allclose(replaced.patched_copy_of("weight"), diff, atol=1e-6)
    sliced = base.clone()
    sliced.add_patches({("weight", (0, 1, 1)): (torch.ones(1, 3),)}, 1.0)
    assert torch.allclose(sliced.patched_copy_of("weight"), w + torch.tensor([[0.0], [1.0]]))
    assert base.patches == {}


def test_get_key_patches_merges_another_model_the_comfyui_way() -> None:
    a, b = ModelHandle(_linear(1)), ModelHandle(_linear(2))
    b_lora = b.clone()
    b_lora.add_patches({"weight": (torch.ones(2, 3),)}, 1.0)
    merged = a.clone()
    merged.add_patches({k: v for k, v in b_lora.get_key_patches().items()}, 0.3, 0.7)  # ModelMergeSimple(0.7)
    expected = 0.7 * a.model.weight.detach() + 0.3 * (b.model.weight.detach() + 1.0)
    assert torch.allclose(merged.patched_copy_of("weight"), expected, atol=1e-6)


def test_clone_copies_options_and_registries() -> None:
    m = ModelHandle(_linear(0))
    m.add_wrapper("sampler_post_cfg_function", print)  # Loom's nodes: a model_options list
    m.add_wrapper("apply_model", len)  # ComfyUI: the wrapper registry
    m.add_callback("on_clone", lambda old, new: new.set_attachments("cloned_from", old))
    twin = m.clone()
    twin.set_model_attn1_patch(abs)
    twin.set_model_attn2_replace(abs, "input", 1, 0)
    twin.add_wrapper_with_key("apply_model", "k", min)
    assert twin.model_options["sampler_post_cfg_function"] == [print]
    assert twin.get_all_wrappers("apply_model") == [len, min] and m.get_all_wrappers("apply_model") == [len]
    assert twin.get_attachment("cloned_from") is m and twin.parent is m
    assert "patches" not in m.model_options["transformer_options"]
    assert twin.model_options["transformer_options"]["patches_replace"]["attn2"] == {("input", 1, 0): abs}
    assert twin.get_model_object("weight") is m.model.weight
    assert twin.is_clone(m) and twin.clone_has_same_weights(m)
    assert twin.model_dtype() == torch.float32 and twin.size == m.nbytes()


def test_mmdit_honours_dit_block_replacements() -> None:
    torch.manual_seed(0)
    net = MMDiT(TINY_SD3).eval()
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([500.0])
    ctx, y = torch.randn(1, 5, 4096), torch.randn(1, TINY_SD3.adm_in_channels)
    with torch.no_grad():
        plain = net(x, t, context=ctx, y=y)
        calls = []

        def through(args, extra):
            calls.append(sorted(args))
            return extra["original_block"](args)

        same = net(x, t, context=ctx, y=y, transformer_options={"patches_replace": {"dit": {
            ("double_block", 0): through, ("double_block", 1): through}}})

        def drop(args, extra):
            return {"img": args["img"] * 0, "txt": args["txt"]}

        changed = net(x, t, context=ctx, y=y,
                      transformer_options={"patches_replace": {"dit": {("double_block", 0): drop}}})
    assert torch.equal(same, plain) and len(calls) == 2 and calls[0] == ["img", "transformer_options", "txt", "vec"]
    assert not torch.allclose(changed, plain)


def test_weight_patch_values_pass_through() -> None:
    patch = WeightPatch(lambda w: torch.ones_like(w), 1.0)
    assert delta_of(patch) is patch.compute_delta


def test_clip_unprojected_pooled_is_before_the_text_projection(tmp_path) -> None:
    from diffusion.files.assemble import Precision, clip_socket, load_checkpoint_modules
    from tests.fixtures.tiny_sdxl import tiny_sdxl_state_dict, write

    path = write(tiny_sdxl_state_dict(), tmp_path / "xl.safetensors")
    f32 = torch.float32
    clip = clip_socket(load_checkpoint_modules(path, Precision(unet=f32, vae=f32, text_encoder=f32))["clip"])
    tokens = clip.tokenize("a red fox")
    cond, projected = clip.encode_from_tokens(tokens, return_pooled=True)
    cond_u, unprojected = clip.encode_from_tokens(tokens, return_pooled="unprojected")
    scheduled = clip.encode_from_tokens_scheduled(tokens, unprojected=True, add_dict={"extra": 1})
    projection = clip.model.towers()["g"].model.text_projection.float()
    assert torch.equal(cond, cond_u) and not torch.allclose(projected, unprojected)
    assert torch.allclose(unprojected @ projection, projected, atol=1e-5)
    assert torch.equal(scheduled[0][1]["pooled_output"], unprojected) and scheduled[0][1]["extra"] == 1
