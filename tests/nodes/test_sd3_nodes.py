"""SD3 through the real executor on tiny files: CheckpointLoaderSimple on an MMDiT checkpoint, DualCLIPLoader type
sd3, EmptySD3LatentImage, ModelSamplingSD3 / ModelSamplingAuraFlow, KSampler with flow sampling, VAEDecode of the
16-channel VAE; bad input (a 4-channel latent, an unknown shift)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.sampling.model_sampling_flow import FlowSampling
from tests.fixtures.tiny_sd3 import write_tiny_sd3
from tests.fixtures.tiny_sdxl import G_WIDTH, L_WIDTH, tiny_clip_g_hf, tiny_clip_l_hf, write
from tests.nodes.sd_env import SDEnv

CKPT = "tiny-sd35m.safetensors"


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write_tiny_sd3(tmp_path / "models" / "checkpoints" / CKPT)
    write(tiny_clip_l_hf(), tmp_path / "models" / "text_encoders" / "clip_l.safetensors")
    write(tiny_clip_g_hf(), tmp_path / "models" / "text_encoders" / "clip_g.safetensors")
    return env


def sd3_txt2img(latent_node: dict | None = None, sampling: str = "ModelSamplingSD3", shift: float = 3.0) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "10": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                          "clip_name2": "clip_g.safetensors", "type": "sd3"}},
        "4": latent_node or {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48,
                                                                             "batch_size": 1}},
        "6": {"class_type": sampling, "inputs": {"model": ["1", 0], "shift": shift}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "an astronaut riding a horse", "clip": ["10", 0]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, lowres", "clip": ["10", 0]}},
        "5": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 3, "cfg": 4.5, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["6", 0],
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "sd3"}},
    }


def test_empty_sd3_latent(env: SDEnv) -> None:
    latent = env.value({"4": {"class_type": "EmptySD3LatentImage",
                              "inputs": {"width": 64, "height": 48, "batch_size": 2}}}, "4")
    assert latent["samples"].shape == (2, 16, 6, 8) and not latent["samples"].any()


def test_sd3_text_conditioning(env: SDEnv) -> None:
    cond = env.value(sd3_txt2img(), "2")
    context, pooled = cond[0][0], cond[0][1]["pooled_output"]
    assert context.shape == (1, 77, 4096) and pooled.shape == (1, L_WIDTH + G_WIDTH)
    assert context[0, :, L_WIDTH + G_WIDTH:].abs().max() == 0 and context[0, :, :L_WIDTH + G_WIDTH].abs().max() > 0


def test_sd3_txt2img_runs_and_is_deterministic(env: SDEnv) -> None:
    env.ok(sd3_txt2img())
    image = env.value(sd3_txt2img(), "7")
    assert image.shape == (1, 48, 64, 3) and torch.isfinite(image).all()
    again = env.value(sd3_txt2img(), "7")
    assert torch.equal(image, again)
    other = env.value(sd3_txt2img(shift=1.0), "7")
    assert not torch.equal(image, other)


def test_model_sampling_nodes_patch_flow_schedules(env: SDEnv) -> None:
    sd3 = env.value(sd3_txt2img(), "6")
    aura = env.value(sd3_txt2img(sampling="ModelSamplingAuraFlow", shift=1.73), "6")
    ms, ms_aura = sd3.object_patches["model_sampling"], aura.object_patches["model_sampling"]
    assert isinstance(ms, FlowSampling) and ms.shift == 3.0 and float(ms.timestep(torch.tensor(0.5))) == 500.0
    assert ms_aura.shift == 1.73 and float(ms_aura.timestep(torch.tensor(0.5))) == 0.5


def test_four_channel_latent_is_refused(env: SDEnv) -> None:
    # An SD1.5-style latent with content (an empty one is widened to 16 channels, as ComfyUI does).
    prompt = sd3_txt2img({"class_type": "LatentFromBatch", "inputs": {"samples": ["40", 0], "batch_index": 0,
                                                                     "length": 1}})
    prompt["40"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["41", 0], "vae": ["42", 2]}}
    prompt["41"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                           "color": 0x808080}}
    prompt["42"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}}
    result = env.run(prompt)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert result.error["node_type"] == "KSampler" and "latent_image has 4 channels" in message and "16" in message
    env.ok(sd3_txt2img())  # nothing else was affected


def _with_slg(layers: str, scale: float) -> dict:
    prompt = sd3_txt2img()
    prompt["11"] = {"class_type": "SkipLayerGuidanceSD3", "inputs": {"model": ["6", 0], "layers": layers,
                                                                     "scale": scale, "start_percent": 0.0,
                                                                     "end_percent": 1.0}}
    prompt["5"]["inputs"]["model"] = ["11", 0]
    return prompt


def test_skip_layer_guidance(env: SDEnv) -> None:
    plain = env.value(sd3_txt2img(), "7")
    assert torch.equal(env.value(_with_slg("1", 0.0), "7"), plain)
    guided = env.value(_with_slg("1", 3.0), "7")
    assert not torch.equal(guided, plain) and torch.isfinite(guided).all()
    result = env.run(_with_slg("7, x", 3.0))
    assert result.status == "error" and "layers must be comma-separated" in result.error["exception_message"]
    result = env.run(_with_slg("5", 3.0))
    assert result.status == "error" and "joint blocks 0 to 1" in result.error["exception_message"]


def test_fp8_checkpoint_samples_through_the_model_manager(env: SDEnv, tmp_path: Path) -> None:
    from tests.fixtures.tiny_sd3 import tiny_sd3_state_dict

    sd = tiny_sd3_state_dict()
    for key in [k for k in sd if k.startswith("model.diffusion_model.") and sd[k].ndim == 2]:
        sd[key] = sd[key].to(torch.float8_e4m3fn)
    write(sd, tmp_path / "models" / "checkpoints" / "fp8.safetensors")
    prompt = sd3_txt2img()
    prompt["1"]["inputs"]["ckpt_name"] = "fp8.safetensors"
    image = env.value(prompt, "7")
    model = env.value(prompt, "1")
    assert torch.isfinite(image).all() and image.shape == (1, 48, 64, 3)
    assert model.model.diffusion_model.joint_blocks[0].x_block.mlp.fc1.weight.dtype == torch.float8_e4m3fn


def _tiny_t5_file(path: Path) -> Path:
    """A T5 encoder's key layout (as in t5xxl_fp16.safetensors), tiny."""
    gen = torch.Generator().manual_seed(0)
    sd = {"shared.weight": torch.randn(64, 16, generator=gen), "encoder.final_layer_norm.weight": torch.ones(16),
          "encoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(16, 16, generator=gen),
          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": torch.randn(32, 2, generator=gen)}
    return write(sd, path)


def test_incomplete_t5_file_is_refused(env: SDEnv, tmp_path: Path) -> None:
    _tiny_t5_file(tmp_path / "models" / "text_encoders" / "t5xxl.safetensors")
    prompt = sd3_txt2img()
    prompt["10"]["inputs"]["clip_name1"] = "t5xxl.safetensors"  # type sd3 takes T5 in either slot
    result = env.run(prompt)
    assert result.status == "error" and result.error["node_type"] == "DualCLIPLoader"
    assert "t5xxl.safetensors" in result.error["exception_message"]
    assert "not a T5 encoder Loom can build" in result.error["exception_message"]
    env.ok(sd3_txt2img())


def test_clip_loader_sd3_single_tower(env: SDEnv) -> None:
    prompt = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_g.safetensors", "type": "sd3"}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 0]}}}
    cond = env.value(prompt, "2")
    context, pooled = cond[0][0], cond[0][1]["pooled_output"]
    assert context.shape == (1, 77, 4096) and pooled.shape == (1, 768 + G_WIDTH)
    assert context[0, :, :768].abs().max() == 0 and context[0, :, 768:768 + G_WIDTH].abs().max() > 0
    assert pooled[0, :768].abs().max() == 0


def test_model_merge_sd3(env: SDEnv, tmp_path: Path) -> None:
    write_tiny_sd3(tmp_path / "models" / "checkpoints" / "other.safetensors", seed=7)
    info = env.registry.object_info()
    assert list(info["ModelMergeSD3_2B"]["input"]["required"])[2:8] == [
        "pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder.", "joint_blocks.0."]
    assert "joint_blocks.37." in info["ModelMergeSD35_Large"]["input"]["required"]

    def merged(ratio: float) -> dict:
        prompt = sd3_txt2img()
        prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}
        ratios = {name: ratio for name in info["ModelMergeSD3_2B"]["input"]["required"] if name.endswith(".")}
        prompt["21"] = {"class_type": "ModelMergeSD3_2B", "inputs": {"model1": ["1", 0], "model2": ["20", 0],
                                                                     **ratios}}
        prompt["6"]["inputs"]["model"] = ["21", 0]
        return prompt

    own = env.value(sd3_txt2img(), "7")
    other = sd3_txt2img()  # the other model's MMDiT, decoded with the same VAE as the merges
    other["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}
    other["6"]["inputs"]["model"] = ["20", 0]
    theirs = env.value(other, "7")
    torch.testing.assert_close(env.value(merged(1.0), "7"), own, atol=1e-5, rtol=0)
    torch.testing.assert_close(env.value(merged(0.0), "7"), theirs, atol=1e-5, rtol=0)


def test_unet_loader_takes_an_mmdit_file(env: SDEnv, tmp_path: Path) -> None:
    from tests.fixtures.tiny_sd3 import tiny_sd3_state_dict

    prefix = "model.diffusion_model."
    sd = {k[len(prefix):]: v for k, v in tiny_sd3_state_dict().items() if k.startswith(prefix)}
    write(sd, tmp_path / "models" / "diffusion_models" / "sd35m_mmdit.safetensors")
    prompt = sd3_txt2img()
    prompt["30"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "sd35m_mmdit.safetensors",
                                                           "weight_dtype": "default"}}
    prompt["6"]["inputs"]["model"] = ["30", 0]
    model = env.value(prompt, "30")
    assert model.model.family == "sd3" and model.model.latent_format.channels == 16
    torch.testing.assert_close(env.value(prompt, "7"), env.value(sd3_txt2img(), "7"), atol=1e-5, rtol=0)


def test_sd3_lora_through_the_executor(env: SDEnv, tmp_path: Path) -> None:
    """A diffusers-layout SD3 LoRA (PEFT names) on the tiny MMDiT: the image changes, strength 0 is the plain
    model (which keys land where: tests/diffusion/test_lora_sd3.py)."""
    gen = torch.Generator().manual_seed(5)
    d = 64  # TINY_SD3.hidden_size
    lora = {}
    for name in ("transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.1.attn.to_v",
                 "transformer.transformer_blocks.0.ff.net.0.proj"):
        out = 4 * d if name.endswith("proj") else d
        lora[f"{name}.lora_A.weight"] = torch.randn(2, d, generator=gen)
        lora[f"{name}.lora_B.weight"] = torch.randn(out, 2, generator=gen)
    write(lora, tmp_path / "models" / "loras" / "sd3_lora.safetensors")

    def with_lora(strength: float) -> dict:
        prompt = sd3_txt2img()
        prompt["11"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "strength_model": strength,
                                                                        "lora_name": "sd3_lora.safetensors"}}
        prompt["6"]["inputs"]["model"] = ["11", 0]
        return prompt

    plain = env.value(sd3_txt2img(), "7")
    patched = env.value(with_lora(1.0), "7")
    assert (patched - plain).abs().max() > 1e-3
    assert torch.equal(env.value(with_lora(0.0), "7"), plain)
