"""SDXL through the real executor on tiny files: DualCLIPLoader (type sdxl), SDXL checkpoints, the SDXL text and
ADM conditioning nodes, with the model manager and folders of a real Loom instance."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffusion.text.clip_multi import MultiTextEncoder
from diffusion.text.text_encoders import CLIP
from tests.fixtures.tiny_sdxl import (G_WIDTH, L_WIDTH, REFINER_ADM, XL_ADM, XL_CONTEXT, tiny_clip_g_hf,
                                      tiny_clip_l_hf, tiny_sdxl_state_dict, write)
from tests.nodes.sd_env import SDEnv, txt2img

PROMPT = "a photograph of an astronaut riding a horse"


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_clip_l_hf(), tmp_path / "models" / "text_encoders" / "clip_l.safetensors")
    write(tiny_clip_g_hf(), tmp_path / "models" / "clip" / "clip_g.safetensors")
    return env


def _dual(first: str = "clip_l.safetensors", second: str = "clip_g.safetensors", kind: str = "sdxl") -> dict:
    return {
        "1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": first, "clip_name2": second, "type": kind}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 0]}},
    }


def _with_output(prompt: dict) -> dict:
    return {**prompt, "out": {"class_type": "Grab", "inputs": {"value": ["2", 0]}}}


def test_dual_clip_loader_sdxl(env: SDEnv) -> None:
    info = env.registry.object_info()["DualCLIPLoader"]
    assert info["input"]["required"]["type"][0][:2] == ["sdxl", "sd3"]
    assert info["category"] == "advanced/loaders"
    clip = env.value(_dual(), "1", 0)
    assert isinstance(clip, CLIP) and isinstance(clip.model, MultiTextEncoder) and clip.family == "sdxl"
    cond = env.value(_dual(), "2", 0)
    assert cond[0][0].shape == (1, 77, L_WIDTH + G_WIDTH) and cond[0][1]["pooled_output"].shape == (1, G_WIDTH)
    swapped = env.value(_dual("clip_g.safetensors", "clip_l.safetensors"), "2", 0)
    assert torch.equal(swapped[0][0], cond[0][0])


def test_dual_clip_loader_refuses_bad_input(env: SDEnv) -> None:
    result = env.run(_with_output(_dual("clip_l.safetensors", "clip_l.safetensors")))
    assert result.status == "error" and "needs one CLIP-L and one CLIP-G" in result.error["exception_message"]
    assert result.error["node_type"] == "DualCLIPLoader"
    result = env.run(_with_output(_dual(kind="flux")))
    assert result.status == "error" and "type 'flux' is not supported" in result.error["exception_message"]
    env.ok(_with_output(_dual()))  # nothing else was affected


@pytest.fixture
def xl(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_sdxl_state_dict(), tmp_path / "models" / "checkpoints" / "tiny-xl.safetensors")
    write(tiny_sdxl_state_dict(refiner=True, seed=3), tmp_path / "models" / "checkpoints" / "tiny-ref.safetensors")
    return env


def _sdxl_encode(clip: list, g: str = PROMPT, l: str = PROMPT, **sizes: int) -> dict:
    inputs = {"clip": clip, "width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
              "target_height": 1024, "text_g": g, "text_l": l}
    inputs.update(sizes)
    return {"class_type": "CLIPTextEncodeSDXL", "inputs": inputs}


def test_sdxl_checkpoint_txt2img(xl: SDEnv) -> None:
    prompt = txt2img("tiny-xl.safetensors")
    xl.ok(prompt)
    model = xl.value(prompt, "4", 0).model
    assert model.family == "sdxl" and model.latent_format.scale_factor == 0.13025
    clip = xl.value(prompt, "4", 1)
    assert isinstance(clip.model, MultiTextEncoder) and clip.family == "sdxl"
    image = xl.value(prompt, "8", 0)
    assert image.shape == (1, 32, 32, 3) and torch.isfinite(image).all()


def test_sdxl_adm_vector_defaults_and_node_values(xl: SDEnv) -> None:
    from diffusion.families import get_family
    from diffusion.families.sdxl import size_embeddings

    cond = xl.value(txt2img("tiny-xl.safetensors"), "6", 0)
    family = get_family("sdxl")
    y = family.encode_adm(cond[0][1], 256, 256, "positive", XL_ADM)
    pooled = cond[0][1]["pooled_output"]
    assert y.shape == (1, XL_ADM) and torch.equal(y[:, :G_WIDTH], pooled)
    assert torch.allclose(y[:, G_WIDTH:], size_embeddings([256, 256, 0, 0, 256, 256]))
    # cos then sin of v·10000^(-i/128): the first feature of each embedding is cos(v), the 129th sin(v).
    assert torch.allclose(y[0, G_WIDTH:G_WIDTH + 256:128], torch.tensor([math.cos(256), math.sin(256)]))
    prompt = txt2img("tiny-xl.safetensors")
    prompt["6"] = _sdxl_encode(["4", 1], g="a red cube", l="a red cube", width=2048, height=1536, crop_w=16,
                               crop_h=8, target_width=1024, target_height=768)
    sdxl_cond = xl.value(prompt, "6", 0)
    opts = sdxl_cond[0][1]
    assert (opts["width"], opts["height"], opts["crop_w"], opts["crop_h"]) == (2048, 1536, 16, 8)
    y = family.encode_adm(opts, 256, 256, "positive", XL_ADM)
    assert torch.allclose(y[:, G_WIDTH:], size_embeddings([1536, 2048, 8, 16, 768, 1024]))
    assert torch.allclose(sdxl_cond[0][0], cond[0][0], atol=1e-5)  # same text in both towers = CLIPTextEncode
    xl.ok(prompt)


def test_clip_text_encode_sdxl_pads_the_shorter_prompt(xl: SDEnv) -> None:
    prompt = txt2img("tiny-xl.safetensors")
    prompt["6"] = _sdxl_encode(["4", 1], g=", ".join(["a horse"] * 30), l="a horse")
    cond = xl.value(prompt, "6", 0)
    assert cond[0][0].shape == (1, 154, L_WIDTH + G_WIDTH)
    bad = txt2img()  # the SD1.5 checkpoint's CLIP has no G tower
    bad["6"] = _sdxl_encode(["4", 1])
    result = xl.run(bad)
    assert result.status == "error" and "needs an SDXL CLIP" in result.error["exception_message"]


def test_refiner_checkpoint_and_aesthetic_score(xl: SDEnv) -> None:
    from diffusion.families import get_family
    from diffusion.families.sdxl import size_embeddings

    prompt = txt2img("tiny-ref.safetensors")
    prompt["6"] = {"class_type": "CLIPTextEncodeSDXLRefiner",
                   "inputs": {"ascore": 6.0, "width": 1024, "height": 1024, "text": PROMPT, "clip": ["4", 1]}}
    xl.ok(prompt)
    assert xl.value(prompt, "4", 0).model.family == "sdxl_refiner"
    cond = xl.value(prompt, "6", 0)
    assert cond[0][0].shape == (1, 77, G_WIDTH) and cond[0][1]["aesthetic_score"] == 6.0
    family = get_family("sdxl_refiner")
    y = family.encode_adm(cond[0][1], 256, 256, "positive", REFINER_ADM)
    assert torch.allclose(y[:, G_WIDTH:], size_embeddings([1024, 1024, 0, 0, 6.0]))
    plain = xl.value(prompt, "7", 0)  # plain CLIPTextEncode negative: score 2.5, the latent's size
    y_neg = family.encode_adm(plain[0][1], 256, 256, "negative", REFINER_ADM)
    assert torch.allclose(y_neg[:, G_WIDTH:], size_embeddings([256, 256, 0, 0, 2.5]))


def test_model_sampling_continuous_nodes(xl: SDEnv) -> None:
    from diffusion.files.assemble import model_sampling_of
    from diffusion.files.latent_formats import PLAYGROUND_V25

    info = xl.registry.object_info()["ModelSamplingContinuousEDM"]["input"]["required"]
    assert info["sampling"][0] == ["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"]
    assert info["sigma_max"][1] == {"default": 120.0, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False}
    prompt = txt2img("tiny-xl.safetensors", steps=3)
    prompt["10"] = {"class_type": "ModelSamplingContinuousEDM",
                    "inputs": {"model": ["4", 0], "sampling": "edm_playground_v2.5", "sigma_max": 80.0,
                               "sigma_min": 0.002}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    patched = xl.value(prompt, "10", 0)
    ms = model_sampling_of(patched)
    assert ms.prediction == "edm" and ms.sigma_data == 0.5 and float(ms.sigma_max) == pytest.approx(80.0, rel=1e-5)
    assert patched.object_patches["latent_format"] is PLAYGROUND_V25
    base = xl.value(prompt, "4", 0)
    assert model_sampling_of(base).prediction == "eps"  # the loader's model is untouched
    image = xl.value(prompt, "8", 0)
    assert torch.isfinite(image).all()
    prompt["10"] = {"class_type": "ModelSamplingContinuousV",
                    "inputs": {"model": ["4", 0], "sampling": "v_prediction", "sigma_max": 500.0, "sigma_min": 0.03}}
    assert model_sampling_of(xl.value(prompt, "10", 0)).kind == "v"
    xl.ok(prompt)
    prompt["10"]["inputs"]["sigma_min"] = 600.0
    result = xl.run(prompt)
    assert result.status == "error" and "sigma_min (600.0) must be above 0" in result.error["exception_message"]


def test_bad_sdxl_files_and_mixed_up_models(xl: SDEnv) -> None:
    ckpts = xl.base / "models" / "checkpoints"
    data = (ckpts / "tiny-xl.safetensors").read_bytes()
    (ckpts / "cut.safetensors").write_bytes(data[: len(data) * 2 // 3])
    sd = tiny_sdxl_state_dict()
    write({k.removeprefix("model.diffusion_model."): v for k, v in sd.items()
           if k.startswith("model.diffusion_model.")}, ckpts / "unet-only.safetensors")
    result = xl.run(txt2img("cut.safetensors"))
    assert result.status == "error" and result.error["node_type"] == "CheckpointLoaderSimple"
    assert "cut.safetensors is truncated" in result.error["exception_message"]
    result = xl.run(txt2img("unet-only.safetensors"))
    message = result.error["exception_message"]
    assert "unet-only.safetensors" in message and "holds only a unet" in message and "UNETLoader" in message
    # Base prompts (2048-wide context at full size) into the refiner: named, not a shape error in attention.
    mixed = txt2img("tiny-xl.safetensors")
    mixed["11"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-ref.safetensors"}}
    mixed["3"]["inputs"]["model"] = ["11", 0]
    result = xl.run(mixed)
    assert result.status == "error" and result.error["node_type"] == "KSampler"
    assert "takes a 64-wide text context" in result.error["exception_message"]
    xl.ok(txt2img("tiny-xl.safetensors"))  # nothing else was affected


def _lora(path: Path, pairs: dict[str, tuple[int, int]], peft: bool, seed: int = 0) -> Path:
    """A rank-2 LoRA over the named modules ({name: (out, in)}), kohya (`.lora_up/.lora_down` + alpha) or PEFT
    (`.lora_B/.lora_A`, no alpha)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, (out, inp) in pairs.items():
        up, down = torch.randn(out, 2, generator=gen) * 0.5, torch.randn(2, inp, generator=gen) * 0.5
        if peft:
            sd[f"{name}.lora_B.weight"], sd[f"{name}.lora_A.weight"] = up, down
        else:
            sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"] = up, down
            sd[f"{name}.alpha"] = torch.tensor(2.0)
    return write(sd, path)


def _cond_with_lora(xl: SDEnv, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    prompt = txt2img("tiny-xl.safetensors")
    prompt["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": name,
                                                           "strength_model": 1.0, "strength_clip": 1.0}}
    prompt["6"]["inputs"]["clip"] = ["10", 1]
    prompt["3"]["inputs"]["model"] = ["10", 0]
    cond = xl.value(prompt, "6", 0)[0][0]
    return cond, xl.value(prompt, "8", 0)


@pytest.mark.parametrize("peft", [False, True])
def test_sdxl_lora_reaches_both_text_encoders_and_the_unet(xl: SDEnv, peft: bool) -> None:
    loras = xl.base / "models" / "loras"
    if peft:
        te1, te2 = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", \
            "text_encoder_2.text_model.encoder.layers.1.mlp.fc1"
        unet = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    else:
        te1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
        te2 = "lora_te2_text_model_encoder_layers_1_mlp_fc1"
        unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    _lora(loras / "l.safetensors", {te1: (L_WIDTH, L_WIDTH)}, peft)
    _lora(loras / "g.safetensors", {te2: (4 * G_WIDTH, G_WIDTH)}, peft, seed=1)
    _lora(loras / "u.safetensors", {unet: (64, XL_CONTEXT)}, peft, seed=2)
    base_cond = xl.value(txt2img("tiny-xl.safetensors"), "6", 0)[0][0]
    base_image = xl.value(txt2img("tiny-xl.safetensors"), "8", 0)
    l_cond, l_image = _cond_with_lora(xl, "l.safetensors")
    assert not torch.allclose(l_cond[..., :L_WIDTH], base_cond[..., :L_WIDTH])
    assert torch.equal(l_cond[..., L_WIDTH:], base_cond[..., L_WIDTH:])  # the G half is untouched
    g_cond, _ = _cond_with_lora(xl, "g.safetensors")
    assert torch.equal(g_cond[..., :L_WIDTH], base_cond[..., :L_WIDTH])
    assert not torch.allclose(g_cond[..., L_WIDTH:], base_cond[..., L_WIDTH:])
    u_cond, u_image = _cond_with_lora(xl, "u.safetensors")
    assert torch.equal(u_cond, base_cond) and not torch.allclose(u_image, base_image)
    assert torch.equal(xl.value(txt2img("tiny-xl.safetensors"), "8", 0), base_image)  # base restored


def test_model_merge_sdxl_per_block(xl: SDEnv) -> None:
    from nodes.model_merging_sdxl import BLOCKS

    write(tiny_sdxl_state_dict(seed=9), xl.base / "models" / "checkpoints" / "tiny-xl-2.safetensors")
    info = xl.registry.object_info()["ModelMergeSDXL"]
    assert info["category"] == "advanced/model_merging/model_specific"
    assert info["input_order"]["required"] == ["model1", "model2", *BLOCKS]
    ratios = {name: 1.0 for name in BLOCKS}
    ratios.update({"input_blocks.4": 0.0, "label_emb.": 0.25})
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-xl.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-xl-2.safetensors"}},
        "3": {"class_type": "ModelMergeSDXL", "inputs": {"model1": ["1", 0], "model2": ["2", 0], **ratios}},
    }
    merged, one, two = xl.value(prompt, "3", 0), xl.value(prompt, "1", 0), xl.value(prompt, "2", 0)
    first = {k: v.clone() for k, v in one.model.state_dict().items()}
    second = {k: v.clone() for k, v in two.model.state_dict().items()}
    with xl.models.use([merged]):
        got = {k: v.clone() for k, v in merged.model.state_dict().items()}
    key_in = "diffusion_model.input_blocks.4.1.proj_in.weight"
    key_label = "diffusion_model.label_emb.0.0.weight"
    key_other = "diffusion_model.input_blocks.5.1.proj_in.weight"
    torch.testing.assert_close(got[key_in], second[key_in])
    torch.testing.assert_close(got[key_label], 0.25 * first[key_label] + 0.75 * second[key_label])
    torch.testing.assert_close(got[key_other], first[key_other])
    with xl.models.use([one]):
        assert torch.equal(one.model.state_dict()[key_in], first[key_in])  # model1 itself is untouched


def test_perturbed_attention_guidance(xl: SDEnv) -> None:
    info = xl.registry.object_info()["PerturbedAttentionGuidance"]
    assert info["category"] == "model_patches/unet"
    assert info["input"]["required"]["scale"][1] == {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                                     "round": 0.01}
    # 64 px: the middle block sees 2×2 tokens (with one token every attention is the identity already).
    base = xl.value(txt2img("tiny-xl.safetensors", size=64), "8", 0)

    def with_pag(scale: float) -> torch.Tensor:
        prompt = txt2img("tiny-xl.safetensors", size=64)
        prompt["10"] = {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["4", 0], "scale": scale}}
        prompt["3"]["inputs"]["model"] = ["10", 0]
        return xl.value(prompt, "8", 0)

    assert torch.equal(with_pag(0.0), base)
    assert not torch.allclose(with_pag(3.0), base, atol=1e-3)


def test_attention_replacement_hits_only_the_named_block() -> None:
    from diffusion.networks.unet import build_unet
    from tests.fixtures.tiny_sdxl import tiny_sdxl_unet_config

    unet = build_unet(tiny_sdxl_unet_config())
    seen: list[tuple] = []

    def record(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, options: dict) -> torch.Tensor:
        seen.append((options["block"], options["block_index"], options["n_heads"]))
        return v

    x, context, y = torch.randn(1, 4, 8, 8), torch.randn(1, 77, XL_CONTEXT), torch.randn(1, XL_ADM)
    options = {"patches_replace": {"attn1": {("middle", 0): record}}}
    with torch.no_grad():
        plain = unet(x, torch.tensor([500.0]), context, y=y)
        replaced = unet(x, torch.tensor([500.0]), context, y=y, transformer_options=options)
    assert seen == [(("middle", 0), 0, 1), (("middle", 0), 1, 1)]  # depth-2 middle transformer
    assert not torch.allclose(plain, replaced)


def test_taesdxl_previews_and_vae_entry(xl: SDEnv) -> None:
    import io

    from PIL import Image
    from safetensors.torch import save_file

    from diffusion.networks.taesd import decoder, encoder

    folder = xl.base / "models" / "vae_approx"
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(4)
    for name, net in (("taesdxl_encoder", encoder()), ("taesdxl_decoder", decoder())):
        tensors = {k: (torch.randn(v.shape, generator=gen) * (0.05 if v.ndim > 1 else 0.02)).contiguous()
                   for k, v in net.state_dict().items()}
        save_file(tensors, str(folder / f"{name}.safetensors"))
    names = xl.registry.object_info(xl.folders)["VAELoader"]["input"]["required"]["vae_name"][0]
    assert names == ["taesdxl"]  # only the SDXL halves are present
    xl.run(txt2img("tiny-xl.safetensors", steps=2))
    previews = xl.previews()
    assert previews
    with Image.open(io.BytesIO(previews[-1].data)) as frame:
        assert frame.size == (32, 32)  # TAESDXL decodes to full resolution (latent2rgb would give 4×4)
    prompt = txt2img("tiny-xl.safetensors", steps=2)
    prompt["50"] = {"class_type": "VAELoader", "inputs": {"vae_name": "taesdxl"}}
    prompt["8"]["inputs"]["vae"] = ["50", 0]
    vae = xl.value(prompt, "50", 0)
    assert vae.model.scale == 0.13025  # TAESDXL works in SDXL's latent scale
    assert xl.value(prompt, "8", 0).shape == (1, 32, 32, 3)


def test_base_to_refiner_hand_off(xl: SDEnv) -> None:
    """SDXL base for the first steps with leftover noise, the refiner finishing (KSamplerAdvanced ×2)."""
    prompt = txt2img("tiny-xl.safetensors")
    prompt["11"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-ref.safetensors"}}
    prompt["12"] = {"class_type": "CLIPTextEncodeSDXLRefiner",
                    "inputs": {"ascore": 6.0, "width": 1024, "height": 1024, "text": PROMPT, "clip": ["11", 1]}}
    prompt["13"] = {"class_type": "CLIPTextEncodeSDXLRefiner",
                    "inputs": {"ascore": 2.5, "width": 1024, "height": 1024, "text": "blurry", "clip": ["11", 1]}}
    common = {"noise_seed": 5, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
    prompt["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["4", 0], "add_noise": "enable", "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 3, "return_with_leftover_noise": "enable"}}
    prompt["14"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["11", 0], "add_noise": "disable", "positive": ["12", 0], "negative": ["13", 0],
        "latent_image": ["3", 0], "start_at_step": 3, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    prompt["8"]["inputs"]["samples"] = ["14", 0]
    handed = xl.value(prompt, "3", 0)["samples"]
    final = xl.value(prompt, "14", 0)["samples"]
    assert handed.shape == final.shape == (1, 4, 4, 4) and not torch.allclose(handed, final)
    assert handed.abs().max() > 1.0  # still noisy: the leftover noise was handed over
    assert torch.isfinite(xl.value(prompt, "8", 0)).all()


@pytest.mark.parametrize("ckpt", ["tiny-xl.safetensors", "tiny-ref.safetensors"])
def test_checkpoint_save_round_trip(xl: SDEnv, ckpt: str) -> None:
    from diffusion.files.checkpoint import read_state_dict

    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                         "filename_prefix": "checkpoints/xl"}},
    }
    xl.ok(prompt)
    saved = sorted((xl.folders.output_directory / "checkpoints").glob("xl_*.safetensors"))[-1]
    original = read_state_dict(xl.base / "models" / "checkpoints" / ckpt)
    written = read_state_dict(saved)
    wanted = {k for k in original if k.startswith(("model.diffusion_model.", "first_stage_model.", "conditioner."))}
    wanted -= {k for k in wanted if k.endswith("position_ids")}
    assert wanted <= set(written), sorted(wanted - set(written))[:5]
    for key in wanted:
        torch.testing.assert_close(written[key].float(), original[key].float(), rtol=0, atol=0, msg=key)
    (xl.base / "models" / "checkpoints" / "again.safetensors").symlink_to(saved)
    again = xl.value(txt2img("again.safetensors"), "8", 0)
    assert torch.allclose(again, xl.value(txt2img(ckpt), "8", 0), atol=1e-5)


def test_component_files_unet_dual_clip_vae(xl: SDEnv) -> None:
    """The split-file SDXL setup: UNETLoader (bare diffusion_model keys), DualCLIPLoader, VAELoader."""
    from tests.fixtures.tiny_checkpoints import write_tiny_vae

    models = xl.base / "models"
    sd = tiny_sdxl_state_dict()
    write({k.removeprefix("model.diffusion_model."): v for k, v in sd.items()
           if k.startswith("model.diffusion_model.")}, models / "unet" / "xl-unet.safetensors")
    write(tiny_clip_l_hf(), models / "clip" / "clip_l.safetensors")
    write(tiny_clip_g_hf(), models / "clip" / "clip_g.safetensors")
    write_tiny_vae(models / "vae" / "xl-vae.safetensors")
    prompt = txt2img()
    prompt["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "xl-unet.safetensors",
                                                          "weight_dtype": "default"}}
    prompt["20"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                               "clip_name2": "clip_g.safetensors", "type": "sdxl"}}
    prompt["21"] = {"class_type": "VAELoader", "inputs": {"vae_name": "xl-vae.safetensors"}}
    for node in ("6", "7"):
        prompt[node]["inputs"]["clip"] = ["20", 0]
    prompt["8"]["inputs"]["vae"] = ["21", 0]
    model = xl.value(prompt, "4", 0).model
    assert model.family == "sdxl" and model.latent_format.scale_factor == 0.13025
    assert torch.isfinite(xl.value(prompt, "8", 0)).all()


def test_sdxl_inpainting_checkpoint(xl: SDEnv) -> None:
    """A 9-channel SDXL UNet (latent, mask, masked-image latent) through InpaintModelConditioning and KSampler."""
    write(tiny_sdxl_state_dict(in_channels=9), xl.base / "models" / "checkpoints" / "xl-inpaint.safetensors")

    def graph(colour: int) -> dict:
        prompt = txt2img("xl-inpaint.safetensors", steps=2)
        prompt["img"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                                "color": colour}}
        # Nothing masked: the whole image reaches the UNet's concat channels (a masked region is blanked to grey).
        prompt["m"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 32, "height": 32}}
        prompt["c"] = {"class_type": "InpaintModelConditioning",
                       "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["img", 0],
                                  "mask": ["m", 0], "noise_mask": False}}
        prompt["3"]["inputs"].update(positive=["c", 0], negative=["c", 1])
        return prompt

    model = xl.value(graph(0x000000), "4", 0).model
    assert model.family == "sdxl" and model.is_inpaint
    dark, light = xl.value(graph(0x000000), "8", 0), xl.value(graph(0xFFFFFF), "8", 0)
    assert torch.isfinite(dark).all() and (dark - light).abs().max() > 1e-3
