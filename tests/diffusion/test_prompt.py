"""Prompt syntax, chunking, textual-inversion files, and prompt weighting through real tiny text encoders."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.text.embeddings import list_embeddings, load_embedding
from diffusion.text.prompt import PromptTokenizer, parse_prompt_weights
from diffusion.text.text_encoders import CLIP, build_text_encoder
from diffusion.text.tokenizer import BOS_TOKEN, EOS_TOKEN, encode_text
from tests.fixtures.tiny_text_encoders import tiny_text_encoder_state_dict

CAT, DOG, COMMA = encode_text("cat")[0], encode_text("dog")[0], encode_text(",")[0]


def ids(chunk: list) -> list:
    return [t if isinstance(t, int) else "vec" for t, _ in chunk]


def weights(chunk: list) -> list[float]:
    return [w for _, w in chunk]


# ---------------------------------------------------------------- weight syntax


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a (b:1.5) ((c))", [("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", 1.21)]),
        ("(a (b) c)", [("a ", 1.1), ("b", 1.21), (" c", 1.1)]),
        ("((a:1.5) b)", [("a", 1.5), (" b", 1.1)]),  # an explicit weight replaces the inherited one
        ("(a:0.5)", [("a", 0.5)]),
        ("(a:b)", [("a:b", 1.1)]),  # not a number: the colon stays text
        ("(a:1.2:1.3)", [("a:1.2", 1.3)]),
        ("\\(not weighted\\) (w)", [("(not weighted) ", 1.0), ("w", 1.1)]),
        ("[a] b", [("[a] b", 1.0)]),  # square brackets mean nothing in ComfyUI
        ("a (b", [("a ", 1.0), ("(b", 1.0)]),  # unbalanced: literal text
        ("a) b", [("a) b", 1.0)]),
        ("", []),
    ],
)
def test_weight_syntax(text: str, expected: list) -> None:
    got = parse_prompt_weights(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


# ---------------------------------------------------------------- chunking


def test_short_prompt_is_one_chunk_padded_per_family() -> None:
    sd1 = PromptTokenizer(pad_token=EOS_TOKEN).tokenize("a photograph of an astronaut riding a horse")
    sd2 = PromptTokenizer(pad_token=0, embedding_size=1024).tokenize("a photograph of an astronaut riding a horse")
    assert len(sd1) == 1 and len(sd1[0]) == 77
    assert ids(sd1[0])[0] == BOS_TOKEN and ids(sd1[0]).index(EOS_TOKEN) == 9
    assert ids(sd1[0])[9:] == [EOS_TOKEN] * 68
    assert ids(sd2[0])[:10] == ids(sd1[0])[:10] and ids(sd2[0])[10:] == [0] * 67
    assert set(weights(sd1[0])) == {1.0}


def test_empty_prompt() -> None:
    tok = PromptTokenizer(pad_token=0)
    chunks = tok.tokenize("")
    assert chunks == [tok.empty_chunk()]
    assert ids(chunks[0])[:3] == [BOS_TOKEN, EOS_TOKEN, 0] and len(chunks[0]) == 77


@pytest.mark.parametrize("n, expected_chunks", [(75, 1), (76, 2), (150, 2), (151, 3)])
def test_chunk_count(n: int, expected_chunks: int) -> None:
    chunks = PromptTokenizer().tokenize("cat " * n)
    assert len(chunks) == expected_chunks and all(len(c) == 77 for c in chunks)
    assert sum(ids(c).count(CAT) for c in chunks) == n


def test_long_segment_is_cut_where_the_chunk_is_full() -> None:
    first, second = PromptTokenizer().tokenize("cat " * 100)
    assert ids(first) == [BOS_TOKEN] + [CAT] * 75 + [EOS_TOKEN]
    assert ids(second) == [BOS_TOKEN] + [CAT] * 25 + [EOS_TOKEN] * 51


def test_word_ids() -> None:
    (chunk,) = PromptTokenizer().tokenize("a (cat:1.2) dog", return_word_ids=True)
    assert [i for _, _, i in chunk[:6]] == [0, 1, 2, 3, 0, 0]
    assert [w for _, w, _ in chunk[:5]] == [1.0, 1.0, 1.2, 1.0, 1.0]


def test_short_segment_moves_whole_to_the_next_chunk() -> None:
    first, second = PromptTokenizer(pad_token=0).tokenize("cat " * 74 + "(dog dog dog:1.2)")
    assert ids(first) == [BOS_TOKEN] + [CAT] * 74 + [EOS_TOKEN, 0]
    assert ids(second)[:5] == [BOS_TOKEN, DOG, DOG, DOG, EOS_TOKEN]
    assert weights(second)[1:4] == [1.2] * 3 and weights(second)[4] == 1.0


def test_special_token_strings_and_cleanup() -> None:
    assert encode_text("Cat<|endoftext|>DOG") == [CAT, EOS_TOKEN, DOG]
    assert encode_text("  CAT \n\t dog ") == [CAT, DOG]


TOKENIZER_SAMPLES = [
    "a photograph of an astronaut riding a horse",
    "masterpiece,best quality,(1girl:1.2), 8k uhd, don't",
    "Café ÉTÉ naïve façade – “quotes” … a &amp; b",
    "emoji 🐱 and 日本語",
    "  lots   of\n\nspace\t ",
    "x<|endoftext|>y",
]


def test_tokenizer_matches_transformers_clip_tokenizer() -> None:
    """Oracle: transformers' CLIPTokenizer (what ComfyUI uses) built from the same bundled BPE table."""
    import gzip

    transformers = pytest.importorskip("transformers")
    from diffusion.text.tokenizer import MERGES, bundled_merges_path, clip_bpe

    merges = gzip.open(bundled_merges_path()).read().decode("utf-8").split("\n")[1: MERGES + 1]
    try:
        hf = transformers.CLIPTokenizer(vocab=dict(clip_bpe().encoder), merges=[tuple(m.split()) for m in merges])
    except TypeError:
        pytest.skip("this transformers version builds CLIPTokenizer only from files")
    assert hf.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [BOS_TOKEN, EOS_TOKEN]
    for text in TOKENIZER_SAMPLES:
        assert encode_text(text) == hf(text)["input_ids"][1:-1], text


def test_tokenizer_matches_open_clip_on_plain_text() -> None:
    """Oracle: open_clip's SimpleTokenizer (same table) where its clean-up agrees with ComfyUI's (no ftfy-fixable
    characters, no special-token strings)."""
    from open_clip.tokenizer import SimpleTokenizer

    from diffusion.text.tokenizer import _clean

    theirs = SimpleTokenizer()
    theirs.clean_fn = _clean
    for text in [t for t in TOKENIZER_SAMPLES if "<|" not in t] + ["supercalifragilistic hyperrealism 8k uhd",
                                                                   "naïve café, 東京 — ½ (x:1.2) aaaaaaa"]:
        assert encode_text(text) == theirs.encode(text), text


# ---------------------------------------------------------------- embeddings


@pytest.fixture()
def embedding_dir(tmp_path: Path) -> Path:
    torch.save({"string_to_param": {"*": torch.randn(2, 768)}, "name": "style", "step": 500}, tmp_path / "style.pt")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    save_file({"emb_params": torch.randn(3, 768)}, str(tmp_path / "sub" / "deeper" / "neg.safetensors"))
    torch.save(torch.randn(768), tmp_path / "plain.bin")
    torch.save({"string_to_param": {"*": torch.randn(1, 1024)}}, tmp_path / "sd2only.pt")
    return tmp_path


def test_embedding_file_layouts(embedding_dir: Path) -> None:
    a1111 = torch.load(embedding_dir / "style.pt", weights_only=True)["string_to_param"]["*"]
    assert torch.equal(load_embedding("style", [str(embedding_dir)], 768), a1111)
    assert torch.equal(load_embedding("style.pt", [str(embedding_dir)], 768), a1111)
    assert load_embedding("neg", [str(embedding_dir)], 768).shape == (3, 768)  # found in a subfolder
    assert load_embedding("plain", [str(embedding_dir)], 768).shape == (1, 768)
    assert load_embedding("sd2only", [str(embedding_dir)], 1024).shape == (1, 1024)
    assert list_embeddings([str(embedding_dir)]) == ["plain", "sd2only", "style", "sub/deeper/neg"]


def test_embedding_tokens_in_prompt(embedding_dir: Path) -> None:
    tok = PromptTokenizer(embedding_directories=[str(embedding_dir)])
    (chunk,) = tok.tokenize("a (embedding:style:1.2) embedding:neg, cat")
    assert ids(chunk)[:9] == [BOS_TOKEN, encode_text("a")[0], "vec", "vec", "vec", "vec", "vec", COMMA, CAT]
    assert weights(chunk)[2:4] == [1.2, 1.2] and weights(chunk)[4:7] == [1.0] * 3
    style = load_embedding("style", [str(embedding_dir)], 768)
    assert torch.equal(chunk[2][0], style[0]) and torch.equal(chunk[3][0], style[1])


def test_missing_or_wrong_size_embedding_warns_and_is_left_out(embedding_dir: Path, caplog) -> None:
    tok = PromptTokenizer(embedding_directories=[str(embedding_dir)])
    with caplog.at_level(logging.WARNING):
        (chunk,) = tok.tokenize("cat embedding:nothere embedding:sd2only dog")
    assert ids(chunk)[:4] == [BOS_TOKEN, CAT, DOG, EOS_TOKEN]
    assert "embedding:nothere" in caplog.text and "needs 768" in caplog.text


def test_embedding_cannot_escape_its_folder_or_run_code(tmp_path: Path, caplog) -> None:
    inside = tmp_path / "embeddings"
    inside.mkdir()
    torch.save(torch.randn(1, 768), tmp_path / "secret.pt")
    torch.save({"string_to_param": {"*": torch.randn(1, 768)}, "hook": print}, inside / "evil.pt")
    with caplog.at_level(logging.WARNING):
        assert load_embedding("../secret", [str(inside)], 768) is None
        assert load_embedding("evil", [str(inside)], 768) is None
    assert "refused" in caplog.text


def test_embeddings_disabled_keeps_the_text() -> None:
    (chunk,) = PromptTokenizer(embedding_directories=None).tokenize("embedding:style")
    assert ids(chunk)[1:5] == encode_text("embedding:style")


# ---------------------------------------------------------------- encoding through a real tiny text encoder


@pytest.fixture(scope="module")
def clip_sd1() -> CLIP:
    return CLIP(build_text_encoder(tiny_text_encoder_state_dict("sd1", seed=7)), embedding_directories=[])


def _raw(clip: CLIP, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    row = [BOS_TOKEN, *token_ids, EOS_TOKEN]
    row += [clip.model.config.pad_token] * (77 - len(row))
    with torch.no_grad():
        return clip.model(torch.tensor([row]), clip.layer_idx)


def test_weights_are_applied_relative_to_the_empty_prompt(clip_sd1: CLIP) -> None:
    a = encode_text("a")[0]
    cond, pooled = clip_sd1.encode("a (cat:1.5)")
    z, z_pooled = _raw(clip_sd1, [a, CAT])
    z_empty, _ = _raw(clip_sd1, [])
    expected = z.clone()
    expected[0, 2] = (z[0, 2] - z_empty[0, 2]) * 1.5 + z_empty[0, 2]
    assert (cond - expected).abs().max().item() <= 1e-5
    assert not torch.allclose(cond, z)
    assert torch.allclose(pooled, z_pooled, atol=1e-5)  # the pooled output is not weighted


def test_unweighted_and_empty_prompts(clip_sd1: CLIP) -> None:
    cond, pooled = clip_sd1.encode("a cat")
    z, z_pooled = _raw(clip_sd1, encode_text("a cat"))
    assert torch.allclose(cond, z, atol=1e-5) and torch.allclose(pooled, z_pooled, atol=1e-5)
    empty, _ = clip_sd1.encode("")
    assert empty.shape == (1, 77, 128) and torch.allclose(empty, _raw(clip_sd1, [])[0], atol=1e-5)


def test_long_prompt_concatenates_chunks_and_pools_the_first(clip_sd1: CLIP) -> None:
    cond, pooled = clip_sd1.encode("cat " * 100)
    assert cond.shape == (1, 154, 128) and pooled.shape == (1, 128)
    first, first_pooled = _raw(clip_sd1, [CAT] * 75)
    second, _ = _raw(clip_sd1, [CAT] * 25)
    assert torch.allclose(cond[:, :77], first, atol=1e-5) and torch.allclose(cond[:, 77:], second, atol=1e-5)
    assert torch.allclose(pooled, first_pooled, atol=1e-5)


def test_embedding_vector_acts_as_the_token_it_copies(tmp_path: Path) -> None:
    sd = tiny_text_encoder_state_dict("sd2", seed=8)
    clip = CLIP(build_text_encoder(sd), embedding_directories=[str(tmp_path)])
    cat_row = sd["cond_stage_model.model.token_embedding.weight"][CAT].float()
    torch.save({"string_to_param": {"*": cat_row[None]}}, tmp_path / "catlike.pt")
    via_embedding, pooled_embedding = clip.encode("a embedding:catlike")
    via_text, pooled_text = clip.encode("a cat")
    assert (via_embedding - via_text).abs().max().item() <= 1e-5
    assert (pooled_embedding - pooled_text).abs().max().item() <= 1e-5
    tokens = clip.tokenize("a embedding:catlike")
    assert list(tokens) == ["h"] and ids(tokens["h"][0])[3:5] == [EOS_TOKEN, 0]


def test_encode_from_tokens_forms(clip_sd1: CLIP) -> None:
    tokens = clip_sd1.tokenize("a cat")
    cond = clip_sd1.encode_from_tokens(tokens)
    cond2, pooled = clip_sd1.encode_from_tokens(tokens, return_pooled=True)
    as_dict = clip_sd1.encode_from_tokens(tokens, return_dict=True)
    ((cond3, extras),) = clip_sd1.encode_from_tokens_scheduled(tokens)
    assert torch.equal(cond, cond2) and torch.equal(cond, as_dict["cond"]) and torch.equal(cond, cond3)
    assert torch.equal(pooled, as_dict["pooled_output"]) and torch.equal(pooled, extras["pooled_output"])
    with_ids = clip_sd1.tokenize("a (cat:1.3)", return_word_ids=True)
    assert torch.equal(clip_sd1.encode_from_tokens(with_ids), clip_sd1.encode("a (cat:1.3)")[0])
