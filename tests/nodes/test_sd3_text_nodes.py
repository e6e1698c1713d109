"""SD3 text through the real executor on tiny files: TripleCLIPLoader, CLIPTextEncodeSD3 and its empty_padding,
CLIPLoader / DualCLIPLoader type sd3 with a T5 file, SD3 single files that carry their text encoders, a whole
txt2img with T5; bad input (no T5 tokenizer, a T5 file where only CLIP fits, a non-SD3 CLIP)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures.tiny_sd3 import tiny_sd3_state_dict
from tests.fixtures.tiny_sdxl import G_WIDTH, L_WIDTH, tiny_clip_g_hf, tiny_clip_l_hf, write
from tests.fixtures.tiny_t5 import tiny_t5_state_dict, write_tiny_t5, write_tiny_t5_tokenizer
from tests.nodes.sd_env import SDEnv
from tests.nodes.test_sd3_nodes import CKPT, sd3_txt2img

TE = ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors")


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    folder = tmp_path / "models" / "text_encoders"
    write(tiny_sd3_state_dict(), tmp_path / "models" / "checkpoints" / CKPT)
    write(tiny_clip_l_hf(), folder / TE[0])
    write(tiny_clip_g_hf(), folder / TE[1])
    write_tiny_t5(folder / TE[2])
    write_tiny_t5_tokenizer(folder / "t5_tokenizer" / "tokenizer.json")
    return env


def encode_sd3(clip_l: str, clip_g: str, t5xxl: str, empty_padding: str = "none", names: tuple = TE) -> dict:
    return {"1": {"class_type": "TripleCLIPLoader", "inputs": {f"clip_name{i + 1}": n for i, n in enumerate(names)}},
            "2": {"class_type": "CLIPTextEncodeSD3", "inputs": {"clip": ["1", 0], "clip_l": clip_l, "clip_g": clip_g,
                                                               "t5xxl": t5xxl, "empty_padding": empty_padding}}}


def test_node_declarations(env: SDEnv) -> None:
    info = env.registry.object_info()
    assert list(info["TripleCLIPLoader"]["input"]["required"]) == ["clip_name1", "clip_name2", "clip_name3"]
    enc = info["CLIPTextEncodeSD3"]
    assert list(enc["input"]["required"]) == ["clip", "clip_l", "clip_g", "t5xxl", "empty_padding"]
    assert enc["input"]["required"]["empty_padding"][0] == ["none", "empty_prompt"]
    assert enc["category"] == "advanced/conditioning" and info["TripleCLIPLoader"]["category"] == "advanced/loaders"


def test_triple_clip_encode_sd3(env: SDEnv) -> None:
    cond = env.value(encode_sd3("a cat", "a dog", "a photo of a cat"), "2")
    context, pooled = cond[0][0], cond[0][1]["pooled_output"]
    assert context.shape == (1, 154, 4096) and pooled.shape == (1, L_WIDTH + G_WIDTH)
    assert context[0, :77, :L_WIDTH + G_WIDTH].abs().max() > 0 and context[0, 77:].abs().max() > 0
    # Each tower reads its own prompt: another T5 prompt changes only the T5 part.
    other = env.value(encode_sd3("a cat", "a dog", "a red horse"), "2")[0][0]
    assert torch.equal(other[0, :77], context[0, :77]) and not torch.equal(other[0, 77:], context[0, 77:])
    # The three files in another order give the same model.
    shuffled = env.value(encode_sd3("a cat", "a dog", "a photo of a cat", names=(TE[2], TE[0], TE[1])), "2")
    assert torch.equal(shuffled[0][0], context)


def test_empty_padding(env: SDEnv) -> None:
    none = env.value(encode_sd3("", "", "a cat"), "2")
    assert none[0][0].shape == (1, 77, 4096) and not none[0][1]["pooled_output"].any()
    padded = env.value(encode_sd3("", "", "a cat", "empty_prompt"), "2")
    assert padded[0][0].shape == (1, 154, 4096) and padded[0][1]["pooled_output"].any()
    no_t5 = env.value(encode_sd3("a cat", "a cat", ""), "2")
    assert no_t5[0][0].shape == (1, 78, 4096)  # the empty T5 prompt is the end token alone
    nothing = env.value(encode_sd3("", "", ""), "2")
    assert nothing[0][0].shape == (1, 1, 4096)
    assert not nothing[0][1]["pooled_output"].any()


def test_cliploader_and_dualcliploader_take_t5(env: SDEnv) -> None:
    single = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": TE[2], "type": "sd3"}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 0]}}}
    cond = env.value(single, "2")
    assert cond[0][0].shape == (1, 77, 4096) and cond[0][1]["pooled_output"].shape == (1, 2048)
    dual = {"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": TE[2], "clip_name2": TE[1],
                                                             "type": "sd3"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 0]}}}
    context = env.value(dual, "2")[0][0]
    assert context.shape == (1, 154, 4096) and context[0, :77, :768].abs().max() == 0
    assert context[0, :77, 768:768 + G_WIDTH].abs().max() > 0


def test_t5_file_where_only_clip_fits(env: SDEnv) -> None:
    prompt = {"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": TE[0], "clip_name2": TE[2],
                                                               "type": "sdxl"}},
              "grab": {"class_type": "Grab", "inputs": {"value": ["1", 0]}}}
    result = env.run(prompt)
    assert result.status == "error" and result.error["node_type"] == "DualCLIPLoader"
    assert "t5xxl_fp16.safetensors: a T5 text encoder, but type sdxl takes CLIP files only" in \
        result.error["exception_message"]
    two_t5 = encode_sd3("a", "a", "a", names=(TE[2], TE[0], TE[2]))
    result = env.run({**two_t5, "grab": {"class_type": "Grab", "inputs": {"value": ["2", 0]}}})
    assert result.status == "error" and "at most one CLIP-L, one CLIP-G and one T5-XXL" in \
        result.error["exception_message"]


def test_missing_tokenizer_is_a_clear_error(env: SDEnv, tmp_path: Path) -> None:
    (tmp_path / "models" / "text_encoders" / "t5_tokenizer" / "tokenizer.json").unlink()
    result = env.run({**encode_sd3("a cat", "a cat", "a cat"), "grab": {"class_type": "Grab",
                                                                          "inputs": {"value": ["2", 0]}}})
    assert result.status == "error" and result.error["node_type"] == "CLIPTextEncodeSD3"
    assert "T5-XXL needs its tokenizer and none was found beside t5xxl_fp16.safetensors" in \
        result.error["exception_message"]
    # A tokenizer placed beside the weights later is found without reloading the model.
    write_tiny_t5_tokenizer(tmp_path / "models" / "text_encoders" / "t5xxl_fp16.tokenizer.json")
    assert env.value(encode_sd3("a cat", "a cat", "a cat"), "2")[0][0].shape == (1, 154, 4096)


def test_non_sd3_clip_refused(env: SDEnv) -> None:
    prompt = {"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": TE[0], "clip_name2": TE[1],
                                                               "type": "sdxl"}},
              "2": {"class_type": "CLIPTextEncodeSD3", "inputs": {"clip": ["1", 0], "clip_l": "a", "clip_g": "a",
                                                                 "t5xxl": "a", "empty_padding": "none"}},
              "grab": {"class_type": "Grab", "inputs": {"value": ["2", 0]}}}
    result = env.run(prompt)
    assert result.status == "error" and "needs an SD3 CLIP" in result.error["exception_message"]


def test_single_file_with_text_encoders_samples(env: SDEnv, tmp_path: Path) -> None:
    state = tiny_sd3_state_dict()
    state.update({f"text_encoders.clip_l.transformer.{k}": v for k, v in tiny_clip_l_hf().items()})
    state.update({f"text_encoders.clip_g.transformer.{k}": v for k, v in tiny_clip_g_hf().items()})
    state.update(tiny_t5_state_dict(prefix="text_encoders.t5xxl.transformer."))
    write(state, tmp_path / "models" / "checkpoints" / "sd3_incl_clips.safetensors")
    prompt = sd3_txt2img()
    prompt["1"]["inputs"]["ckpt_name"] = "sd3_incl_clips.safetensors"
    del prompt["10"]
    prompt["2"] = {"class_type": "CLIPTextEncodeSD3", "inputs": {"clip": ["1", 1], "clip_l": "an astronaut",
                                                                 "clip_g": "an astronaut", "t5xxl": "an astronaut",
                                                                 "empty_padding": "none"}}
    prompt["3"]["inputs"]["clip"] = ["1", 1]
    cond = env.value(prompt, "2")
    assert cond[0][0].shape == (1, 154, 4096)
    image = env.value(prompt, "7")
    assert image.shape == (1, 48, 64, 3) and torch.isfinite(image).all()
    # The same towers through TripleCLIPLoader give the same conditioning.
    triple = env.value(encode_sd3("an astronaut", "an astronaut", "an astronaut"), "2")
    assert torch.allclose(triple[0][0], cond[0][0], atol=1e-5)
