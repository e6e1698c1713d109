"""The SD loader, conditioning, latent and VAE nodes through the real executor on tiny checkpoint files:
declarations as ComfyUI's, a whole txt2img run with progress and previews, the output cache and file cache
(a seed-only change reloads and re-encodes nothing), component loaders, CLIP skip, VAE round trips, tiling and the
out-of-memory fallback, interrupts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusion.files.assemble import model_sampling_of
from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.patcher import ModelHandle
from diffusion.text.text_encoders import CLIP
from diffusion.networks.vae import VAE
from tests.fixtures.tiny_checkpoints import (write_tiny_checkpoint, write_tiny_text_encoder, write_tiny_unet,
                                             write_tiny_vae)
from tests.fixtures.tiny_text_encoders import TINY_WIDTH
from tests.nodes.sd_env import CKPT, SDEnv, txt2img


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    return SDEnv(tmp_path)


def info(env: SDEnv, name: str) -> dict:
    return env.registry.object_info(env.folders)[name]


# ---- declarations ------------------------------------------------------------------------------------------------

def test_declarations_match_comfyui(env: SDEnv) -> None:
    ks = info(env, "KSampler")
    assert ks["input_order"]["required"] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                             "negative", "latent_image", "denoise"]
    req = ks["input"]["required"]
    assert req["seed"][1]["max"] == 0xFFFFFFFFFFFFFFFF and req["seed"][1]["control_after_generate"] is True
    assert (req["steps"][1]["default"], req["cfg"][1]["default"], req["cfg"][1]["round"]) == (20, 8.0, 0.01)
    assert req["sampler_name"][0][:3] == ["euler", "euler_cfg_pp", "euler_ancestral"]
    assert "dpmpp_2m" in req["sampler_name"][0] and "uni_pc_bh2" in req["sampler_name"][0]
    assert req["scheduler"][0][:3] == ["simple", "sgm_uniform", "karras"] and "normal" in req["scheduler"][0]
    adv = info(env, "KSamplerAdvanced")
    assert adv["input_order"]["required"][-3:] == ["start_at_step", "end_at_step", "return_with_leftover_noise"]
    assert adv["input"]["required"]["add_noise"][0] == ["enable", "disable"]
    assert adv["display_name"] == "KSampler (Advanced)"
    loader = info(env, "CheckpointLoaderSimple")
    assert loader["output"] == ["MODEL", "CLIP", "VAE"] and loader["display_name"] == "Load Checkpoint"
    assert loader["input"]["required"]["ckpt_name"][0] == [CKPT]
    assert info(env, "EmptyLatentImage")["input"]["required"]["width"][1] == {
        "default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": "The width of the latent images in pixels."}
    assert info(env, "CLIPSetLastLayer")["input"]["required"]["stop_at_clip_layer"][1] == {
        "default": -1, "min": -24, "max": -1, "step": 1}
    assert info(env, "VAEDecodeTiled")["input_order"]["required"] == [
        "samples", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"]
    assert info(env, "UNETLoader")["input"]["required"]["weight_dtype"][0][0] == "default"
    assert info(env, "CheckpointLoader")["deprecated"] is True
    assert "stable_diffusion" in info(env, "CLIPLoader")["input"]["required"]["type"][0]


def test_file_combos_refresh_when_files_appear(env: SDEnv) -> None:
    assert info(env, "VAELoader")["input"]["required"]["vae_name"][0] == []
    write_tiny_checkpoint(env.base / "models" / "checkpoints" / "sub" / "second.safetensors")
    write_tiny_vae(env.base / "models" / "vae" / "v.safetensors")
    assert info(env, "CheckpointLoaderSimple")["input"]["required"]["ckpt_name"][0] == ["sub/second.safetensors", CKPT]
    assert info(env, "VAELoader")["input"]["required"]["vae_name"][0] == ["v.safetensors"]


# ---- txt2img ----------------------------------------------------------------------------------------------------

def test_txt2img_runs_with_progress_and_previews(env: SDEnv) -> None:
    result = env.ok(txt2img(steps=3))
    image_info = result.outputs["9"]["images"][0]
    with Image.open(env.base / "output" / image_info["filename"]) as png:
        assert png.size == (32, 32) and png.mode == "RGB" and "prompt" in png.text
    progress = env.event_data("progress")
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "3"), (2, 3, "3"), (3, 3, "3")]
    previews = env.previews()
    assert previews and all(p.node_id == "3" for p in previews)
    with Image.open(__import__("io").BytesIO(previews[0].data)) as frame:
        assert frame.size == (4, 4)  # the latent's size: one RGB pixel per latent pixel


def test_seed_change_reloads_and_reencodes_nothing(env: SDEnv) -> None:
    env.ok(txt2img(seed=1))
    loads = env.models.files.loads
    env.ok(txt2img(seed=2))
    cached = env.event_data("execution_cached")[0]["nodes"]
    assert {"4", "6", "7", "5"} <= set(cached) and "3" not in cached
    assert env.models.files.loads == loads
    env.ok(txt2img(seed=2))
    assert set(env.event_data("execution_cached")[0]["nodes"]) == {"3", "4", "5", "6", "7", "8", "9"}


def test_same_file_is_loaded_once(env: SDEnv) -> None:
    prompt = txt2img()
    prompt["10"] = {"class_type": "CheckpointLoader", "inputs": {"config_name": "v1-inference.yaml",
                                                                  "ckpt_name": CKPT}}
    (env.base / "models" / "configs").mkdir(parents=True)
    (env.base / "models" / "configs" / "v1-inference.yaml").write_text("model: {}\n")
    prompt["3"]["inputs"]["model"] = ["10", 0]
    first = env.value(prompt, "4", 0)
    second = env.value(prompt, "10", 0)
    assert isinstance(first, ModelHandle) and isinstance(second, ModelHandle)
    assert first.model is second.model and isinstance(first.model, DiffusionModel)
    assert env.models.files.loads == 1


def test_sd21_v_checkpoint_assembles_v_prediction(tmp_path: Path) -> None:
    env = SDEnv(tmp_path, family="sd21_v", name="tiny-sd21v.safetensors")
    model = env.value(txt2img(ckpt="tiny-sd21v.safetensors"), "4", 0)
    assert model_sampling_of(model).prediction == "v_prediction"
    assert model.model.latent_format.scale_factor == pytest.approx(0.18215)
    cond = env.value(txt2img(ckpt="tiny-sd21v.safetensors"), "6", 0)
    assert cond[0][0].shape == (1, 77, TINY_WIDTH) and cond[0][1]["pooled_output"].shape[0] == 1


# ---- text ---------------------------------------------------------------------------------------------------------

def test_clip_text_encode_and_clip_skip(env: SDEnv) -> None:
    prompt = txt2img()
    prompt["11"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    prompt["12"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["11", 0]}}
    last = env.value(prompt, "6", 0)
    skipped = env.value(prompt, "12", 0)
    clip = env.value(prompt, "4", 1)
    assert isinstance(clip, CLIP) and clip.layer_idx is None  # the loader's CLIP is untouched by the clone
    assert last[0][0].shape == skipped[0][0].shape == (1, 77, TINY_WIDTH)
    assert not torch.allclose(last[0][0], skipped[0][0])
    direct, pooled = clip.encode("a red cube")
    torch.testing.assert_close(last[0][0], direct)
    torch.testing.assert_close(last[0][1]["pooled_output"], pooled)
    long = env.value({**prompt, "6": {"class_type": "CLIPTextEncode",
                                       "inputs": {"text": "word " * 100, "clip": ["4", 1]}}}, "6", 0)
    assert long[0][0].shape == (1, 154, TINY_WIDTH)


def test_component_loaders(env: SDEnv) -> None:
    models = env.base / "models"
    write_tiny_vae(models / "vae" / "v.safetensors", seed=5, prefixed=True)
    write_tiny_text_encoder(models / "text_encoders" / "te.safetensors", seed=6)
    write_tiny_unet(models / "diffusion_models" / "u.safetensors", seed=7)
    prompt = txt2img()
    prompt.update({
        "20": {"class_type": "VAELoader", "inputs": {"vae_name": "v.safetensors"}},
        "21": {"class_type": "CLIPLoader", "inputs": {"clip_name": "te.safetensors", "type": "stable_diffusion"}},
        "22": {"class_type": "UNETLoader", "inputs": {"unet_name": "u.safetensors", "weight_dtype": "default"}},
        "23": {"class_type": "UNETLoader", "inputs": {"unet_name": "u.safetensors", "weight_dtype": "fp8_e4m3fn"}},
    })
    prompt["6"]["inputs"]["clip"] = ["21", 0]
    prompt["7"]["inputs"]["clip"] = ["21", 0]
    prompt["3"]["inputs"]["model"] = ["22", 0]
    prompt["8"]["inputs"]["vae"] = ["20", 0]
    env.ok(prompt)
    vae, ckpt_vae = env.value(prompt, "20", 0), env.value(prompt, "4", 2)
    assert isinstance(vae, VAE) and vae.model is not ckpt_vae.model
    unet, fp8 = env.value(prompt, "22", 0), env.value(prompt, "23", 0)
    weight = unet.model.diffusion_model.input_blocks[0][0].weight
    stored = fp8.model.diffusion_model.input_blocks[0][0].weight  # kept in fp8, upcast per call
    assert stored.dtype == torch.float8_e4m3fn and weight.dtype == torch.float32
    torch.testing.assert_close(stored.to(weight.dtype), weight.to(torch.float8_e4m3fn).to(weight.dtype))
    bad = dict(prompt)
    bad["21"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": "te.safetensors", "type": "stable_cascade"}}
    result = env.run(bad)
    assert result.status == "error" and "not supported by Loom" in result.error["exception_message"]


# ---- latents and VAE ----------------------------------------------------------------------------------------------

def test_empty_latent_image(env: SDEnv) -> None:
    latent = env.value({"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 72, "height": 40,
                                                                           "batch_size": 3}}}, "1", 0)
    assert latent["samples"].shape == (3, 4, 5, 9) and not latent["samples"].any()
    assert latent["samples"].dtype == torch.float32 and latent["samples"].device.type == "cpu"


def test_vae_encode_decode_roundtrip_and_tiles(env: SDEnv) -> None:
    prompt = txt2img()
    prompt["30"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2,
                                                           "color": 0x3366CC}}
    prompt["31"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["30", 0], "vae": ["4", 2]}}
    prompt["32"] = {"class_type": "VAEDecode", "inputs": {"samples": ["31", 0], "vae": ["4", 2]}}
    prompt["33"] = {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["30", 0], "vae": ["4", 2], "tile_size": 512,
                                                               "overlap": 64, "temporal_size": 64,
                                                               "temporal_overlap": 8}}
    prompt["34"] = {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["31", 0], "vae": ["4", 2],
                                                               "tile_size": 512, "overlap": 64, "temporal_size": 64,
                                                               "temporal_overlap": 8}}
    latent = env.value(prompt, "31", 0)["samples"]
    assert latent.shape == (2, 4, 6, 8) and latent.dtype == torch.float32
    image = env.value(prompt, "32", 0)
    assert image.shape == (2, 48, 64, 3) and 0.0 <= image.min() and image.max() <= 1.0
    # A tile larger than the image is one tile: the same as the whole-image call.
    torch.testing.assert_close(env.value(prompt, "33", 0)["samples"], latent)
    torch.testing.assert_close(env.value(prompt, "34", 0), image)


def test_vae_decode_falls_back_to_tiles_after_out_of_memory(env: SDEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"whole": 0, "tiled": 0}
    tiled = VAE.decode_tiled

    def failing_decode(self: VAE, latent: torch.Tensor) -> torch.Tensor:
        calls["whole"] += 1
        raise torch.OutOfMemoryError("simulated: the device is full")

    def counting_tiled(self: VAE, latent: torch.Tensor, *args: object) -> torch.Tensor:
        calls["tiled"] += 1
        return tiled(self, latent, *args)

    monkeypatch.setattr(VAE, "decode", failing_decode)
    monkeypatch.setattr(VAE, "decode_tiled", counting_tiled)
    prompt = txt2img(steps=3)
    image = env.value(prompt, "8", 0)
    assert calls == {"whole": 2, "tiled": 1}  # retried once after freeing, then tiles
    latent, vae = env.value(prompt, "3", 0)["samples"], env.value(prompt, "4", 2)
    monkeypatch.undo()
    torch.testing.assert_close(image, vae.decode(latent))  # a 4×4 latent is a single tile


# ---- interrupt ----------------------------------------------------------------------------------------------------

def test_interrupt_stops_sampling_at_the_next_step(env: SDEnv) -> None:
    steps: list[int] = []

    def emit(event: object) -> None:
        env.events.append(event)
        if getattr(event, "type", None) == "progress":
            steps.append(event.data["value"])
            env.executor.interrupt.set()

    result = env.executor.execute(txt2img(steps=6), "int", emit=emit)
    assert result.status == "interrupted"
    assert steps == [1]
    assert not env.executor.interrupt.is_set()  # cleared for the next prompt
    env.ok(txt2img(steps=2))


# ---- TAESD --------------------------------------------------------------------------------------------------------

def write_taesd(folder: Path, seed: int = 0) -> None:
    """Random-weight TAESD halves in the published files' key layout (Sequential indices)."""
    from safetensors.torch import save_file

    from diffusion.networks.taesd import decoder, encoder

    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, net in (("taesd_encoder", encoder()), ("taesd_decoder", decoder())):
        tensors = {}
        for key, value in net.state_dict().items():
            r = torch.randn(value.shape, generator=gen)
            tensors[key] = (r / max(1, r[0].numel()) ** 0.5 if value.ndim > 1 else 0.02 * r).contiguous()
        save_file(tensors, str(folder / f"{name}.safetensors"))


def test_taesd_vae_and_previews(env: SDEnv) -> None:
    assert "taesd" not in info(env, "VAELoader")["input"]["required"]["vae_name"][0]
    write_taesd(env.base / "models" / "vae_approx")
    assert info(env, "VAELoader")["input"]["required"]["vae_name"][0] == ["taesd"]
    prompt = txt2img(steps=2)
    prompt["50"] = {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}}
    prompt["8"]["inputs"]["vae"] = ["50", 0]
    prompt["51"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["50", 0]}}
    image = env.value(prompt, "8", 0)
    assert image.shape == (1, 32, 32, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert env.value(prompt, "51", 0)["samples"].shape == (1, 4, 4, 4)
    env.run(txt2img(steps=2, seed=11))
    previews = env.previews()
    assert previews
    with Image.open(__import__("io").BytesIO(previews[-1].data)) as frame:
        assert frame.size == (32, 32)  # TAESD decodes to full resolution


def test_text_encode_finds_embeddings_in_the_models_folder(env: SDEnv) -> None:
    from safetensors.torch import save_file

    (env.base / "models" / "embeddings").mkdir(parents=True)
    vectors = torch.randn(2, TINY_WIDTH, generator=torch.Generator().manual_seed(4))
    save_file({"emb_params": vectors}, str(env.base / "models" / "embeddings" / "shiny.safetensors"))
    prompt = txt2img()
    prompt["6"]["inputs"]["text"] = "a embedding:shiny cube"
    prompt["7"]["inputs"]["text"] = "a embedding:absent cube"
    with_embedding, missing = env.value(prompt, "6", 0)[0][0], env.value(prompt, "7", 0)[0][0]
    clip = env.value(prompt, "4", 1)
    plain, _ = clip.encode("a cube")
    assert with_embedding.shape == missing.shape == (1, 77, TINY_WIDTH)
    assert not torch.allclose(with_embedding, plain)
    assert env.ok(prompt).status == "success"  # a missing embedding is a warning, not an error


def test_preview_method_from_the_prompt(env: SDEnv) -> None:
    prompt = txt2img(steps=2)
    result = env.executor.execute(prompt, "np", extra_data={"preview_method": "none"}, emit=env.events.append)
    assert result.status == "success"
    assert env.event_data("progress") and not env.previews()
