"""OpenCLIP bigG (CLIP-G) in both layouts and SDXL's two-tower text model (diffusion/text/text_encoders.py,
diffusion/text/clip_multi.py), through real safetensors files of tiny towers.

Oracles: transformers' CLIPTextModelWithProjection / CLIPTextModel holding the same weights in the HF layout
(hidden states of every layer, final layer norm, projected text embeddings), and the rule ComfyUI documents for
SDXL (shared/reference/README.md): context = CLIP-L penultimate ‖ bigG penultimate, neither through the final
layer norm; pooled = bigG's final-normed last layer at the first end token times its projection.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.files.assemble import load_dual_text_encoder_module, load_text_encoder_module
from diffusion.files.checkpoint import CheckpointError
from diffusion.text.clip_multi import MultiTextEncoder, build_conditioner
from diffusion.text.text_encoders import CLIP, build_text_encoder
from diffusion.text.tokenizer import BOS_TOKEN, EOS_TOKEN, encode_text
from tests.fixtures.tiny_sdxl import (G_LAYERS, G_WIDTH, L_WIDTH, clip_g_hf_to_open_clip, tiny_clip_g_hf,
                                      tiny_clip_l_hf, tiny_sdxl_state_dict, write)

PROMPT = "a photograph of an astronaut riding a horse"


def _ids(text: str, pad: int) -> torch.Tensor:
    ids = [BOS_TOKEN, *encode_text(text), EOS_TOKEN]
    return torch.tensor([ids + [pad] * (77 - len(ids))])


def _hf_model(hf_sd: dict[str, torch.Tensor], width: int, layers: int, act: str, projection: bool):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64), max_position_embeddings=77, hidden_act=act,
        bos_token_id=BOS_TOKEN, eos_token_id=EOS_TOKEN, pad_token_id=1, projection_dim=width,
    )
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    model = cls(config).eval()
    nested = any(k.startswith("text_model.") for k in model.state_dict())
    weights = {(k if nested or not k.startswith("text_model.") else k.removeprefix("text_model.")): v.float()
               for k, v in hf_sd.items() if "position_ids" not in k}
    if not projection:
        weights.pop("text_projection.weight", None)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def _g_reference(hf_sd: dict[str, torch.Tensor], tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate hidden without final LN, projected pooled) of bigG by transformers."""
    model = _hf_model(hf_sd, G_WIDTH, G_LAYERS, "gelu", projection=True)
    with torch.no_grad():
        out = model(input_ids=tokens, output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


def test_clip_g_hf_file_matches_transformers(tmp_path: Path) -> None:
    hf_sd = tiny_clip_g_hf()
    path = write(hf_sd, tmp_path / "clip_g.safetensors")
    encoder = load_text_encoder_module(path, torch.float32)
    assert encoder.config.family == "clip_g" and encoder.config.projection_dim == G_WIDTH
    assert encoder.config.layers == G_LAYERS and encoder.config.pad_token == 0
    tokens = torch.cat([_ids(PROMPT, 0), _ids("blurry, lowres", 0)])
    ref_hidden, ref_pooled = _g_reference(hf_sd, tokens)
    hidden, pooled = encoder(tokens, -2, norm_hidden=False)
    assert (hidden - ref_hidden).abs().max().item() < 1e-4
    assert (pooled - ref_pooled).abs().max().item() < 1e-4
    # With the final layer norm (SD2's semantics) the hidden state differs: the flag is honoured.
    normed, _ = encoder(tokens, -2)
    assert (normed - ref_hidden).abs().max().item() > 1e-2


def test_clip_g_open_clip_layout_equals_hf_layout() -> None:
    hf_sd = tiny_clip_g_hf()
    from_hf = build_text_encoder(hf_sd, torch.float32)
    from_oc = build_text_encoder({"model." + k: v for k, v in clip_g_hf_to_open_clip(hf_sd).items()},
                                 torch.float32, family="clip_g")
    tokens = _ids(PROMPT, 0)
    for layer in (-2, -1, None):
        a, b = from_hf(tokens, layer, norm_hidden=False), from_oc(tokens, layer, norm_hidden=False)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_sdxl_checkpoint_conditioner_follows_comfyui_rule() -> None:
    sd = tiny_sdxl_state_dict()
    te = {k.removeprefix("conditioner."): v for k, v in sd.items() if k.startswith("conditioner.")}
    model = build_conditioner(te, "sdxl", torch.float32)
    assert isinstance(model, MultiTextEncoder) and set(model.towers()) == {"l", "g"}
    clip = CLIP(model)
    tokens = clip.tokenize(PROMPT)
    assert set(tokens) == {"l", "g"}
    assert tokens["l"][0][-1][0] == EOS_TOKEN and tokens["g"][0][-1][0] == 0  # L pads with end, G with 0
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, L_WIDTH + G_WIDTH) and pooled.shape == (1, G_WIDTH)
    l_hf = {k.removeprefix("conditioner.embedders.0.transformer."): v for k, v in sd.items()
            if k.startswith("conditioner.embedders.0.")}
    l_model = _hf_model(l_hf, L_WIDTH, 3, "quick_gelu", projection=False)
    with torch.no_grad():
        l_ref = l_model(input_ids=_ids(PROMPT, EOS_TOKEN), output_hidden_states=True).hidden_states[-2]
    g_oc = {k.removeprefix("conditioner.embedders.1.model."): v for k, v in sd.items()
            if k.startswith("conditioner.embedders.1.")}
    g_hf = _open_clip_to_hf(g_oc)
    g_ref, g_pooled = _g_reference(g_hf, _ids(PROMPT, 0))
    assert (cond[..., :L_WIDTH] - l_ref).abs().max().item() < 1e-4
    assert (cond[..., L_WIDTH:] - g_ref).abs().max().item() < 1e-4
    assert (pooled - g_pooled).abs().max().item() < 1e-4


def _open_clip_to_hf(oc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test-side inverse of the layout mapping (written independently of Loom's code path)."""
    hf = {"text_model.embeddings.token_embedding.weight": oc["token_embedding.weight"],
          "text_model.embeddings.position_embedding.weight": oc["positional_embedding"],
          "text_model.final_layer_norm.weight": oc["ln_final.weight"],
          "text_model.final_layer_norm.bias": oc["ln_final.bias"],
          "text_projection.weight": oc["text_projection"].t()}
    names = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(G_LAYERS):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for j, qkv in enumerate(oc[f"{src}attn.in_proj_{kind}"].chunk(3)):
                hf[f"{dst}self_attn.{'qkv'[j]}_proj.{kind}"] = qkv
            for a, b in names.items():
                hf[f"{dst}{b}.{kind}"] = oc[f"{src}{a}.{kind}"]
    return hf


def test_long_prompt_chunks_stay_in_step_and_weights_apply() -> None:
    te = {k.removeprefix("conditioner."): v for k, v in tiny_sdxl_state_dict().items()
          if k.startswith("conditioner.")}
    clip = CLIP(build_conditioner(te, "sdxl", torch.float32))
    long = ", ".join(["a red horse on a hill"] * 20)
    tokens = clip.tokenize(long)
    assert len(tokens["l"]) == len(tokens["g"]) == 2
    cond, _ = clip.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 154, L_WIDTH + G_WIDTH)
    plain, _ = clip.encode(PROMPT)
    weighted, _ = clip.encode("(a photograph:1.5) of an astronaut riding a horse")
    change = (plain - weighted).abs().amax(-1)[0]  # only the two weighted tokens move (in both towers' halves)
    assert change[1:3].min() > 0.1 and change[3:].max() < 1e-4 and change[0] < 1e-4
    # CLIP skip applies to both towers: layer -1 changes both halves.
    skipped = clip.clone()
    skipped.clip_layer(-1)
    last, _ = skipped.encode(PROMPT)
    assert not torch.allclose(last[..., :L_WIDTH], plain[..., :L_WIDTH])
    assert not torch.allclose(last[..., L_WIDTH:], plain[..., L_WIDTH:])
    assert clip.layer_idx is None


def test_textual_inversion_with_clip_l_and_clip_g_vectors(tmp_path: Path) -> None:
    te = {k.removeprefix("conditioner."): v for k, v in tiny_sdxl_state_dict().items()
          if k.startswith("conditioner.")}
    save_file({"clip_l": torch.randn(2, L_WIDTH), "clip_g": torch.randn(2, G_WIDTH)},
              str(tmp_path / "mystyle.safetensors"))
    clip = CLIP(build_conditioner(te, "sdxl", torch.float32), embedding_directories=[str(tmp_path)])
    tokens = clip.tokenize("embedding:mystyle horse")
    assert tokens["l"][0][1][0].shape == (L_WIDTH,) and tokens["g"][0][1][0].shape == (G_WIDTH,)
    assert len(tokens["l"][0]) == len(tokens["g"][0]) == 77
    cond, _ = clip.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, L_WIDTH + G_WIDTH)


def test_dual_files_either_order_and_bad_pairs(tmp_path: Path) -> None:
    l_path = write(tiny_clip_l_hf(), tmp_path / "clip_l.safetensors")
    g_path = write(tiny_clip_g_hf(), tmp_path / "clip_g.safetensors")
    a = load_dual_text_encoder_module(l_path, g_path, torch.float32)
    b = load_dual_text_encoder_module(g_path, l_path, torch.float32)
    ea, eb = CLIP(a).encode(PROMPT), CLIP(b).encode(PROMPT)
    assert torch.equal(ea[0], eb[0]) and torch.equal(ea[1], eb[1])
    assert a.clip_l.config.projection_dim is None  # SDXL ignores CLIP-L's projection
    with pytest.raises(CheckpointError, match="needs one CLIP-L and one CLIP-G.*CLIP-L \\(3 layers, width 128\\)"):
        load_dual_text_encoder_module(l_path, l_path, torch.float32)
