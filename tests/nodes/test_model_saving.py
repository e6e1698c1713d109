"""ModelSave, CLIPSave and LoraSave through the real executor on a tiny SD1.5 checkpoint and a tiny kohya LoRA:
saved files load back through UNETLoader / CLIPLoader with the LoRA baked in; a LoRA extracted from the difference
"checkpoint + LoRA − checkpoint" and applied again by LoraLoader gives back (nearly) the LoRA'd weights, and a
full_diff extraction exactly (to fp16)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from diffusion.adapters.lora_extract import extract_lora
from tests.fixtures.tiny_loras import write_tiny_lora
from tests.nodes.sd_env import CKPT, SDEnv

LORA = "kohya.safetensors"
WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("saving"))
    write_tiny_lora(env.base / "models" / "loras" / LORA, "kohya")
    return env


def with_lora(strength_model: float = 1.0, strength_clip: float = 1.0) -> dict[str, Any]:
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
            "l": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": LORA,
                                                         "strength_model": strength_model,
                                                         "strength_clip": strength_clip}}}


def state(env: SDEnv, handle: Any) -> dict[str, torch.Tensor]:
    with env.models.use([handle]):
        return {k: v.detach().cpu().float().clone() for k, v in handle.model.state_dict().items()}


def saved(env: SDEnv, pattern: str) -> Path:
    found = sorted((env.base / "output").glob(pattern))
    assert found, f"nothing saved matching output/{pattern}"
    return found[-1]


def run(env: SDEnv, prompt: dict[str, Any]) -> None:
    env.count += 1
    result = env.executor.execute(prompt, f"save{env.count}", extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})
    assert result.status == "success", result.error and result.error["exception_message"]


def test_model_save_loads_back_with_the_lora_baked_in(env: SDEnv) -> None:
    prompt = with_lora(0.7)
    prompt["s"] = {"class_type": "ModelSave", "inputs": {"model": ["l", 0], "filename_prefix": "diffusion_models/m"}}
    run(env, prompt)
    path = saved(env, "diffusion_models/m_*.safetensors")
    assert path.name == "m_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("model.diffusion_model.") for k in keys)
    assert json.loads(metadata["prompt"])["s"]["class_type"] == "ModelSave"
    assert json.loads(metadata["workflow"]) == WORKFLOW
    _copy_into(env, path, "diffusion_models", "m.safetensors")
    expected = state(env, env.value(with_lora(0.7), "l", 0))
    loaded = state(env, env.value({"u": {"class_type": "UNETLoader",
                                         "inputs": {"unet_name": "m.safetensors", "weight_dtype": "default"}}}, "u"))
    assert set(loaded) == set(expected)
    for key in loaded:
        torch.testing.assert_close(loaded[key], expected[key], rtol=0, atol=0)


def _copy_into(env: SDEnv, path: Path, folder: str, name: str) -> None:
    target = env.base / "models" / folder
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target / name)


def test_clip_save_loads_back_and_encodes_the_same(env: SDEnv) -> None:
    prompt = with_lora(1.0, 0.8)
    prompt["s"] = {"class_type": "CLIPSave", "inputs": {"clip": ["l", 1], "filename_prefix": "clip/te"}}
    run(env, prompt)
    path = saved(env, "clip/te_clip_l_*.safetensors")
    assert path.name == "te_clip_l_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert metadata["format"] == "pt" and json.loads(metadata["prompt"])["s"]["class_type"] == "CLIPSave"
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert all(k.startswith(("text_model.", "text_projection.")) for k in keys)
    _copy_into(env, path, "text_encoders", "te.safetensors")
    encode = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["c", 0]}}
    reference = env.value({**with_lora(1.0, 0.8), "c": {"class_type": "CLIPSetLastLayer",
                                                        "inputs": {"clip": ["l", 1], "stop_at_clip_layer": -1}},
                           "e": encode}, "e")
    again = env.value({"c": {"class_type": "CLIPLoader", "inputs": {"clip_name": "te.safetensors",
                                                                    "type": "stable_diffusion"}}, "e": encode}, "e")
    torch.testing.assert_close(again[0][0], reference[0][0], rtol=0, atol=1e-5)


def lora_diff_prompt(lora_type: str, rank: int) -> dict[str, Any]:
    prompt = with_lora(1.0, 1.0)
    prompt["dm"] = {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["l", 0], "model2": ["4", 0],
                                                                   "multiplier": 1.0}}
    prompt["dc"] = {"class_type": "CLIPMergeSubtract", "inputs": {"clip1": ["l", 1], "clip2": ["4", 1],
                                                                  "multiplier": 1.0}}
    prompt["s"] = {"class_type": "LoraSave", "inputs": {"filename_prefix": f"loras/x_{lora_type}", "rank": rank,
                                                        "lora_type": lora_type, "bias_diff": True,
                                                        "model_diff": ["dm", 0], "text_encoder_diff": ["dc", 0]}}
    return prompt


def reapplied(env: SDEnv, name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
              "r": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": name,
                                                           "strength_model": 1.0, "strength_clip": 1.0}}}
    model = env.value(prompt, "r", 0)
    clip = env.value(prompt, "r", 1)
    return state(env, model), state(env, clip.handle)


def changed_keys(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in after if not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("lora_type", ["standard", "full_diff"])
def test_extracted_lora_reapplied_gives_back_the_lora_weights(env: SDEnv, lora_type: str) -> None:
    run(env, lora_diff_prompt(lora_type, rank=4))
    path = saved(env, f"loras/x_{lora_type}_*.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    suffix = ".lora_up.weight" if lora_type == "standard" else ".diff"
    assert any(k.startswith("diffusion_model.") and k.endswith(suffix) for k in keys)
    assert any(k.startswith("text_encoders.clip_l.transformer.text_model.") and k.endswith(suffix) for k in keys)
    _copy_into(env, path, "loras", f"x_{lora_type}.safetensors")
    base_model = state(env, env.value(with_lora(), "4", 0))
    base_clip = state(env, env.value(with_lora(), "4", 1).handle)
    target_model = state(env, env.value(with_lora(), "l", 0))
    target_clip = state(env, env.value(with_lora(), "l", 1).handle)
    model, clip = reapplied(env, f"x_{lora_type}.safetensors")
    for base, target, got in ((base_model, target_model, model), (base_clip, target_clip, clip)):
        changed = changed_keys(base, target)
        assert changed and changed_keys(base, got) == changed  # exactly the LoRA's keys move
        for key in changed:
            want, delta = target[key] - base[key], got[key] - base[key]
            error = float((delta - want).norm() / want.norm())
            # full_diff: fp16 storage only. standard: ComfyUI clamps both factors to the 0.99 quantile of all their
            # entries, which on these small rank-4 layers clips the largest singular directions by up to ~35 %.
            limit, min_cosine = (2e-3, 0.9999) if lora_type == "full_diff" else (0.4, 0.95)
            cosine = float(torch.nn.functional.cosine_similarity(delta.flatten(), want.flatten(), dim=0))
            assert error < limit and cosine > min_cosine, (key, error, cosine)


def test_extract_lora_is_the_best_low_rank_factorisation() -> None:
    gen = torch.Generator().manual_seed(0)
    up, down = torch.randn(12, 3, generator=gen), torch.randn(3, 9, generator=gen)
    u, d = extract_lora(up @ down, rank=32, clamp_quantile=None)
    assert u.shape == (12, 9) and d.shape == (9, 9)  # the rank is capped at the matrix's smaller side
    conv = torch.randn(6, 2, generator=gen) @ torch.randn(2, 4 * 3 * 3, generator=gen)
    cu, cd = extract_lora(conv.reshape(6, 4, 3, 3), rank=2)
    assert cu.shape == (6, 2, 1, 1) and cd.shape == (2, 4, 3, 3)
    torch.testing.assert_close(u @ d, up @ down, rtol=0, atol=1e-4)  # an untouched rank-3 matrix: exact
    exact_u, exact_d = extract_lora(conv.reshape(6, 4, 3, 3), rank=2, clamp_quantile=None)
    torch.testing.assert_close(exact_u.flatten(1) @ exact_d.flatten(1), conv, rtol=0, atol=1e-4)
    # The clamp only ever shrinks entries.
    assert float(cu.abs().max()) <= float(exact_u.abs().max()) + 1e-6


def test_sd2_tower_in_the_hf_layout_reads_back_as_sd2() -> None:
    """CLIPSave writes SD2's OpenCLIP-H in the HF layout (ComfyUI's `clip_h` file): read back, it is an SD2 tower
    (recognised by its depth, as ComfyUI does) with the same encoding and projected pooled output."""
    from diffusion.files.merge import hf_text_layout
    from diffusion.text.text_encoders import CLIP, build_text_encoder
    from tests.fixtures.tiny_text_encoders import tiny_text_encoder_state_dict

    tower = build_text_encoder(tiny_text_encoder_state_dict("sd2", layers=24, dtype=torch.float32))
    assert tower.config.family == "sd2"
    local = tower.state_dict()
    hf = hf_text_layout(tower.config, local, "")
    hf["text_projection.weight"] = local["model.text_projection"].t().contiguous()
    again = build_text_encoder(hf)
    assert again.config.family == "sd2" and again.config.layers == 24
    assert again.config.projection_dim == tower.config.projection_dim
    with torch.no_grad():
        (cond_a, pooled_a), (cond_b, pooled_b) = CLIP(tower).encode("a red cube"), CLIP(again).encode("a red cube")
    torch.testing.assert_close(cond_b, cond_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled_b, pooled_a, rtol=0, atol=1e-5)
