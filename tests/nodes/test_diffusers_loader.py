"""DiffusersLoader through the real executor on a real diffusers folder: the tiny SD1.5 checkpoint converted by
diffusers' own single-file conversion and written with `save_pretrained` (unet/, vae/), its HF text tower as
text_encoder/model.safetensors, and a model_index.json. Loaded back, every UNet, VAE and text-encoder weight equals
the checkpoint's, and txt2img gives the same image as CheckpointLoaderSimple on the original file. An SDXL folder
(a random diffusers UNet in the SDXL layout, two text towers) loads as SDXL and its UNet computes what diffusers'
does."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from diffusion.files.checkpoint import read_state_dict
from diffusion.networks.vae import VAEConfig
from tests.fixtures.diffusers_oracle import diffusers_unet, diffusers_vae
from diffusion.families.sdxl import size_embeddings
from tests.fixtures.tiny_checkpoints import tiny_unet_config, tiny_vae_state_dict
from tests.fixtures.tiny_sdxl import G_WIDTH, XL_ADM, XL_CONTEXT, tiny_clip_g_hf, tiny_clip_l_hf
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
    choices = info["input"]["required"]["model_path"][0]
    assert "sd/tiny" in choices and not any(c.startswith("notes") for c in choices)
    assert set(choices) <= {"sd/tiny", "xl"}  # "xl" when the SDXL test ran first
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


def write_sdxl_folder(folder: Path) -> torch.nn.Module:
    """An SDXL diffusers folder: a random tiny diffusers UNet (SDXL layout) saved with save_pretrained, the tiny
    VAE through diffusers, CLIP-L and bigG text towers in the HF layout. Returns the diffusers UNet."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 1, 1), cross_attention_dim=XL_CONTEXT,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=XL_ADM, norm_num_groups=32).eval()
    unet.save_pretrained(folder / "unet")
    vae = {f"first_stage_model.{k}": v.float() for k, v in tiny_vae_state_dict().items()}
    diffusers_vae(vae, VAEConfig.tiny()).save_pretrained(folder / "vae")
    for part, tensors in (("text_encoder", tiny_clip_l_hf()), ("text_encoder_2", tiny_clip_g_hf())):
        (folder / part).mkdir(parents=True)
        save_file(tensors, str(folder / part / "model.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return unet


def test_sdxl_folder(env: SDEnv) -> None:
    theirs = write_sdxl_folder(env.base / "models" / "diffusers" / "xl")
    prompt = {"d": {"class_type": "DiffusersLoader", "inputs": {"model_path": "xl"}}}
    model, clip = env.value(prompt, "d", 0), env.value(prompt, "d", 1)
    assert model.model.family == "sdxl" and set(clip.model.towers()) == {"l", "g"}
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, XL_CONTEXT, generator=gen)
    pooled = torch.randn(2, G_WIDTH, generator=gen)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0]] * 2)
    y = torch.cat([pooled, torch.cat([size_embeddings(row.tolist()) for row in time_ids])], dim=1)
    t = torch.tensor([999.0, 421.0])
    with env.models.use([model]), torch.no_grad():
        ours = model.model.diffusion_model
        got = ours(x.to(ours.dtype), t, context.to(ours.dtype), y=y.to(ours.dtype)).float()
        expected = theirs(x, t, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    assert (got - expected).abs().max().item() < 1e-4
    encoded = env.value({**prompt, "e": {"class_type": "CLIPTextEncode",
                                         "inputs": {"text": "a red cube", "clip": ["d", 1]}}}, "e")
    assert encoded[0][0].shape[-1] == XL_CONTEXT and encoded[0][1]["pooled_output"].shape[-1] == G_WIDTH


def test_sd2_text_encoder_gets_its_last_block_back() -> None:
    """Diffusers' SD2 text_encoder holds 23 of OpenCLIP-H's 24 blocks; the conversion repeats the last one so the
    default penultimate layer is the file's last block (meta tensors: only names and shapes matter here)."""
    from diffusion.files.diffusers_convert import complete_openclip_h

    def tower(layers: int, width: int) -> dict[str, torch.Tensor]:
        sd = {"text_model.embeddings.token_embedding.weight": torch.empty(49408, width, device="meta")}
        for i in range(layers):
            sd[f"text_model.encoder.layers.{i}.mlp.fc1.weight"] = torch.empty(4 * width, width, device="meta")
        return sd

    sd2 = complete_openclip_h(tower(23, 1024))
    assert "text_model.encoder.layers.23.mlp.fc1.weight" in sd2
    assert sd2["text_model.encoder.layers.23.mlp.fc1.weight"] is sd2["text_model.encoder.layers.22.mlp.fc1.weight"]
    for layers, width in ((12, 768), (24, 1024), (23, 768)):
        assert complete_openclip_h(tower(layers, width)).keys() == tower(layers, width).keys()
