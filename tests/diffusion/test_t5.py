"""T5-XXL tower (diffusion/text/t5.py) and tokenizer (diffusion/text/t5_tokenizer.py) on a tiny config in the real key layout:
parity with transformers' T5EncoderModel, fp16/bf16/fp8/scaled-fp8 storage kept in memory, detection and prefixes,
ComfyUI's tokenizing rules, prompt weights and embeddings, SD3's joining of T5 to the CLIP part."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.files.assemble import load_clip_text_encoder_module, load_text_encoder_module, sd3_checkpoint_text_model
from diffusion.files.checkpoint import CheckpointError
from diffusion.text.clip_multi import MultiTextEncoder
from diffusion.text.t5 import T5Encoder, build_t5, empty_t5_chunk, encode_t5_weighted, is_t5
from diffusion.text.t5_tokenizer import T5PromptTokenizer, load_t5_tokenizer
from diffusion.text.text_encoders import CLIP
from tests.fixtures.tiny_sdxl import G_WIDTH, L_WIDTH, tiny_clip_g_hf, tiny_clip_l_hf
from tests.fixtures.tiny_t5 import TINY_T5, tiny_t5_reference, tiny_t5_state_dict, write_tiny_t5, \
    write_tiny_t5_tokenizer

IDS = torch.tensor([[5, 9, 17, 3, 1] + [0] * 72, [8, 8, 30, 12, 40] + [1] + [0] * 71])


def _reference_out(state: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """transformers' encoder with the given (rounded) weights, computed in fp32."""
    ref = tiny_t5_reference()
    full = {k: v.float() for k, v in state.items()}
    full["encoder.embed_tokens.weight"] = full["shared.weight"]
    ref.load_state_dict(full)
    with torch.no_grad():
        return ref(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_parity_with_transformers_and_storage_kept(tmp_path: Path, dtype: torch.dtype) -> None:
    path = write_tiny_t5(tmp_path / "t5xxl.safetensors", dtype=dtype)
    tower = load_text_encoder_module(path, torch.float32)
    assert isinstance(tower, T5Encoder) and tower.config == TINY_T5
    attn = tower.transformer.encoder.block[1].layer[0].SelfAttention
    assert attn.q.weight.dtype == dtype and tower.transformer.shared.weight.dtype == dtype
    assert tower.transformer.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == dtype
    out = tower(IDS)
    expected = _reference_out(tiny_t5_state_dict(dtype=dtype), IDS)
    assert out.dtype == torch.float32 and out.shape == (2, 77, 4096)
    assert (out - expected).abs().max() <= 1e-4
    assert expected.std() > 0.1  # not a flat output


def test_fp8_and_scaled_fp8_stay_fp8(tmp_path: Path) -> None:
    state = tiny_t5_state_dict(dtype=torch.float32)
    linear = [k for k in state if k.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight",
                                              "wi_1.weight", "wo.weight"))]
    fp8 = {k: v.to(torch.float8_e4m3fn) if k in linear else v for k, v in state.items()}
    save_file(fp8, str(tmp_path / "t5_fp8.safetensors"))
    tower = load_text_encoder_module(tmp_path / "t5_fp8.safetensors", torch.float32)
    assert tower.transformer.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == torch.float8_e4m3fn
    dequant = {k: v.float() for k, v in fp8.items()}
    assert (tower(IDS) - _reference_out(dequant, IDS)).abs().max() <= 1e-4

    scale = 0.05  # ComfyUI "scaled fp8": weight = stored · scale_weight
    scaled = {k: (v / scale).to(torch.float8_e4m3fn) if k in linear else v for k, v in state.items()}
    scaled.update({k[: -len("weight")] + "scale_weight": torch.tensor(scale) for k in linear})
    scaled["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(scaled, str(tmp_path / "t5_scaled.safetensors"))
    tower = load_text_encoder_module(tmp_path / "t5_scaled.safetensors", torch.float32)
    assert tower.transformer.encoder.block[0].layer[0].SelfAttention.k.weight.dtype == torch.float8_e4m3fn
    dequant = {k: (scaled[k].float() * scale if k in linear else v) for k, v in state.items()}
    out = tower(IDS)
    assert (out - _reference_out(dequant, IDS)).abs().max() <= 1e-4
    assert (out - _reference_out(state, IDS)).abs().max() < 0.5 * _reference_out(state, IDS).abs().max()


def test_detection_prefixes_and_decoder_keys() -> None:
    plain = tiny_t5_state_dict(dtype=torch.float32)
    assert is_t5(plain) and not is_t5({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(1)})
    inside = tiny_t5_state_dict(dtype=torch.float32, prefix="text_encoders.t5xxl.transformer.")
    inside["text_encoders.t5xxl.transformer.decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(16, 4096)
    a, b = build_t5(plain), build_t5(inside)
    assert torch.equal(a(IDS), b(IDS))
    broken = dict(plain)
    del broken["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    with pytest.raises(ValueError, match="missing"):
        build_t5(broken)


def test_intermediate_layer_goes_through_final_norm() -> None:
    tower = build_t5(tiny_t5_state_dict(dtype=torch.float32))
    ref = tiny_t5_reference()
    with torch.no_grad():
        states = []
        ref.encoder.block[0].register_forward_hook(lambda _m, _i, out: states.append(out[0]))
        ref(input_ids=IDS)
        expected = ref.encoder.final_layer_norm(states[0])
    assert (tower(IDS, layer_idx=-2) - expected).abs().max() <= 1e-4
    assert torch.equal(tower(IDS, layer_idx=-30), tower(IDS))  # beyond the depth: the last layer


def test_tokenizer_rules(tmp_path: Path) -> None:
    path = write_tiny_t5_tokenizer(tmp_path / "t5_tokenizer" / "tokenizer.json")
    tok = T5PromptTokenizer(tokenizer_paths=[tmp_path / "missing.json", path], embedding_size=4096)
    ids = load_t5_tokenizer(path).encode("a photo of a cat").ids
    assert ids[-1] == 1  # the file's post-processor appends </s>; ComfyUI cuts it off each piece and adds one
    (chunk,) = tok.tokenize("a photo of a cat")
    assert [t for t, _ in chunk] == ids[:-1] + [1] + [0] * (77 - len(ids))
    (weighted,) = tok.tokenize("a (red dog:1.5) photo")
    assert [w for _, w in weighted][:6] == [1.0, 1.5, 1.5, 1.0, 1.0, 1.0]
    long = tok.tokenize(" ".join(["big cat"] * 60))
    assert len(long) == 1 and len(long[0]) == 121 and long[0][120] == (1, 1.0)  # never cut, never split
    with_ids = tok.tokenize("a cat, a dog", return_word_ids=True)[0]
    assert {item[2] for item in with_ids[:-1]} <= {0, 1} and with_ids[-1][2] == 0
    with pytest.raises(ValueError, match="t5_tokenizer/tokenizer.json"):
        T5PromptTokenizer(tokenizer_paths=[tmp_path / "none.json"], source="t5xxl_fp16.safetensors").tokenize("a")


def _sd3_clip(tmp_path: Path) -> CLIP:
    write_tiny_t5_tokenizer(tmp_path / "t5_tokenizer" / "tokenizer.json")
    state = {f"text_encoders.clip_l.transformer.{k}": v for k, v in tiny_clip_l_hf().items()}
    state.update({f"text_encoders.clip_g.transformer.{k}": v for k, v in tiny_clip_g_hf().items()})
    state.update(tiny_t5_state_dict(prefix="text_encoders.t5xxl.transformer."))
    model = sd3_checkpoint_text_model(state, torch.float32, tmp_path / "sd3.safetensors")
    assert isinstance(model, MultiTextEncoder) and set(model.towers()) == {"l", "g", "t5xxl"}
    return CLIP(model)


def test_sd3_joins_t5_along_the_sequence(tmp_path: Path) -> None:
    clip = _sd3_clip(tmp_path)
    tokens = clip.tokenize("a photo of an astronaut riding a horse")
    assert set(tokens) == {"l", "g", "t5xxl"} and len(tokens["t5xxl"][0]) == 77
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 154, 4096) and pooled.shape == (1, L_WIDTH + G_WIDTH)
    assert cond[0, :77, L_WIDTH + G_WIDTH:].abs().max() == 0  # the CLIP part, zero-padded to 4096
    t5 = clip.model.t5xxl
    ids = torch.tensor([[t for t, _ in tokens["t5xxl"][0]]])
    assert torch.allclose(cond[0, 77:], t5(ids)[0], atol=1e-6)
    only_t5 = clip.encode_from_tokens({"l": [], "g": [], "t5xxl": tokens["t5xxl"]}, return_pooled=True)
    assert only_t5[0].shape == (1, 77, 4096) and not only_t5[1].any() and only_t5[1].shape == (1, 2048)
    empty_t5 = clip.encode_from_tokens({"l": tokens["l"], "g": tokens["g"], "t5xxl": []})
    assert empty_t5.shape == (1, 78, 4096)  # the empty T5 prompt: the end token alone


def test_t5_file_refused_where_only_clip_fits(tmp_path: Path) -> None:
    path = write_tiny_t5(tmp_path / "t5xxl_fp16.safetensors")
    with pytest.raises(CheckpointError, match="T5 text encoder, but type stable_diffusion takes CLIP files only"):
        load_clip_text_encoder_module(path, torch.float32, "stable_diffusion")


def test_prompt_weights_and_embeddings(tmp_path: Path) -> None:
    tokenizer = write_tiny_t5_tokenizer(tmp_path / "t5_tokenizer" / "tokenizer.json")
    tower = build_t5(tiny_t5_state_dict(dtype=torch.float32))
    rows = torch.randn(2, 4096, generator=torch.Generator().manual_seed(4))
    (tmp_path / "emb").mkdir()
    save_file({"t5xxl": rows, "clip_l": torch.zeros(2, 32)}, str(tmp_path / "emb" / "style.safetensors"))
    tok = T5PromptTokenizer(tokenizer_paths=[tokenizer], embedding_directories=[str(tmp_path / "emb")])

    chunks = tok.tokenize("a (red:1.5) cat")
    cond, pooled = encode_t5_weighted(tower, chunks)
    ids = torch.tensor([[t for t, _ in chunks[0]], [t for t, _ in empty_t5_chunk(77)]])
    z, z_empty = tower(ids)[0], tower(ids)[1]
    weights = torch.tensor([w for _, w in chunks[0]])[:, None]
    expected = torch.where(weights != 1.0, (z - z_empty) * weights + z_empty, z)
    assert pooled is None and torch.allclose(cond[0], expected, atol=1e-6)
    assert not torch.allclose(cond, encode_t5_weighted(tower, tok.tokenize("a red cat"))[0])

    (with_embedding,) = tok.tokenize("a embedding:style cat")
    assert torch.equal(with_embedding[1][0], rows[0]) and torch.equal(with_embedding[2][0], rows[1])
    out, _ = encode_t5_weighted(tower, [with_embedding])
    plain_ids = torch.tensor([[t if isinstance(t, int) else 0 for t, _ in with_embedding]])
    x = tower.embed(plain_ids)
    x[0, 1:3] = rows
    with torch.no_grad():
        expected = tower.transformer(inputs_embeds=x).last_hidden_state
    assert torch.allclose(out, expected, atol=1e-5)
