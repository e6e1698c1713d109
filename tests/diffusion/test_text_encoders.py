"""CLIP text towers: key layouts, shapes, ComfyUI layer semantics, and parity with independent implementations.

Oracles: transformers' `CLIPTextModel` for SD1 (same weights in the HF layout), open_clip's own `TextTransformer`
forward for SD2, and ComfyUI's recorded outputs on the SD1.5 reference checkpoint (slow).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from open_clip.transformer import QuickGELU, TextTransformer
from safetensors import safe_open
from safetensors.torch import load_file

from diffusion.text.text_encoders import (
    CLIP,
    SD1_CLIP_L,
    SD2_OPENCLIP_H,
    TextEncoder,
    build_text_encoder,
    detect_family,
    module_key_for_hf,
)
from diffusion.text.tokenizer import BOS_TOKEN, EOS_TOKEN, encode_text
from tests.fixtures.reference import reference_checkpoint
from tests.fixtures.tiny_text_encoders import TINY_LAYERS, tiny_text_encoder_state_dict

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
PROMPT = "a photograph of an astronaut riding a horse"


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _ids(text: str, pad: int, length: int = 77) -> torch.Tensor:
    ids = [BOS_TOKEN, *encode_text(text), EOS_TOKEN]
    return torch.tensor([ids + [pad] * (length - len(ids))])


def _batch(pad: int) -> torch.Tensor:
    return torch.cat([_ids(PROMPT, pad), _ids("blurry, lowres", pad), _ids("", pad)])


def _hf_clip(hf_sd: dict[str, torch.Tensor], width: int, layers: int):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=width // 64, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=BOS_TOKEN, eos_token_id=EOS_TOKEN, pad_token_id=1,
    )
    model = transformers.CLIPTextModel(config).eval()
    # transformers < 5 nests the tower under `text_model.` as the checkpoint does; 5.x keeps it at the top.
    nested = any(k.startswith("text_model.") for k in model.state_dict())
    weights = {k if nested else k.removeprefix("text_model."): v.float() for k, v in hf_sd.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not missing and all("position_ids" in k for k in unexpected)
    return model


def _sd1_parity(sd: dict[str, torch.Tensor], width: int, layers: int) -> float:
    """Max abs difference to transformers' CLIPTextModel over last layer, CLIP-skip layers and pooled output."""
    encoder = build_text_encoder(sd, torch.float32)
    hf = _hf_clip(_strip(sd, "cond_stage_model.transformer."), width, layers)
    tokens = _batch(EOS_TOKEN)
    with torch.no_grad():
        ref = hf(input_ids=tokens, output_hidden_states=True)
        worst = 0.0
        for layer_idx, ref_hidden in ((None, ref.last_hidden_state), (-1, ref.last_hidden_state),
                                      (-2, getattr(hf, "text_model", hf).final_layer_norm(ref.hidden_states[-2]))):
            hidden, pooled = encoder(tokens, layer_idx)
            worst = max(worst, (hidden - ref_hidden).abs().max().item())
            worst = max(worst, (pooled - ref.pooler_output).abs().max().item())
    return worst


def _open_clip_reference(oc_sd: dict[str, torch.Tensor], width: int, layers: int) -> TextTransformer:
    """An independent open_clip text tower (no Loom code) holding the SD2 weights as they are in the file."""
    model = TextTransformer(width=width, heads=width // 64, layers=layers, output_dim=width, output_tokens=True)
    model.load_state_dict({k: v.float() for k, v in oc_sd.items() if k != "logit_scale"}, strict=True)
    return model.eval()


def _sd2_parity(sd: dict[str, torch.Tensor], width: int, layers: int) -> float:
    """Max abs difference to open_clip's forward: penultimate (final-normed), last layer, projected pooled."""
    encoder = build_text_encoder(sd, torch.float32)
    ref = _open_clip_reference(_strip(sd, "cond_stage_model.model."), width, layers)
    tokens = _batch(0)
    with torch.no_grad():
        ref_pooled, ref_last = ref(tokens)
        ref_pen = ref.forward_intermediates(tokens, indices=[layers - 2], normalize_intermediates=True,
                                            output_fmt="NLC")["text_intermediates"][0]
        worst = 0.0
        for layer_idx, ref_hidden in ((None, ref_pen), (-2, ref_pen), (-1, ref_last)):
            hidden, pooled = encoder(tokens, layer_idx)
            worst = max(worst, (hidden - ref_hidden).abs().max().item(), (pooled - ref_pooled).abs().max().item())
    return worst


# ---------------------------------------------------------------- tiny configs (fast)


def test_tiny_sd1_matches_transformers_clip() -> None:
    sd = tiny_text_encoder_state_dict("sd1", seed=1, dtype=torch.float32)
    assert _sd1_parity(sd, 128, TINY_LAYERS) <= 1e-4


def test_tiny_sd2_matches_open_clip_forward() -> None:
    sd = tiny_text_encoder_state_dict("sd2", seed=2, dtype=torch.float32)
    assert _sd2_parity(sd, 128, TINY_LAYERS) <= 1e-4


def test_fp16_weights_compute_in_fp32_without_keeping_an_fp32_copy() -> None:
    sd16 = tiny_text_encoder_state_dict("sd1", seed=3, dtype=torch.float16)
    enc16 = build_text_encoder(sd16)
    enc32 = build_text_encoder({k: v.float() if v.is_floating_point() else v for k, v in sd16.items()})
    tokens = _batch(EOS_TOKEN)
    with torch.no_grad():
        h16, p16 = enc16(tokens)
        h32, p32 = enc32(tokens)
    assert h16.dtype == torch.float32
    assert (h16 - h32).abs().max().item() <= 1e-5 and (p16 - p32).abs().max().item() <= 1e-5
    assert {p.dtype for p in enc16.parameters()} == {torch.float16}


def test_family_detection_and_config_from_shapes() -> None:
    sd1 = tiny_text_encoder_state_dict("sd1")
    sd2 = tiny_text_encoder_state_dict("sd2")
    assert detect_family(sd1) == ("sd1", "cond_stage_model.transformer.")
    assert detect_family(_strip(sd2, "cond_stage_model.")) == ("sd2", "model.")
    enc = build_text_encoder(_strip(sd1, "cond_stage_model."), torch.float16)
    assert (enc.config.width, enc.config.layers, enc.config.heads, enc.config.family) == (128, 3, 2, "sd1")
    assert enc.config.projection_dim is None and enc.config.pad_token == EOS_TOKEN
    enc2 = build_text_encoder(sd2)
    assert enc2.config.projection_dim == 128 and enc2.config.default_layer_idx == -2 and enc2.config.pad_token == 0


def test_full_open_clip_file_with_a_vision_tower(caplog) -> None:
    """A whole open_clip model file: the text tower is found beside `visual.transformer.*`; extras are reported."""
    sd = _strip(tiny_text_encoder_state_dict("sd2", seed=6), "cond_stage_model.model.")
    del sd["logit_scale"]  # optional: only the contrastive loss uses it
    sd["visual.transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(6, 2)
    sd["visual.proj"] = torch.zeros(2, 2)
    with caplog.at_level("WARNING"):
        encoder = build_text_encoder(sd)
    assert encoder.config.family == "sd2" and encoder.config.layers == TINY_LAYERS
    assert "2 unused keys" in caplog.text and "visual.proj" in caplog.text


def test_hf_key_locations_for_weight_patches() -> None:
    """Every HF-layout weight has a place in the module; q/k/v are the right slices of the stacked projection."""
    sd = tiny_text_encoder_state_dict("sd1", seed=9)
    encoder = build_text_encoder(sd)
    own = encoder.state_dict()
    for key, tensor in _strip(sd, "cond_stage_model.transformer.").items():
        if key.endswith("position_ids"):
            assert module_key_for_hf(key, 128) is None
            continue
        target, offset = module_key_for_hf(key, 128)
        placed = own[target] if offset is None else own[target].narrow(*offset)
        assert torch.equal(placed, tensor), key
    assert module_key_for_hf("text_model.encoder.layers.0.self_attn.v_proj.bias", 128)[1] == (0, 256, 128)


def test_unknown_layout_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="found 2 keys such as decoder.conv_in.weight"):
        build_text_encoder({"decoder.conv_in.weight": torch.zeros(1), "encoder.conv_in.weight": torch.zeros(1)})


def test_token_ids_beyond_the_table_are_an_error() -> None:
    encoder = build_text_encoder(tiny_text_encoder_state_dict("sd1"))
    tokens = _ids("cat", EOS_TOKEN)
    tokens[0, 1] = 49408
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        encoder(tokens)
    hidden, _ = encoder(tokens, extra_embeddings=torch.zeros(1, 128))
    assert torch.isfinite(hidden).all()


def test_missing_weight_is_reported() -> None:
    sd = tiny_text_encoder_state_dict("sd2")
    del sd["cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match=r"missing.*resblocks\.1\.mlp\.c_fc\.bias"):
        build_text_encoder(sd)


def test_layer_index_semantics_follow_comfyui() -> None:
    enc = build_text_encoder(tiny_text_encoder_state_dict("sd1", seed=4), torch.float32)
    tokens = _ids(PROMPT, EOS_TOKEN)
    with torch.no_grad():
        last, pooled = enc(tokens)
        same = {idx: enc(tokens, idx)[0] for idx in (-1, TINY_LAYERS - 1, -(TINY_LAYERS + 1))}
        first, pooled_first = enc(tokens, -TINY_LAYERS)
        also_first = enc(tokens, 0)[0]
    for hidden in same.values():  # -1, the last index, and any index deeper than the tower: the last layer
        assert torch.equal(hidden, last)
    assert torch.equal(first, also_first) and not torch.allclose(first, last)
    assert torch.equal(pooled_first, pooled)  # the pooled output always comes from the final layer
    eos = tokens[0].tolist().index(EOS_TOKEN)
    assert eos == 9 and torch.equal(pooled[0], last[0, eos])


def test_clip_clone_shares_module_and_keeps_its_own_layer() -> None:
    clip = CLIP(build_text_encoder(tiny_text_encoder_state_dict("sd2", seed=5)), embedding_directories=[])
    skipped = clip.clone()
    skipped.clip_layer(-1)
    assert skipped.model is clip.model and clip.layer_idx is None and skipped.layer_idx == -1
    cond_default, pooled_default = clip.encode(PROMPT)
    cond_last, pooled_last = skipped.encode(PROMPT)
    with torch.no_grad():
        pen, _ = clip.model(_ids(PROMPT, 0), -2)
        last, _ = clip.model(_ids(PROMPT, 0), -1)
    assert torch.equal(cond_default, pen) and torch.equal(cond_last, last)
    assert torch.equal(pooled_default, pooled_last)
    assert cond_default.device.type == "cpu" and cond_default.dtype == torch.float32


def test_full_size_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        sd1 = TextEncoder(SD1_CLIP_L)
        sd2 = TextEncoder(SD2_OPENCLIP_H)
        oc = TextTransformer(width=1024, heads=16, layers=24, output_dim=1024)
    assert sum(p.numel() for p in sd1.parameters()) == 123_060_480
    # open_clip's own ViT-H/14 text tower plus the `logit_scale` scalar SD2 files carry.
    assert sum(p.numel() for p in sd2.parameters()) == sum(p.numel() for p in oc.parameters()) + 1


@pytest.mark.parametrize("config", [SD1_CLIP_L, SD2_OPENCLIP_H], ids=["clip_l", "openclip_h"])
def test_tower_has_open_clips_keys_and_numbers(config) -> None:
    """Oracle: open_clip_torch's own TextTransformer of the same size (Loom builds its own module, so that open_clip
    is not imported to encode a prompt): the same keys and shapes and, on the same weights, the same hidden states."""
    small = dataclasses.replace(config, layers=2)
    torch.manual_seed(0)
    oc = TextTransformer(width=small.width, heads=small.heads, layers=2, output_dim=small.projection_dim,
                         act_layer=QuickGELU if small.activation == "quick_gelu" else torch.nn.GELU).eval()
    loom = TextEncoder(small).eval()
    theirs = oc.state_dict()
    ours = loom.model.state_dict()
    assert {k: v.shape for k, v in ours.items() if k != "logit_scale"} == {k: v.shape for k, v in theirs.items()}
    loom.model.load_state_dict(theirs, strict=False)
    tokens = torch.tensor([[BOS_TOKEN, *encode_text("a photo of a cat"), EOS_TOKEN] + [EOS_TOKEN] * 8])
    mask = torch.full((tokens.shape[1],) * 2, float("-inf")).triu_(1)
    with torch.no_grad():
        want = oc.token_embedding(tokens) + oc.positional_embedding[: tokens.shape[1]]
        for block in oc.transformer.resblocks:
            want = block(want, attn_mask=mask)
        got, _ = loom(tokens, layer_idx=-1)
    torch.testing.assert_close(got, oc.ln_final(want), rtol=0, atol=1e-6)


@pytest.mark.parametrize("keys_file, prefix", [("sd15_keys.json", "transformer."), ("sd21_keys.json", "model.")])
def test_reference_key_lists_are_consumed(shared_dir: Path, keys_file: str, prefix: str) -> None:
    """Every text-encoder tensor of the real layouts loads (built on `meta`: no memory), and nothing is missing."""
    spec = json.loads((shared_dir / "reference" / keys_file).read_text())["tensors"]
    sd = {
        k[len("cond_stage_model."):]: torch.empty(shape, device="meta")
        for k, (shape, _dtype) in spec.items() if k.startswith("cond_stage_model.")
    }
    encoder = build_text_encoder(sd)
    params = {name: p.numel() for name, p in encoder.named_parameters()}
    used = sum(v.numel() for k, v in sd.items() if not k.endswith(("position_ids",)))
    assert sum(params.values()) == used
    assert all(k.startswith(prefix) for k in sd)


# ---------------------------------------------------------------- full-size reference checkpoints (slow)


def _text_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("cond_stage_model.")}


@pytest.mark.slow
def test_sd15_reference_matches_comfyui_outputs(shared_dir: Path) -> None:
    """ComfyUI's CLIPTextEncode outputs on the reference checkpoint, from fp16 weights computed in fp32."""
    sd = _text_tensors(reference_checkpoint(shared_dir, "sd15"))
    clip = CLIP(build_text_encoder(_strip(sd, "cond_stage_model."), torch.float16), embedding_directories=[])
    ref = load_file(str(shared_dir / "reference" / "p00_intermediates.safetensors"))
    for name, text in (("positive", PROMPT), ("negative", "blurry, lowres")):
        cond, pooled = clip.encode(text)
        cond_diff = (cond - ref[f"cond_{name}"]).abs().max().item()
        pooled_diff = (pooled - ref[f"pooled_{name}"]).abs().max().item()
        print(f"{name}: cond max abs diff {cond_diff:.3g}, pooled {pooled_diff:.3g}")
        assert cond.shape == ref[f"cond_{name}"].shape and cond_diff <= 1e-3 and pooled_diff <= 1e-3


@pytest.mark.slow
def test_sd15_reference_matches_transformers(shared_dir: Path) -> None:
    sd = _text_tensors(reference_checkpoint(shared_dir, "sd15"))
    worst = _sd1_parity(sd, 768, 12)
    print(f"SD1.5 reference vs transformers CLIPTextModel: max abs diff {worst:.3g}")
    assert worst <= 1e-4


@pytest.mark.slow
def test_sd21_reference_matches_open_clip(shared_dir: Path) -> None:
    sd = _text_tensors(reference_checkpoint(shared_dir, "sd21"))
    worst = _sd2_parity(sd, 1024, 24)
    print(f"SD2.1 reference vs open_clip TextTransformer: max abs diff {worst:.3g}")
    assert worst <= 1e-4
