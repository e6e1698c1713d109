"""DiffusersLoader through the real executor on a real diffusers folder: the tiny SD1.5 checkpoint converted by
diffusers' own single-file conversion and written with `save_pretrained` (unet/, vae/), its HF text tower as
text_encoder/model.safetensors, and a model_index.json. Loaded back, every UNet, VAE and text-encoder weight equals
the checkpoint's, and txt2img gives the same image as CheckpointLoaderSimple on the original file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from diffusion.checkpoint import read_state_dict
from diffusion.vae import VAEConfig
from tests.fixtures.diffusers_oracle import diffusers_unet, diffusers_vae
from tests.fixtures.tiny_checkpoints import tiny_unet_config
from tests.nodes.sd_env import CKPT, SDEnv, txt2img

TEXT_PREFIX = "cond_stage_model.transformer."


def write_diffusers_folder(checkpoint: dict[str, torch.Tensor], folder: Path) -> None:
    checkpoint = {k: v.float() for k, v in checkpoint.items()}
    diffusers_unet(checkpoint, tiny_unet_config("sd15"), VAEConfig.tiny()).save_pretrained(folder / "unet")
    diffusers_vae(checkpoint, VAEConfig.tiny(), tiny_unet_config("sd15")).save_pretrained(folder / "vae")
    text = {k[len(TEXT_PREFIX):]: v.contiguous() for k, v in checkpoint.items() if k.startswith(TEXT_PREFIX)}
    (folder / "text_encoder").mkdir(parents=True)
    save_file(text, str(folder / "text_encoder" / "model.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "unet": ["diffusers", "UNet2DConditionModel"],
                                                         "vae": ["diffusers", "AutoencoderKL"],
                                                         "text_encoder": ["transformers", "CLIPTextModel"]}))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("diffusers"))
    checkpoint = read_state_dict(env.base / "models" / "checkpoints" / CKPT)
    write_diffusers_folder(checkpoint, env.base / "models" / "diffusers" / "sd" / "tiny")
    (env.base / "models" / "diffusers" / "notes").mkdir()  # a folder without model_index.json is not listed
    return env


def states(env: SDEnv, prompt: dict[str, Any], node: str) -> list[dict[str, torch.Tensor]]:
    out = []
    for index in range(3):
        value = env.value(prompt, node, index)
        handle = value if index == 0 else value.handle
        with env.models.use([handle]):
            out.append({k: v.detach().float().cpu().clone() for k, v in handle.model.state_dict().items()})
    return out


def test_lists_folders_with_a_model_index(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)["DiffusersLoader"]
    assert info["input"]["required"]["model_path"] == [["sd/tiny"]]
    assert info["output"] == ["MODEL", "CLIP", "VAE"] and info["category"] == "advanced/loaders/deprecated"


def test_weights_equal_the_checkpoints(env: SDEnv) -> None:
    loaded = states(env, {"d": {"class_type": "DiffusersLoader", "inputs": {"model_path": "sd/tiny"}}}, "d")
    reference = states(env, {"c": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}, "c")
    for got, want in zip(loaded, reference):
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_txt2img_matches_the_checkpoint(env: SDEnv) -> None:
    reference = env.value(txt2img(steps=2), "8")
    graph = txt2img(steps=2)
    graph["4"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": "sd/tiny"}}
    torch.testing.assert_close(env.value(graph, "8"), reference, rtol=0, atol=1e-6)


def test_a_missing_folder_is_named(env: SDEnv) -> None:
    result = env.run({"d": {"class_type": "DiffusersLoader", "inputs": {"model_path": "nope"}},
                      "g": {"class_type": "Grab", "inputs": {"value": ["d", 0]}}})
    assert result.status != "success"
    assert "nope" in json.dumps(result.error or result.node_errors)
