"""Merging and saving nodes through the real executor on two tiny SD1.5 checkpoints: merged weights checked against
the files' tensors, CLIP merges, CheckpointSave/VAESave files that load back through the real loaders (and sample
the same image) with ComfyUI's metadata."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from diffusion.files.checkpoint import read_state_dict
from diffusion.files.loading import load_checkpoint, load_vae_file
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.fixtures.tiny_loras import write_tiny_lora
from tests.nodes.sd_env import CKPT, SDEnv, txt2img

OTHER = "other-sd15.safetensors"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("merge"))
    write_tiny_checkpoint(env.base / "models" / "checkpoints" / OTHER, seed=1)
    write_tiny_lora(env.base / "models" / "loras" / "kohya.safetensors", "kohya")
    return env


@pytest.fixture(scope="module")
def files(env: SDEnv) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    folder = env.base / "models" / "checkpoints"
    return (read_state_dict(folder / CKPT, dtype=torch.float32), read_state_dict(folder / OTHER, dtype=torch.float32))


def loaders() -> dict[str, Any]:
    return {"a": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
            "b": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": OTHER}}}


def loaded_state(env: SDEnv, handle: Any) -> dict[str, torch.Tensor]:
    with env.models.use([handle]):
        return {k: v.detach().cpu().clone() for k, v in handle.model.state_dict().items()}


def unet_of(sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return sd["model." + key]


def test_merge_simple_is_ratio_weighted(env: SDEnv, files: tuple) -> None:
    prompt = loaders()
    prompt["m"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["a", 0], "model2": ["b", 0], "ratio": 0.3}}
    state = loaded_state(env, env.value(prompt, "m"))
    a, b = files
    keys = [k for k in state if k.startswith("diffusion_model.")]
    assert len(keys) > 100
    for key in keys:
        torch.testing.assert_close(state[key], 0.3 * unet_of(a, key) + 0.7 * unet_of(b, key), rtol=1e-6, atol=1e-6)


def test_merge_blocks_uses_comfyui_prefix_rule(env: SDEnv, files: tuple) -> None:
    prompt = loaders()
    prompt["m"] = {"class_type": "ModelMergeBlocks",
                   "inputs": {"model1": ["a", 0], "model2": ["b", 0], "input": 0.2, "middle": 0.5, "out": 0.9}}
    state = loaded_state(env, env.value(prompt, "m"))
    a, b = files
    for key, ratio in (("diffusion_model.input_blocks.4.1.proj_in.weight", 0.2),
                       ("diffusion_model.middle_block.0.in_layers.2.weight", 0.5),
                       ("diffusion_model.output_blocks.3.0.out_layers.3.weight", 0.9),
                       ("diffusion_model.out.2.weight", 0.9),
                       ("diffusion_model.time_embed.0.weight", 0.2)):  # no block name: the first ratio
        torch.testing.assert_close(state[key], ratio * unet_of(a, key) + (1 - ratio) * unet_of(b, key))


def test_subtract_then_add_gives_back_model1(env: SDEnv, files: tuple) -> None:
    prompt = loaders()
    prompt["s"] = {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["a", 0], "model2": ["b", 0],
                                                                  "multiplier": 2.0}}
    prompt["p"] = {"class_type": "ModelMergeAdd", "inputs": {"model1": ["s", 0], "model2": ["b", 0]}}
    diff = loaded_state(env, env.value(prompt, "s"))
    summed = loaded_state(env, env.value(prompt, "p"))
    a, b = files
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    torch.testing.assert_close(diff[key], 2.0 * unet_of(a, key) - 2.0 * unet_of(b, key))
    torch.testing.assert_close(summed[key], 2.0 * unet_of(a, key) - unet_of(b, key))


def test_clip_merges(env: SDEnv, files: tuple) -> None:
    a, b = files
    hf = "cond_stage_model.transformer.text_model.encoder.layers.1."
    cases = {"CLIPMergeSimple": ({"ratio": 0.25}, lambda x, y: 0.25 * x + 0.75 * y),
             "CLIPMergeSubtract": ({"multiplier": 0.5}, lambda x, y: 0.5 * x - 0.5 * y),
             "CLIPMergeAdd": ({}, lambda x, y: x + y)}
    for class_type, (inputs, rule) in cases.items():
        prompt = loaders()
        prompt["c"] = {"class_type": class_type, "inputs": {"clip1": ["a", 1], "clip2": ["b", 1], **inputs}}
        clip = env.value(prompt, "c")
        state = loaded_state(env, clip.handle)
        q = state["model.transformer.resblocks.1.attn.in_proj_weight"][:128]
        torch.testing.assert_close(q, _stored_rule(rule, a[hf + "self_attn.q_proj.weight"],
                                                   b[hf + "self_attn.q_proj.weight"], q.dtype))
        fc2 = state["model.transformer.resblocks.1.mlp.c_proj.bias"]
        torch.testing.assert_close(fc2, _stored_rule(rule, a[hf + "mlp.fc2.bias"], b[hf + "mlp.fc2.bias"], fc2.dtype))


def _stored_rule(rule, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The merge rule as Loom (and ComfyUI) applies it: on the weights as stored (fp16 text encoders on a CPU),
    summed in fp32, then stored again in that dtype."""
    return rule(x.to(dtype).float(), y.to(dtype).float()).to(dtype)


def _saved(env: SDEnv, folder: str) -> Path:
    found = sorted((env.base / "output" / folder).glob("*.safetensors"))
    assert found, f"nothing saved in output/{folder}"
    return found[-1]


def test_checkpoint_save_round_trip(env: SDEnv) -> None:
    graph = txt2img(steps=2)
    graph["b"] = loaders()["b"]
    graph["l"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                         "lora_name": "kohya.safetensors", "strength_model": 0.8,
                                                         "strength_clip": 0.6}}
    graph["m"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["l", 0], "model2": ["b", 0], "ratio": 0.6}}
    graph["3"]["inputs"]["model"] = ["m", 0]
    for node in ("6", "7"):
        graph[node]["inputs"]["clip"] = ["l", 1]
    graph["save"] = {"class_type": "CheckpointSave", "inputs": {"model": ["m", 0], "clip": ["l", 1], "vae": ["4", 2],
                                                                "filename_prefix": "checkpoints/merged"}}
    workflow = {"nodes": [], "links": [], "version": 0.4}
    env.count += 1
    result = env.executor.execute({**graph, "grab": {"class_type": "Grab", "inputs": {"value": ["8", 0]}}},
                                  f"save{env.count}", extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result.status == "success", result.error
    image = env.grabbed[-1]
    path = _saved(env, "checkpoints")
    assert path.name == "merged_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["prompt"])["m"]["class_type"] == "ModelMergeSimple"
    assert json.loads(metadata["workflow"]) == workflow
    loaded = load_checkpoint(path)
    assert loaded.report.unknown == [] and loaded.text_encoder is not None and loaded.vae is not None
    shutil.copy(path, env.base / "models" / "checkpoints" / "merged.safetensors")
    again = env.value(txt2img(ckpt="merged.safetensors", steps=2), "8")
    torch.testing.assert_close(again, image, rtol=0, atol=1e-5)


def test_vae_save_loads_back(env: SDEnv) -> None:
    prompt = loaders()
    prompt["v"] = {"class_type": "VAESave", "inputs": {"vae": ["a", 2], "filename_prefix": "vae/tiny"}}
    env.ok(prompt)
    path = _saved(env, "vae")
    vae = load_vae_file(path)
    reference = read_state_dict(env.base / "models" / "checkpoints" / CKPT, dtype=torch.float32)
    for key, value in vae.model.state_dict().items():
        assert torch.equal(value.float(), reference["first_stage_model." + key]), key
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["prompt"])["v"]["class_type"] == "VAESave"


def test_merge_reads_the_other_models_base_weights_while_it_is_loaded_patched(env: SDEnv, files: tuple) -> None:
    """model2 + LoRA is still loaded (patched in place) when the merge of model1 with that clone is loaded: the
    merge must use model2's base weights plus the LoRA once, not the patched weights plus the LoRA again."""
    prompt = loaders()
    prompt["l"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["b", 0],
                                                                   "lora_name": "kohya.safetensors",
                                                                   "strength_model": 1.0}}
    prompt["m"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["a", 0], "model2": ["l", 0],
                                                                "ratio": 0.5}}
    env.models.unload_all()
    lora_model = env.value(prompt, "l")
    key = "diffusion_model.input_blocks.5.1.proj_in.weight"
    expected_other = lora_model.patched_copy_of(key).float()
    merged = env.value(prompt, "m")
    with env.models.use([lora_model]):  # leaves model2's module patched in place (CPU policy)
        pass
    state = loaded_state(env, merged)
    a, _ = files
    expected = 0.5 * unet_of(a, key) + 0.5 * expected_other
    torch.testing.assert_close(state[key], expected)


def test_merge_reader_supplies_base_weights(env: SDEnv, files: tuple) -> None:
    """With a base-weight reader (what the manager's `base_weight` provides), a merge ignores the other module's
    in-place patches."""
    from diffusion.files.merge import merge_into

    prompt = loaders()
    prompt["l"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["b", 0],
                                                                   "lora_name": "kohya.safetensors",
                                                                   "strength_model": 1.0}}
    env.models.unload_all()
    model_a, lora_model = env.value(prompt, "a"), env.value(prompt, "l")
    base = {k: v.detach().clone() for k, v in lora_model.model.state_dict().items()}
    key = "diffusion_model.input_blocks.5.1.proj_in.weight"
    expected_other = lora_model.patched_copy_of(key).float()
    merged = merge_into(model_a, lora_model, lambda k: (0.5, 0.5), "diffusion_model.", reader=lambda m, k: base[k])
    with env.models.use([lora_model]):  # model2's module now holds its patched weights
        pass
    state = loaded_state(env, merged)
    torch.testing.assert_close(state[key], 0.5 * unet_of(files[0], key) + 0.5 * expected_other)
    env.models.unload_all()


@pytest.mark.parametrize("class_type", ["ModelMergeSD1", "ModelMergeSD2"])
def test_model_merge_sd1_has_one_ratio_per_block(env: SDEnv, files: tuple, class_type: str) -> None:
    ratios = {"time_embed.": 0.1, "input_blocks.4.": 0.2, "input_blocks.1.": 0.3, "middle_block.0.": 0.5,
              "output_blocks.3.": 0.9, "out.": 0.7}
    info = env.registry.object_info(env.folders)[class_type]
    names = info["input_order"]["required"][2:]
    assert len(names) == 2 + 12 + 3 + 12 + 1 and names[0] == "time_embed." and names[-1] == "out."
    assert info["category"] == "advanced/model_merging/model_specific"
    inputs = {name: ratios.get(name, 1.0) for name in names}
    prompt = loaders()
    prompt["m"] = {"class_type": class_type, "inputs": {"model1": ["a", 0], "model2": ["b", 0], **inputs}}
    state = loaded_state(env, env.value(prompt, "m"))
    a, b = files
    checked = 0
    for key, ratio in (("diffusion_model.input_blocks.4.1.proj_in.weight", 0.2),
                       ("diffusion_model.input_blocks.1.0.in_layers.2.weight", 0.3),
                       ("diffusion_model.middle_block.0.in_layers.2.weight", 0.5),
                       ("diffusion_model.output_blocks.3.0.out_layers.3.weight", 0.9),
                       ("diffusion_model.out.2.weight", 0.7),
                       ("diffusion_model.time_embed.0.weight", 0.1),
                       ("diffusion_model.output_blocks.0.0.out_layers.3.weight", 1.0)):
        if key in state:  # the tiny UNet has fewer blocks than SD1's twelve
            checked += 1
            torch.testing.assert_close(state[key], ratio * unet_of(a, key) + (1 - ratio) * unet_of(b, key))
    assert checked >= 5
