"""LoraLoader and LoraLoaderModelOnly through the real executor on a tiny SD1.5 checkpoint and tiny LoRA files:
ComfyUI's declaration, patches that change the image, base weights bitwise intact after unloading or switching
strength, loaded weights equal to W + s·(α/r)·up@down, unknown keys reported."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures.tiny_loras import TARGETS_SD1, UNKNOWN_KEYS, write_tiny_lora
from tests.nodes.sd_env import SDEnv, txt2img

KOHYA, PEFT, LYCORIS = "kohya.safetensors", "peft.safetensors", "lycoris.safetensors"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("lora"))
    loras = env.base / "models" / "loras"
    env.files = {name: write_tiny_lora(loras / name, layout)  # type: ignore[attr-defined]
                 for name, layout in ((KOHYA, "kohya"), (PEFT, "peft"), (LYCORIS, "lycoris"))}
    return env


def with_lora(name: str, strength_model: float, strength_clip: float, **kw: Any) -> dict[str, Any]:
    prompt = txt2img(**kw)
    prompt["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": name,
                                                           "strength_model": strength_model,
                                                           "strength_clip": strength_clip}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    for node in ("6", "7"):
        prompt[node]["inputs"]["clip"] = ["10", 1]
    return prompt


def test_declarations_match_comfyui(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    lora = info["LoraLoader"]
    assert lora["display_name"] == "Load LoRA" and lora["category"] == "loaders"
    assert list(lora["input"]["required"]) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    options = lora["input"]["required"]["strength_model"][1]
    assert {k: options[k] for k in ("default", "min", "max", "step")} == {"default": 1.0, "min": -100.0,
                                                                          "max": 100.0, "step": 0.01}
    assert sorted(lora["input"]["required"]["lora_name"][0]) == sorted([KOHYA, LYCORIS, PEFT])
    assert lora["output"] == ["MODEL", "CLIP"]
    only = info["LoraLoaderModelOnly"]
    assert list(only["input"]["required"]) == ["model", "lora_name", "strength_model"] and only["output"] == ["MODEL"]


def _image(env: SDEnv, prompt: dict[str, Any]) -> torch.Tensor:
    return env.value(prompt, "8")


def test_lora_changes_the_image_and_unloading_restores_the_base(env: SDEnv) -> None:
    handle = env.value({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}}},
                       "4", 0)
    snapshot = {k: v.detach().clone() for k, v in handle.model.state_dict().items()}
    base = _image(env, txt2img())
    patched = _image(env, with_lora(KOHYA, 1.0, 1.0))
    assert (patched - base).abs().max() > 1e-3
    again = _image(env, txt2img())
    assert torch.equal(again, base)
    env.models.unload_all()
    for key, value in handle.model.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


def _delta(env: SDEnv, name: str, shape: torch.Size) -> torch.Tensor:
    sd = env.files[KOHYA]  # type: ignore[attr-defined]
    up, down = sd[name + ".lora_up.weight"].float(), sd[name + ".lora_down.weight"].float()
    return (up.flatten(1) @ down.flatten(1)).reshape(shape) * float(sd[name + ".alpha"]) / down.shape[0]


def test_loaded_weights_follow_the_strength_without_accumulating(env: SDEnv) -> None:
    unet_name = "lora_unet_down_blocks_1_attentions_1_proj_in"
    text_name = "lora_te_text_model_encoder_layers_2_self_attn_v_proj"
    unet_key, _ = TARGETS_SD1[unet_name]
    text_key, text_offset = TARGETS_SD1[text_name]
    outputs = {}
    for strength in (1.0, 0.5, -2.0):
        prompt = with_lora(KOHYA, strength, strength / 2)
        prompt = {"4": prompt["4"], "10": prompt["10"]}
        outputs[strength] = (env.value(prompt, "10", 0), env.value(prompt, "10", 1))
    env.models.unload_all()
    model, clip = outputs[1.0]
    base_unet = model.model.state_dict()[unet_key].detach().clone()
    base_text = clip.model.state_dict()[text_key].detach().clone()
    for strength in (1.0, 0.5, -2.0, 1.0):
        model, clip = outputs[strength]
        with env.models.use([model, clip.handle]):
            loaded_unet = model.model.state_dict()[unet_key].detach().cpu().float()
            loaded_text = clip.model.state_dict()[text_key].detach().cpu().float()
        expected = base_unet.float() + strength * _delta(env, unet_name, base_unet.shape)
        torch.testing.assert_close(loaded_unet, expected, rtol=1e-5, atol=1e-5)
        v_rows = loaded_text.narrow(*text_offset)
        expected_v = base_text.float().narrow(*text_offset) + strength / 2 * _delta(env, text_name, v_rows.shape)
        # The patch is summed in fp32 and stored in the text encoder's storage dtype (fp16 on a CPU, as ComfyUI).
        torch.testing.assert_close(v_rows.to(base_text.dtype), expected_v.to(base_text.dtype))
        q_rows = loaded_text.narrow(0, 0, text_offset[1])
        assert torch.equal(q_rows, base_text.float().narrow(0, 0, text_offset[1]))
    env.models.unload_all()
    assert torch.equal(model.model.state_dict()[unet_key], base_unet)
    assert torch.equal(clip.model.state_dict()[text_key], base_text)


def test_unknown_keys_are_reported(env: SDEnv, caplog: pytest.LogCaptureFixture) -> None:
    prompt = with_lora(KOHYA, 0.8, 0.8)
    with caplog.at_level(logging.WARNING, logger="nodes.lora"):
        env.value({"4": prompt["4"], "10": prompt["10"]}, "10", 0)
    reported = {r.getMessage().removeprefix("lora key not loaded: ") for r in caplog.records
                if r.getMessage().startswith("lora key not loaded")}
    assert reported == set(UNKNOWN_KEYS)


def test_zero_strengths_pass_the_inputs_through(env: SDEnv) -> None:
    prompt = with_lora(KOHYA, 0.0, 0.0)
    prompt = {"4": prompt["4"], "10": prompt["10"]}
    model = env.value(prompt, "10", 0)
    assert model.patches == {}
    assert env.value(prompt, "4", 0) is model


def test_model_only_patches_the_unet_and_reports_text_keys(env: SDEnv, caplog: pytest.LogCaptureFixture) -> None:
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": ["4", 0], "lora_name": KOHYA, "strength_model": 1.0}}
    prompt = {"4": prompt["4"], "10": prompt["10"]}
    with caplog.at_level(logging.WARNING, logger="nodes.lora"):
        model = env.value(prompt, "10", 0)
    assert len(model.patches) == 8 and all(k.startswith("diffusion_model.") for k in model.patches)
    reported = " ".join(r.getMessage() for r in caplog.records)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in reported


@pytest.mark.parametrize("name", [PEFT, LYCORIS])
def test_other_layouts_sample(env: SDEnv, name: str) -> None:
    base = _image(env, txt2img(steps=1))
    patched = _image(env, with_lora(name, 1.0, 1.0, steps=1))
    assert torch.isfinite(patched).all() and (patched - base).abs().max() > 1e-4


def test_file_cache_rereads_only_a_changed_file(tmp_path: Path) -> None:
    import os

    from nodes.lora import LoraFileCache

    path = tmp_path / "l.safetensors"
    write_tiny_lora(path, "peft", seed=1)
    cache = LoraFileCache()
    source, first = cache.read(path)
    assert cache.read(path)[1] is first
    write_tiny_lora(path, "peft", seed=2)
    os.utime(path, ns=(1, 1))  # a different stamp even on coarse-clock file systems
    new_source, second = cache.read(path)
    assert new_source != source and second is not first
    key = next(iter(second))
    assert not torch.equal(second[key], first[key])
