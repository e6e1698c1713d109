"""SD3.5 Medium parity with ComfyUI (slow; CI runs it): ../shared/reference's x06 workflow (CheckpointLoaderSimple
→ ModelSamplingSD3 shift 3, DualCLIPLoader sd3 with the two CLIP files and no T5 → CLIPTextEncode ×2 →
EmptySD3LatentImage 256² → KSampler euler/simple 4 steps cfg 4.5 seed 42 → VAEDecode) on the full-size
random-weight files must reproduce ComfyUI's PNG to PSNR ≥ 40 dB; the stage tests compare what ComfyUI recorded
(context and pooled, the MMDiT's y, sigmas, noise and the first noisy latent, the first denoised prediction, the final
latent) to localise a difference.

Lean by design: the three files are built once into <repo>/.cache/reference and their sha256 checked; the model is
loaded once (module fixture; run the file under `flock /tmp/loom-bigmodel.lock`), and the 4-step run is made once.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from executor.memory import MemoryPolicy, ModelManager
from folders import Folders
from nodes.context import InterruptFlag, NodeContext, running
from tests.fixtures.reference import reference_checkpoint as build_reference_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CKPT, CLIP_L, CLIP_G = "loom-ref-sd35m.safetensors", "loom-ref-sd3_clip_l.safetensors", "loom-ref-sd3_clip_g.safetensors"
PSNR_FLOOR_DB = 40.0
POSITIVE, NEGATIVE = "a photograph of an astronaut riding a horse", "blurry, lowres"
LATENT = (1, 16, 32, 32)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "reference" / "x06_intermediates.safetensors").is_file():
        pytest.skip("../shared/reference (x06) is absent")
    return SHARED.resolve()


@pytest.fixture(scope="module")
def reference(shared: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(shared / "reference" / "x06_intermediates.safetensors"))


@pytest.fixture(scope="module")
def node_context(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeContext]:
    base = tmp_path_factory.mktemp("sd3")
    for family, folder, name in (("sd35m", "checkpoints", CKPT), ("sd3_clip_l", "text_encoders", CLIP_L),
                                 ("sd3_clip_g", "text_encoders", CLIP_G)):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / name).symlink_to(build_reference_checkpoint(shared, family))
    yield NodeContext(prompt_id="sd3", node_id="1", class_type="test", interrupt=InterruptFlag(),
                      models=ModelManager(MemoryPolicy()), folders=Folders.for_base(base))


@pytest.fixture(scope="module")
def loaded(node_context: NodeContext) -> dict[str, Any]:
    from nodes.text_encode import CLIPTextEncode
    from nodes.loaders import CheckpointLoaderSimple, DualCLIPLoader
    from nodes.sd3 import ModelSamplingSD3

    with running(node_context):
        model, _, vae = CheckpointLoaderSimple().execute(CKPT)
        (model,) = ModelSamplingSD3().execute(model, 3.0)
        (clip,) = DualCLIPLoader().execute(CLIP_L, CLIP_G, "sd3")
        (positive,) = CLIPTextEncode().execute(POSITIVE, clip)
        (negative,) = CLIPTextEncode().execute(NEGATIVE, clip)
    return {"model": model, "clip": clip, "vae": vae, "positive": positive, "negative": negative}


@pytest.fixture(scope="module")
def sampled(loaded: dict[str, Any], node_context: NodeContext) -> dict[str, Any]:
    """The workflow's KSampler and VAEDecode, run once."""
    from nodes.sampling import KSampler
    from nodes.vae_nodes import VAEDecode

    with running(node_context):
        (latent,) = KSampler().execute(loaded["model"], 42, 4, 4.5, "euler", "simple", loaded["positive"],
                                       loaded["negative"], {"samples": torch.zeros(LATENT)}, 1.0)
        (image,) = VAEDecode().execute(latent, loaded["vae"])
    return {"latent": latent["samples"], "image": image}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def test_detected_as_sd3(loaded: dict[str, Any]) -> None:
    model = loaded["model"].model
    assert model.family == "sd3" and model.latent_format.scale_factor == 1.5305
    config = model.diffusion_model.config
    assert (config.depth, config.hidden_size, config.pos_embed_max_size) == (24, 1536, 384)
    assert config.dual_attention_layers == tuple(range(13)) and config.qk_norm


def test_stage_conditioning(loaded: dict[str, Any], reference: dict[str, torch.Tensor]) -> None:
    for name in ("positive", "negative"):
        cond, extra = loaded[name][0]
        print(f"{name}: cond max abs diff {(cond - reference[f'cond_{name}']).abs().max().item():.3g}")
        torch.testing.assert_close(cond, reference[f"cond_{name}"], rtol=0, atol=2e-3)
        torch.testing.assert_close(extra["pooled_output"], reference[f"pooled_{name}"], rtol=0, atol=2e-3)


def test_stage_pooled_vector_y(loaded: dict[str, Any], reference: dict[str, torch.Tensor]) -> None:
    model = loaded["model"].model
    for name in ("positive", "negative"):
        y = model.extra_conds({"pooled_output": reference[f"pooled_{name}"]}, noise=torch.zeros(LATENT),
                              prompt_type=name)["y"]
        torch.testing.assert_close(y, reference[f"y_{name}"], rtol=0, atol=1e-6)


def test_stage_sigmas_noise_and_first_latent(loaded: dict[str, Any], reference: dict[str, torch.Tensor],
                                             node_context: NodeContext) -> None:
    from diffusion.files.assemble import model_sampling_of
    from nodes.sampling import initial_noise
    from nodes.sampling_custom import BasicScheduler

    with running(node_context):
        (sigmas,) = BasicScheduler().execute(loaded["model"], "simple", 4, 1.0)
    torch.testing.assert_close(sigmas, reference["sigmas"], rtol=0, atol=1e-5)
    noise = initial_noise({"samples": torch.zeros(LATENT)}, 42)
    assert torch.equal(noise, reference["noise_initial"])
    ms = model_sampling_of(loaded["model"])
    empty = loaded["model"].model.process_latent_in(torch.zeros(LATENT))
    first = ms.noise_scaling(sigmas[:1], noise, empty, ms.is_max_denoise(sigmas))
    torch.testing.assert_close(first, reference["x_step0"], rtol=0, atol=1e-6)


def test_stage_first_denoised_prediction(loaded: dict[str, Any], reference: dict[str, torch.Tensor],
                                         node_context: NodeContext) -> None:
    from nodes.sampling_custom import KSamplerSelect, SamplerCustom

    positive = [[reference["cond_positive"], {"pooled_output": reference["pooled_positive"]}]]
    negative = [[reference["cond_negative"], {"pooled_output": reference["pooled_negative"]}]]
    with running(node_context):
        (sampler,) = KSamplerSelect().execute("euler")
        _, denoised = SamplerCustom().execute(loaded["model"], True, 42, 4.5, positive, negative, sampler,
                                              reference["sigmas"][:2], {"samples": torch.zeros(LATENT)})
    ours = loaded["model"].model.process_latent_in(denoised["samples"])
    print(f"denoised step 0: max abs diff {(ours - reference['denoised_step0']).abs().max().item():.3g}")
    torch.testing.assert_close(ours, reference["denoised_step0"], rtol=1e-3, atol=5e-3)


def test_final_latent(sampled: dict[str, Any], reference: dict[str, torch.Tensor]) -> None:
    print(f"final latent: max abs diff {(sampled['latent'] - reference['latent_final']).abs().max().item():.3g}")
    torch.testing.assert_close(sampled["latent"], reference["latent_final"], rtol=1e-3, atol=1e-2)


def test_reproduces_comfyui_png(sampled: dict[str, Any], shared: Path) -> None:
    ours = np.clip(255.0 * sampled["image"][0].float().numpy(), 0, 255).astype(np.uint8)
    with Image.open(shared / "reference" / "x06_comfyui.png") as theirs:
        value = psnr(ours, np.asarray(theirs.convert("RGB")))
    print(f"SD3.5 Medium PSNR vs ComfyUI: {value:.2f} dB")
    assert value >= PSNR_FLOOR_DB, f"PSNR {value:.2f} dB is below {PSNR_FLOOR_DB} dB; see the stage tests"
