"""The KSampler pipeline on a tiny random-weight SD1 UNet: seeding rules of DESIGN.md, KSampler(Advanced)
semantics, img2img denoise, noise-mask inpainting, callbacks and interrupt; k-diffusion as oracle for the
composed model; and (slow) ComfyUI parity on the shared reference checkpoint."""
from __future__ import annotations


import pytest
import torch

from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.sampling.guidance import CFGGuider
from diffusion.files.latent_formats import SD15, latent_to_rgb_preview
from diffusion.sampling.model_sampling import ModelSampling
from diffusion.sampling.noise import DisableNoise, RandomNoise, prepare_noise
from diffusion.sampling.sample import ksampler_sigmas, sample, sample_custom, sampler_object
from diffusion.sampling.schedules import calculate_sigmas
from diffusion.networks.unet import build_unet
from tests.diffusion.test_sampling_support import load_k_diffusion_sampling
from tests.fixtures.tiny_checkpoints import tiny_unet_config, tiny_unet_state_dict
from tests.fixtures.tiny_text_encoders import TINY_WIDTH



@pytest.fixture(scope="module")
def tiny_model() -> DiffusionModel:
    unet = build_unet(tiny_unet_config("sd15"), tiny_unet_state_dict("sd15", seed=3), dtype=torch.float32)
    return DiffusionModel(unet)


def conds(seed: int, tokens: int = 77):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY_WIDTH, generator=gen), {}]]


POS, NEG = conds(1), conds(2)
LATENT = torch.zeros(1, 4, 8, 8)


def run(model, **kw):
    args = dict(noise=None, positive=POS, negative=NEG, cfg=5.0, sampler_name="euler", scheduler="normal", steps=3,
                latent_image=LATENT, seed=42)
    args.update(kw)
    with torch.no_grad():
        return sample(model, **args)


def test_prepare_noise_follows_design_seeding():
    latent = torch.zeros(1, 4, 32, 32)
    torch.manual_seed(42)
    expected = torch.randn((1, 4, 32, 32))
    assert torch.equal(prepare_noise(latent, 42), expected)
    # batch_index: one draw per index 0..max in order, keeping the requested ones.
    gen = torch.Generator().manual_seed(7)
    draws = [torch.randn((1, 4, 8, 8), generator=gen) for _ in range(4)]
    out = prepare_noise(torch.zeros(2, 4, 8, 8), 7, batch_index=[3, 1])
    assert torch.equal(out, torch.cat([draws[3], draws[1]]))


def test_noise_socket_values():
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [1, 0]}
    assert torch.equal(RandomNoise(9).generate_noise(latent), prepare_noise(latent["samples"], 9, [1, 0]))
    assert torch.count_nonzero(DisableNoise().generate_noise(latent)) == 0


def test_reference_initial_noise_and_first_step(shared_dir):
    from safetensors.torch import load_file
    ref = load_file(str(shared_dir / "reference" / "p00_intermediates.safetensors"))
    noise = prepare_noise(torch.zeros(1, 4, 32, 32), 42)
    assert torch.equal(noise, ref["noise_initial"])
    ms = ModelSampling()
    sigmas = calculate_sigmas(ms, "normal", 4)
    x0 = ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), ms.is_max_denoise(sigmas))
    torch.testing.assert_close(x0, ref["x_step0"], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "dpmpp_2m_sde"])
def test_ksampler_matches_k_diffusion_on_tiny_unet(tiny_model, name):
    """The whole pipeline equals k-diffusion's sampler on the same guided denoiser, from the same start
    point (SDE noise: k-diffusion's Brownian tree with the same seed)."""
    kd = load_k_diffusion_sampling()
    out = run(tiny_model, sampler_name=name)
    guider = CFGGuider(tiny_model)
    guider.set_conds(POS, NEG)
    guider.set_cfg(5.0)
    noise = prepare_noise(LATENT, 42)
    guider.prepare(noise, LATENT, None)
    sigmas = calculate_sigmas(tiny_model.model_sampling, "normal", 3)
    x = noise * torch.sqrt(1 + sigmas[0] ** 2)
    kw = {}
    if name.endswith("_sde"):
        kw["noise_sampler"] = kd.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=42)
    with torch.no_grad():
        ref = getattr(kd, f"sample_{name}")(lambda x, s: guider(x, s), x, sigmas, disable=True, **kw) / 0.18215
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["uni_pc", "euler_ancestral_cfg_pp", "ddim"])
def test_samplers_run_through_the_pipeline(tiny_model, name):
    a = run(tiny_model, sampler_name=name, scheduler="karras")
    b = run(tiny_model, sampler_name=name, scheduler="karras")
    assert torch.equal(a, b)  # same seed, same result
    assert torch.isfinite(a).all() and a.shape == LATENT.shape


def test_advanced_split_with_leftover_noise_equals_full_run(tiny_model):
    full = run(tiny_model)
    first = run(tiny_model, start_step=0, last_step=1, force_full_denoise=False)
    second = run(tiny_model, latent_image=first, add_noise=False, start_step=1, last_step=10000,
                 force_full_denoise=True)
    torch.testing.assert_close(second, full, rtol=1e-4, atol=1e-4)
    # start past the end returns the latent unchanged
    assert torch.equal(run(tiny_model, latent_image=first, start_step=3), first)


def test_denoise_below_one_starts_from_the_noised_latent(tiny_model):
    sigmas = ksampler_sigmas(tiny_model, "normal", 3, "euler", denoise=0.5)
    assert torch.equal(sigmas, calculate_sigmas(tiny_model.model_sampling, "normal", 6)[-4:])
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    seen = []
    out = run(tiny_model, latent_image=latent, denoise=0.5, callback=lambda i, x0, x, n: seen.append(x))
    noise = prepare_noise(latent, 42)
    torch.testing.assert_close(seen[0], noise * sigmas[0] + latent * 0.18215)
    assert not torch.equal(out, latent)


def test_noise_mask_keeps_the_unmasked_latent(tiny_model):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # repaint the left half (pixel-space mask)
    out = run(tiny_model, latent_image=latent, noise_mask=mask)
    torch.testing.assert_close(out[..., 4:], latent[..., 4:], rtol=1e-5, atol=1e-5)
    assert (out[..., :4] - latent[..., :4]).abs().mean() > 0.1


def test_callback_previews_and_interrupt(tiny_model):
    calls = []
    run(tiny_model, callback=lambda i, x0, x, n: calls.append((i, n, latent_to_rgb_preview(x0, SD15).shape)))
    assert calls == [(i, 3, (8, 8, 3)) for i in range(3)]

    class Stop(Exception):
        pass
    count = {"n": 0}

    def interrupt():
        count["n"] += 1
        if count["n"] > 2:
            raise Stop()
    with pytest.raises(Stop):
        run(tiny_model, interrupt_check=interrupt)


def test_sample_custom_with_sampler_object(tiny_model):
    guider = CFGGuider(tiny_model)
    guider.set_conds(POS, NEG)
    guider.set_cfg(5.0)
    sigmas = calculate_sigmas(tiny_model.model_sampling, "normal", 3)
    with torch.no_grad():
        out = sample_custom(tiny_model, prepare_noise(LATENT, 42), guider, sampler_object("euler"), sigmas, LATENT,
                            seed=42)
    torch.testing.assert_close(out, run(tiny_model))


def test_inpaint_unet_gets_mask_and_masked_latent():
    unet = build_unet(tiny_unet_config("sd15_inpaint"), tiny_unet_state_dict("sd15_inpaint", seed=1),
                      dtype=torch.float32)
    model = DiffusionModel(unet)
    assert model.is_inpaint
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 8, 8)
    mask[:, 2:6, 2:6] = 1
    noise = torch.zeros_like(latent)
    concat = model.extra_conds({}, noise=noise, latent_image=latent, denoise_mask=mask)["c_concat"]
    assert concat.shape == (1, 5, 8, 8)
    assert torch.equal(concat[:, :1], mask.unsqueeze(1)) and torch.equal(concat[:, 1:], latent)
    out = run(model, latent_image=latent, noise_mask=mask)
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_comfyui_reference_parity(shared_dir):
    """Euler/normal/4 steps/cfg 7/seed 42 on the reference checkpoint with ComfyUI's conditioning tensors:
    every step's guided x0 and the final latent match ComfyUI's intermediates."""
    from safetensors.torch import load_file

    from diffusion.files.checkpoint import read_state_dict, split_components
    from diffusion.families import detect_checkpoint
    from tests.fixtures.reference import reference_checkpoint
    ref = load_file(str(shared_dir / "reference" / "p00_intermediates.safetensors"))
    path = reference_checkpoint(shared_dir, "sd15")
    sd = read_state_dict(path, dtype=torch.float32)
    info = detect_checkpoint(sd)
    unet = build_unet(info.unet, split_components(sd).unet, dtype=torch.float32)
    del sd
    model = DiffusionModel(unet)
    steps = []
    with torch.no_grad():
        out = sample(model, noise=None, positive=[[ref["cond_positive"], {"pooled_output": ref["pooled_positive"]}]],
                     negative=[[ref["cond_negative"], {"pooled_output": ref["pooled_negative"]}]], cfg=7.0,
                     sampler_name="euler", scheduler="normal", steps=4, latent_image=torch.zeros(1, 4, 32, 32),
                     seed=42, callback=lambda i, x0, x, n: steps.append(x0))
    for i, x0 in enumerate(steps):
        torch.testing.assert_close(x0, ref["denoised_per_step"][i], rtol=1e-4, atol=2e-3)
    torch.testing.assert_close(out, ref["latent_final"], rtol=1e-4, atol=1e-2)


def test_latent_previews(tmp_path):
    from safetensors.torch import save_file

    from diffusion.files.latent_formats import SD15, load_taesd_decoder, taesd_decoder
    latent = torch.zeros(1, 4, 2, 3)
    latent[0, 0] = 1.0  # channel 0 alone maps to its factor row (0.3512, 0.2297, 0.3227)
    rgb = latent_to_rgb_preview(latent, SD15)
    expected = ((torch.tensor(SD15.rgb_factors[0]) + 1) / 2 * 255).to(torch.uint8)
    assert rgb.shape == (2, 3, 3) and rgb[0, 0].tolist() == expected.tolist()
    weights = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(0)) * 0.05
               for k, v in taesd_decoder().state_dict().items()}
    save_file(weights, str(tmp_path / "taesd_decoder.safetensors"))
    decoder = load_taesd_decoder(str(tmp_path / "taesd_decoder.safetensors"))
    preview = latent_to_rgb_preview(torch.randn(1, 4, 8, 8), SD15, taesd_decoder=decoder)
    assert preview.shape == (64, 64, 3) and preview.dtype.name == "uint8"


def test_diffusion_model_state_dict_keys(tiny_model):
    keys = list(tiny_model.state_dict())
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    assert tiny_model.model_sampling.prediction == "eps" and not tiny_model.is_inpaint
