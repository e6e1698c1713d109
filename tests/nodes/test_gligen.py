"""GLIGEN nodes through the real executor on tiny files in the real key layout.

Zero gates (alpha = 0) must leave sampling bitwise unchanged, non-zero gates change it; boxes are normalised by the
latent size and Fourier-embedded as a hand computation says; a box only changes the grounding tokens of its slot.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.adapters.gligen import Gligen, fourier_embed, gligen_patches, load_gligen, normalised_boxes
from diffusion.patcher import ModelHandle
from nodes.sampling import cond_models
from tests.fixtures.tiny_gligen import tiny_gligen_state_dict, write_tiny_gligen
from tests.nodes.sd_env import SDEnv, txt2img


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    return SDEnv(tmp_path)


def with_boxes(name: str, boxes: list[tuple[str, int, int, int, int]], cfg: float = 5.0) -> dict[str, Any]:
    """txt2img (32×32 pixels) with GLIGENTextBoxApply nodes chained on the positive prompt."""
    prompt = txt2img(cfg=cfg)
    prompt["10"] = {"class_type": "GLIGENLoader", "inputs": {"gligen_name": name}}
    previous = ["6", 0]
    for i, (text, width, height, x, y) in enumerate(boxes):
        node = str(11 + i)
        prompt[node] = {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": previous, "clip": ["4", 1], "gligen_textbox_model": ["10", 0], "text": text,
            "width": width, "height": height, "x": x, "y": y}}
        previous = [node, 0]
    prompt["3"]["inputs"]["positive"] = previous
    return prompt


def sampled(env: SDEnv, prompt: dict[str, Any]) -> torch.Tensor:
    return env.value(prompt, "3")["samples"]


def gligen_dir(env: SDEnv) -> Path:
    return env.base / "models" / "gligen"


def test_declarations_match_comfyui(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    apply = info["GLIGENTextBoxApply"]
    assert list(apply["input"]["required"]) == ["conditioning_to", "clip", "gligen_textbox_model", "text", "width",
                                                "height", "x", "y"]
    assert apply["input"]["required"]["width"][1] == {"default": 64, "min": 8, "max": 16384, "step": 8}
    assert apply["input"]["required"]["x"][1] == {"default": 0, "min": 0, "max": 16384, "step": 8}
    assert apply["output"] == ["CONDITIONING"] and apply["category"] == "conditioning/gligen"
    assert info["GLIGENLoader"]["output"] == ["GLIGEN"] and info["GLIGENLoader"]["category"] == "loaders"
    assert list(info["GLIGENLoader"]["input"]["required"]) == ["gligen_name"]


def test_text_box_apply_appends_boxes_in_latent_pixels(env: SDEnv) -> None:
    write_tiny_gligen(gligen_dir(env) / "g.safetensors")
    prompt = with_boxes("g.safetensors", [("a dog", 32, 16, 8, 24), ("a ball", 8, 8, 48, 0)])
    cond = env.value({k: prompt[k] for k in ("4", "6", "10", "11", "12")}, "12")
    kind, handle, boxes = cond[0][1]["gligen"]
    assert kind == "position" and isinstance(handle, ModelHandle) and isinstance(handle.model, Gligen)
    assert [b[1:] for b in boxes] == [(2, 4, 3, 1), (1, 1, 0, 6)]  # (h, w, y, x) = pixels // 8
    assert boxes[0][0].shape == (1, 128) and not torch.equal(boxes[0][0], boxes[1][0])
    assert cond_models(cond) == [handle]  # the sampler has the manager place the GLIGEN model


def test_zero_gates_leave_sampling_bitwise_unchanged(env: SDEnv) -> None:
    write_tiny_gligen(gligen_dir(env) / "zero.safetensors", alpha=0.0)
    write_tiny_gligen(gligen_dir(env) / "active.safetensors", alpha=0.5)
    boxes = [("a brown dog", 16, 16, 0, 16)]
    # cfg 1: one model call per step either way, so a zero-gated fuser must be an exact identity.
    assert torch.equal(sampled(env, with_boxes("zero.safetensors", boxes, 1.0)), sampled(env, txt2img(cfg=1.0)))
    # cfg 5: a GLIGEN cond runs in its own call (as in ComfyUI), not batched with the uncond: equal up to rounding.
    plain = sampled(env, txt2img())
    tolerance = 1e-5 * plain.abs().max().item()  # fp32 batch-size rounding, amplified by cfg over the steps
    torch.testing.assert_close(sampled(env, with_boxes("zero.safetensors", boxes)), plain, rtol=0, atol=tolerance)
    active = sampled(env, with_boxes("active.safetensors", boxes))
    assert (active - plain).abs().max() > 100 * tolerance


def test_box_placement_changes_sampling(env: SDEnv) -> None:
    write_tiny_gligen(gligen_dir(env) / "g.safetensors", alpha=None)
    left = sampled(env, with_boxes("g.safetensors", [("a dog", 16, 16, 0, 0)]))
    right = sampled(env, with_boxes("g.safetensors", [("a dog", 16, 16, 16, 0)]))
    assert (left - right).abs().max() > 1e-4


def test_fourier_embedding_and_box_normalisation_by_hand() -> None:
    pooled = torch.zeros(1, 128)
    # (h, w, y, x) in latent pixels on an 8 (high) × 16 (wide) latent.
    boxes = normalised_boxes([(pooled, 2, 4, 3, 8)], h=8, w=16)
    assert boxes.tolist() == [[0.5, 3 / 8, 0.75, 5 / 8]]
    emb = fourier_embed(boxes)
    assert emb.shape == (1, 64)
    for k in range(8):
        f = 100.0 ** (k / 8)
        for j, v in enumerate(boxes[0].tolist()):
            # per frequency: sin of the 4 coordinates, then cos of them.
            assert math.isclose(emb[0, 8 * k + j].item(), math.sin(f * v), abs_tol=1e-5)
            assert math.isclose(emb[0, 8 * k + 4 + j].item(), math.cos(f * v), abs_tol=1e-5)


def test_grounding_tokens_change_only_in_the_boxes_slot() -> None:
    model = load_gligen(tiny_gligen_state_dict(alpha=None))
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 128, generator=gen), torch.randn(1, 128, generator=gen)
    boxes, masks, emb = model.grounding_inputs(2, 8, 8, [(a, 4, 4, 0, 0), (b, 2, 2, 6, 6)])
    assert boxes.shape == (2, 30, 4) and masks[0].tolist() == [1.0, 1.0] + [0.0] * 28
    assert torch.equal(emb[1, 1], b[0]) and torch.equal(boxes[0, 1], torch.tensor([0.75, 0.75, 1.0, 1.0]))
    objs = model.position_net(boxes, masks, emb)
    moved = model.position_net(*model.grounding_inputs(2, 8, 8, [(a, 4, 4, 0, 0), (b, 2, 2, 0, 0)]))
    assert torch.equal(objs[:, 0], moved[:, 0]) and torch.equal(objs[:, 2:], moved[:, 2:])
    assert not torch.allclose(objs[:, 1], moved[:, 1])
    # Empty slots take the null features: their tokens equal those of a model given no boxes at all.
    empty = model.position_net(*model.grounding_inputs(2, 8, 8, []))
    torch.testing.assert_close(objs[:, 2:], empty[:, 2:], rtol=0, atol=0)


def test_middle_patch_runs_the_fuser_of_the_current_block() -> None:
    model = load_gligen(tiny_gligen_state_dict(alpha=0.5))
    x = torch.randn(1, 4, 8, 8)
    params = [(torch.randn(1, 128, generator=torch.Generator().manual_seed(2)), 4, 4, 0, 0)]
    patch = gligen_patches(("position", ModelHandle(model, kind="other"), params), x)["middle_patch"][0]
    tokens = torch.randn(1, 64, 32)
    assert torch.equal(patch(tokens, {"block": ("input", 3)}), tokens)  # no transformer there: untouched
    objs = model.position_net(*model.grounding_inputs(1, 8, 8, params))
    expected = model.fusers["input_blocks_1"](tokens, objs)
    assert torch.equal(patch(tokens, {"block": ("input", 1)}), expected)
    assert not torch.equal(expected, tokens)
