"""LoRA key maps and adapter maths: every layout lands on the right Loom weight, and the patched values equal an
independent computation (W + s·(α/r)·up@down, LoHa's Hadamard product, LoKr's Kronecker product, full diffs)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.files.assemble import Precision, load_checkpoint_modules
from diffusion.adapters.lora import apply_lora
from diffusion.adapters.lora_formats import diffusers_to_ldm_prefixes, unet_key_map
from diffusion.patcher import ModelHandle
from diffusion.networks.unet import UNetConfig, UNetModel
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.fixtures.tiny_loras import TARGETS_SD1, UNKNOWN_KEYS, kohya_sd, lycoris_sd, peft_sd


@pytest.fixture(scope="module")
def handles(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelHandle, ModelHandle]:
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    modules = load_checkpoint_modules(path, Precision())
    return ModelHandle(modules["unet"], kind="unet"), ModelHandle(modules["clip"], kind="text_encoder")


def test_diffusers_layout_of_the_full_sd1_unet() -> None:
    prefixes = diffusers_to_ldm_prefixes(UNetConfig.sd1())
    assert prefixes["down_blocks.0.attentions.1"] == "input_blocks.2.1"
    assert prefixes["down_blocks.2.downsamplers.0.conv"] == "input_blocks.9.0.op"
    assert prefixes["down_blocks.3.resnets.1.conv2"] == "input_blocks.11.0.out_layers.3"
    assert prefixes["mid_block.resnets.1.time_emb_proj"] == "middle_block.2.emb_layers.1"
    assert prefixes["up_blocks.0.upsamplers.0.conv"] == "output_blocks.2.1.conv"  # level without attention
    assert prefixes["up_blocks.1.upsamplers.0.conv"] == "output_blocks.5.2.conv"
    assert prefixes["up_blocks.3.attentions.2"] == "output_blocks.11.1"
    assert prefixes["up_blocks.3.resnets.0.conv_shortcut"] == "output_blocks.9.0.skip_connection"
    with torch.device("meta"):
        keys = {f"diffusion_model.{k}" for k in UNetModel(UNetConfig.sd1()).state_dict()}
    key_map = unet_key_map(keys, UNetConfig.sd1())
    weights = {k for k in keys if k.endswith(".weight")}
    # every weight of the UNet has a kohya name in the diffusers layout (what kohya's sd-scripts write)
    ldm_words = ("input_blocks", "middle_block", "output_blocks", "time_embed_", "lora_unet_out_")
    diffusers_named = {t.key for name, t in key_map.items()
                       if name.startswith("lora_unet_") and not any(w in name for w in ldm_words)}
    assert diffusers_named == weights
    assert key_map["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"].key == \
        "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"


def _expected_lora(sd: dict, name: str, up: str, down: str, base: torch.Tensor) -> torch.Tensor:
    u, d = sd[name + up].float(), sd[name + down].float()
    alpha = sd.get(name + ".alpha")
    scale = float(alpha) / d.shape[0] if alpha is not None else 1.0
    return (u.flatten(1) @ d.flatten(1)).reshape(base.shape) * scale


def _check(handle: ModelHandle, key: str, offset, expected_delta: torch.Tensor, strength: float) -> None:
    base = handle.model.state_dict()[key].float()
    patched = handle.patched_copy_of(key).float()
    if offset is None:
        torch.testing.assert_close(patched, base + strength * expected_delta, rtol=1e-5, atol=1e-5)
        return
    dim, start, length = offset
    torch.testing.assert_close(patched.narrow(dim, start, length),
                               base.narrow(dim, start, length) + strength * expected_delta, rtol=1e-5, atol=1e-5)
    rest = torch.ones(base.shape[dim], dtype=torch.bool)
    rest[start:start + length] = False
    assert torch.equal(patched[rest], base[rest])


def test_kohya_lora_locon_and_text_slices(handles: tuple[ModelHandle, ModelHandle]) -> None:
    unet, clip = handles
    sd = kohya_sd()
    result = apply_lora(sd, unet, clip, 0.7, 1.3, "kohya")
    assert result.unknown == sorted(UNKNOWN_KEYS)
    names = {k.rsplit(".lora_", 1)[0] for k in sd if ".lora_up." in k} - {UNKNOWN_KEYS[0].split(".")[0]}
    for name in names:
        key, offset = TARGETS_SD1[name]
        is_clip = key.startswith("model.")
        handle = result.clip_handle if is_clip else result.model
        base = handle.model.state_dict()[key]
        base = base.narrow(*offset) if offset else base
        if name + ".lora_mid.weight" in sd:
            up, mid, down = (sd[name + s].float() for s in (".lora_up.weight", ".lora_mid.weight",
                                                             ".lora_down.weight"))
            delta = torch.einsum("oa,abkl,bi->oikl", up.flatten(1), mid, down.flatten(1))
            delta = delta * float(sd[name + ".alpha"]) / down.shape[0]
        else:
            delta = _expected_lora(sd, name, ".lora_up.weight", ".lora_down.weight", base)
        _check(handle, key, offset, delta, 1.3 if is_clip else 0.7)
    assert len(result.patched_model_keys) == 8 and len(result.patched_clip_keys) == 3
    assert not unet.patches and not clip.patches  # the inputs are untouched: patches went on clones


def test_peft_and_diffusers_spellings_scale_one(handles: tuple[ModelHandle, ModelHandle]) -> None:
    unet, clip = handles
    sd = peft_sd()
    result = apply_lora(sd, unet, clip, 1.0, 0.5, "peft")
    assert result.unknown == []
    for name, (up, down) in {
        "unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v": (".lora_B.weight", ".lora_A.weight"),
        "text_encoder.text_model.encoder.layers.1.self_attn.k_proj": (".lora_B.weight", ".lora_A.weight"),
        "unet.up_blocks.2.attentions.0.proj_out": (".lora.up.weight", ".lora.down.weight"),
        "text_encoder.text_model.encoder.layers.2.self_attn.out_proj": (".lora.up.weight", ".lora.down.weight"),
    }.items():
        key, offset = TARGETS_SD1[name]
        handle = result.clip_handle if key.startswith("model.") else result.model
        base = handle.model.state_dict()[key]
        base = base.narrow(*offset) if offset else base
        delta = (sd[name + up].float().flatten(1) @ sd[name + down].float().flatten(1)).reshape(base.shape)
        _check(handle, key, offset, delta, 0.5 if key.startswith("model.") else 1.0)


def test_loha_lokr_and_full_diff(handles: tuple[ModelHandle, ModelHandle]) -> None:
    unet, clip = handles
    sd = lycoris_sd(alpha=1.0, rank=2)
    result = apply_lora(sd, unet, clip, 2.0, 1.0, "lycoris")
    assert result.unknown == []
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    f = {k: sd[f"{name}.{k}"].float() for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
    loha = (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"]) * (1.0 / 2)
    _check(result.model, TARGETS_SD1[name][0], None, loha, 2.0)
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_2"
    w2 = sd[f"{name}.lokr_w2_a"].float() @ sd[f"{name}.lokr_w2_b"].float()
    lokr = torch.kron(sd[f"{name}.lokr_w1"].float(), w2) * (1.0 / 2)
    _check(result.model, TARGETS_SD1[name][0], None, lokr, 2.0)
    _check(result.model, "diffusion_model.out.2.weight", None, sd["diffusion_model.out.2.diff"].float(), 2.0)
    _check(result.model, "diffusion_model.out.2.bias", None, sd["diffusion_model.out.2.diff_b"].float(), 2.0)


def test_strength_zero_is_bitwise_base(handles: tuple[ModelHandle, ModelHandle]) -> None:
    unet, clip = handles
    result = apply_lora(kohya_sd(), unet, clip, 0.0, 0.0, "kohya")
    for key in result.patched_model_keys:
        assert torch.equal(result.model.patched_copy_of(key), unet.model.state_dict()[key])


def test_fp16_file_on_fp32_model(tmp_path: Path, handles: tuple[ModelHandle, ModelHandle]) -> None:
    from diffusion.files.checkpoint import read_state_dict
    from tests.fixtures.tiny_loras import write_tiny_lora

    stored = write_tiny_lora(tmp_path / "l.safetensors", "kohya", dtype=torch.float16)
    loaded = read_state_dict(tmp_path / "l.safetensors")
    assert set(loaded) == set(stored)
    result = apply_lora(loaded, handles[0], handles[1], 1.0, 1.0, "fp16")
    key, _ = TARGETS_SD1["lora_unet_down_blocks_1_attentions_1_proj_in"]
    assert result.model.patched_copy_of(key).dtype == torch.float32


def test_sd2_linear_proj_in_and_open_clip_text_slices(tmp_path: Path) -> None:
    """SD2: the UNet's proj_in is a Linear and the text tower is stored in open_clip's layout; HF-named q/k/v
    LoRAs patch the right rows of `in_proj_weight`."""
    modules = load_checkpoint_modules(write_tiny_checkpoint(tmp_path / "sd21.safetensors", family="sd21"),
                                      Precision())
    unet, clip = ModelHandle(modules["unet"]), ModelHandle(modules["clip"], kind="text_encoder")
    width = modules["clip"].config.width
    gen = torch.Generator().manual_seed(5)
    proj_key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    out_dim, in_dim = unet.model.state_dict()[proj_key].shape
    names = {"lora_unet_down_blocks_0_attentions_0_proj_in": ((out_dim, in_dim), proj_key, None),
             "lora_te_text_model_encoder_layers_1_self_attn_k_proj":
                 ((width, width), "model.transformer.resblocks.1.attn.in_proj_weight", (0, width, width))}
    sd = {}
    for name, ((o, i), _, _) in names.items():
        sd.update({f"{name}.lora_up.weight": torch.randn(o, 2, generator=gen),
                   f"{name}.lora_down.weight": torch.randn(2, i, generator=gen), f"{name}.alpha": torch.tensor(1.0)})
    result = apply_lora(sd, unet, clip, 1.0, 1.0, "sd2")
    assert result.unknown == []
    for name, (_, key, offset) in names.items():
        handle = result.clip_handle if key.startswith("model.") else result.model
        base = handle.model.state_dict()[key]
        base = base.narrow(*offset) if offset else base
        _check(handle, key, offset, _expected_lora(sd, name, ".lora_up.weight", ".lora_down.weight", base), 1.0)


def test_dora_scale_rescales_columns(handles: tuple[ModelHandle, ModelHandle]) -> None:
    unet, clip = handles
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    key, _ = TARGETS_SD1[name]
    base = unet.model.state_dict()[key].float()
    gen = torch.Generator().manual_seed(9)
    up, down = torch.randn(base.shape[0], 2, generator=gen), torch.randn(2, base.shape[1], generator=gen)
    magnitude = 1.0 + torch.rand(1, base.shape[1], generator=gen)
    sd = {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down, f"{name}.alpha": torch.tensor(1.0),
          f"{name}.dora_scale": magnitude}
    result = apply_lora(sd, unet, clip, 0.6, 1.0, "dora")
    assert result.unknown == []
    calc = base + 0.5 * up @ down
    decomposed = calc * magnitude / calc.norm(dim=0, keepdim=True)
    torch.testing.assert_close(result.model.patched_copy_of(key), base + 0.6 * (decomposed - base),
                               rtol=1e-5, atol=1e-5)
