"""The sampling nodes through the real executor on a tiny SD1.5 checkpoint file: KSampler against the custom
samplers built from parts, KSamplerAdvanced splits, the schedulers and sigma tools, noise sources, guiders, the
ModelSamplingDiscrete and RescaleCFG patches (on clones only), and SetLatentNoiseMask."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.files.assemble import model_sampling_of
from diffusion.sampling.noise import prepare_noise
from diffusion.sampling.schedules import AYS_NOISE_LEVELS, calculate_sigmas, get_sigmas_karras
from tests.nodes.sd_env import SDEnv, txt2img

STEPS = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("sampling"))


def base(**kw: Any) -> dict[str, Any]:
    prompt = txt2img(**{"steps": STEPS, **kw})
    del prompt["8"], prompt["9"]
    return prompt


def ksampler_latent(env: SDEnv, **kw: Any) -> torch.Tensor:
    return env.value(base(**kw), "3", 0)["samples"]


def custom_parts(prompt: dict[str, Any], seed: int = 1, cfg: float = 5.0, sampler: str = "euler",
                 scheduler: str = "normal", steps: int = STEPS) -> dict[str, Any]:
    prompt.update({
        "50": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "51": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler, "steps": steps,
                                                          "denoise": 1.0}},
        "52": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "53": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                     "cfg": cfg}},
        "54": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["52", 0], "guider": ["53", 0],
                                                                 "sampler": ["50", 0], "sigmas": ["51", 0],
                                                                 "latent_image": ["5", 0]}},
    })
    return prompt


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral"])
def test_custom_advanced_equals_ksampler(env: SDEnv, sampler: str) -> None:
    expected = ksampler_latent(env, sampler=sampler)
    prompt = custom_parts(base(sampler=sampler), sampler=sampler)
    out = env.value(prompt, "54", 0)["samples"]
    torch.testing.assert_close(out, expected)
    assert env.value(prompt, "54", 1)["samples"].shape == out.shape


def test_sampler_custom_equals_ksampler_and_reports_denoised(env: SDEnv) -> None:
    expected = ksampler_latent(env, seed=3)
    prompt = custom_parts(base(seed=3))
    prompt["60"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": 3, "cfg": 5.0, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["50", 0], "sigmas": ["51", 0], "latent_image": ["5", 0]}}
    torch.testing.assert_close(env.value(prompt, "60", 0)["samples"], expected)
    progress = env.event_data("progress")
    assert [p["value"] for p in progress if p["node"] == "60"] == [1, 2, 3]
    # Euler's last step (to sigma 0) lands exactly on its denoised prediction.
    torch.testing.assert_close(env.value(prompt, "60", 1)["samples"], expected, rtol=1e-5, atol=1e-5)


def test_one_euler_step_through_split_sigmas(env: SDEnv) -> None:
    prompt = custom_parts(base())
    prompt["61"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["51", 0], "step": 1}}
    prompt["54"]["inputs"]["sigmas"] = ["61", 0]
    high, low = env.value(prompt, "61", 0), env.value(prompt, "61", 1)
    full = env.value(prompt, "51", 0)
    assert torch.equal(high, full[:2]) and torch.equal(low, full[1:])
    out, denoised = env.value(prompt, "54", 0)["samples"], env.value(prompt, "54", 1)["samples"]
    # Euler (Karras et al. 2022, Alg. 2) from x = noise·sqrt(1+σ0²): x1 = x0 + (x − x0)·σ1/σ0, in sampler space.
    scale = 0.18215
    x = prepare_noise(torch.zeros(1, 4, 4, 4), 1) * (1 + high[0] ** 2) ** 0.5
    x0 = denoised * scale
    torch.testing.assert_close(out * scale, x0 + (x - x0) * high[1] / high[0], rtol=1e-5, atol=1e-5)


def test_ksampler_advanced_split_equals_full_run(env: SDEnv) -> None:
    expected = ksampler_latent(env, seed=5, steps=4)
    prompt = base(seed=5, steps=4)
    common = {"model": ["4", 0], "noise_seed": 5, "steps": 4, "cfg": 5.0, "sampler_name": "euler",
              "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0]}
    prompt["70"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 2,
        "return_with_leftover_noise": "enable"}}
    prompt["71"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "disable", "latent_image": ["70", 0], "start_at_step": 2, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}}
    torch.testing.assert_close(env.value(prompt, "71", 0)["samples"], expected, rtol=1e-4, atol=1e-4)


def test_schedulers_and_sigma_tools(env: SDEnv) -> None:
    prompt = base()
    prompt.update({
        "80": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": 8,
                                                          "denoise": 0.5}},
        "81": {"class_type": "KarrasScheduler", "inputs": {"steps": 5, "sigma_max": 14.614642,
                                                           "sigma_min": 0.0291675, "rho": 7.0}},
        "82": {"class_type": "ExponentialScheduler", "inputs": {"steps": 5, "sigma_max": 10.0, "sigma_min": 0.1}},
        "83": {"class_type": "PolyexponentialScheduler", "inputs": {"steps": 5, "sigma_max": 10.0,
                                                                    "sigma_min": 0.1, "rho": 1.0}},
        "84": {"class_type": "SDTurboScheduler", "inputs": {"model": ["4", 0], "steps": 2, "denoise": 1.0}},
        "85": {"class_type": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": 10,
                                                                   "denoise": 1.0}},
        "86": {"class_type": "FlipSigmas", "inputs": {"sigmas": ["81", 0]}},
        "87": {"class_type": "SplitSigmasDenoise", "inputs": {"sigmas": ["81", 0], "denoise": 0.4}},
    })
    model = env.value(prompt, "4", 0)
    ms = model_sampling_of(model)
    torch.testing.assert_close(env.value(prompt, "80", 0), calculate_sigmas(ms, "karras", 8, 0.5))
    karras = env.value(prompt, "81", 0)
    torch.testing.assert_close(karras, get_sigmas_karras(5, 0.0291675, 14.614642, 7.0))
    exponential = env.value(prompt, "82", 0)
    assert len(exponential) == 6 and exponential[-1] == 0
    torch.testing.assert_close(exponential[:-1].log().diff(), torch.full((4,), exponential[:-1].log().diff()[0]))
    torch.testing.assert_close(env.value(prompt, "83", 0), exponential)  # rho 1 is exponential
    turbo = env.value(prompt, "84", 0)
    torch.testing.assert_close(turbo, torch.cat([ms.sigma(torch.tensor([999.0, 899.0])), torch.zeros(1)]))
    ays = env.value(prompt, "85", 0)
    torch.testing.assert_close(ays[:-1], torch.tensor(AYS_NOISE_LEVELS["SD1"][:-1]))
    assert ays[-1] == 0
    flipped = env.value(prompt, "86", 0)
    assert flipped[0] == pytest.approx(0.0001) and torch.equal(flipped[1:], karras.flip(0)[1:])
    high, low = env.value(prompt, "87", 0), env.value(prompt, "87", 1)
    assert len(low) == 3 and torch.equal(high, karras[:-2]) and torch.equal(low, karras[-3:])


def test_noise_sources(env: SDEnv) -> None:
    prompt = custom_parts(base())
    prompt["90"] = {"class_type": "DisableNoise", "inputs": {}}
    noise = env.value(prompt, "52", 0)
    latent = {"samples": torch.zeros(2, 4, 4, 4), "batch_index": [3, 1]}
    assert torch.equal(noise.generate_noise(latent), prepare_noise(latent["samples"], 1, [3, 1]))
    assert noise.seed == 1
    assert not env.value(prompt, "90", 0).generate_noise(latent).any()
    # Sampling an empty latent with no noise from a zero sigma list returns the input.
    prompt["54"]["inputs"]["noise"] = ["90", 0]
    prompt["91"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["51", 0], "step": 0}}
    prompt["54"]["inputs"]["sigmas"] = ["91", 0]
    assert not env.value(prompt, "54", 0)["samples"].any()


def test_guiders(env: SDEnv) -> None:
    prompt = custom_parts(base(cfg=1.0), cfg=1.0)
    at_cfg_one = env.value(prompt, "54", 0)["samples"]
    prompt["92"] = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}
    prompt["54"]["inputs"]["guider"] = ["92", 0]
    torch.testing.assert_close(env.value(prompt, "54", 0)["samples"], at_cfg_one)
    prompt = custom_parts(base())
    cfg_result = env.value(prompt, "54", 0)["samples"]
    prompt["93"] = {"class_type": "DualCFGGuider", "inputs": {
        "model": ["4", 0], "cond1": ["6", 0], "cond2": ["6", 0], "negative": ["7", 0], "cfg_conds": 3.0,
        "cfg_cond2_negative": 5.0, "style": "regular"}}
    prompt["54"]["inputs"]["guider"] = ["93", 0]
    # cond1 = cond2: the cfg_conds term vanishes and the rest is plain CFG at cfg_cond2_negative (up to the float
    # rounding of a 3-row instead of a 2-row UNet batch).
    torch.testing.assert_close(env.value(prompt, "54", 0)["samples"], cfg_result, rtol=1e-3, atol=1e-3)


def test_model_patches_apply_to_clones_only(env: SDEnv) -> None:
    plain = ksampler_latent(env, seed=9)
    prompt = base(seed=9)
    prompt["100"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["4", 0], "sampling": "v_prediction",
                                                                       "zsnr": False}}
    prompt["101"] = {"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.7}}
    prompt["102"] = {"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.0}}
    prompt["3"]["inputs"]["model"] = ["100", 0]
    v_pred = env.value(prompt, "3", 0)["samples"]
    assert not torch.allclose(v_pred, plain)
    patched = env.value(prompt, "100", 0)
    assert model_sampling_of(patched).prediction == "v_prediction"
    assert model_sampling_of(env.value(prompt, "4", 0)).prediction == "eps"
    prompt["3"]["inputs"]["model"] = ["101", 0]
    assert not torch.allclose(env.value(prompt, "3", 0)["samples"], plain)
    prompt["3"]["inputs"]["model"] = ["102", 0]
    torch.testing.assert_close(env.value(prompt, "3", 0)["samples"], plain, rtol=1e-4, atol=1e-4)
    # The unpatched model still samples as before (the object patch was removed from the shared module).
    prompt["3"]["inputs"]["model"] = ["4", 0]
    prompt["3"]["inputs"]["seed"] = 10
    again = env.value(prompt, "3", 0)["samples"]
    torch.testing.assert_close(again, ksampler_latent(env, seed=10))
    prompt["103"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["4", 0], "sampling": "eps",
                                                                       "zsnr": True}}
    zsnr = env.value(prompt, "103", 0)
    assert model_sampling_of(zsnr).sigma_max > 1000  # zero terminal SNR: an (almost) infinite last sigma


def test_set_latent_noise_mask_keeps_the_unmasked_latent(env: SDEnv) -> None:
    from PIL import Image
    rgba = Image.new("RGBA", (32, 32), (128, 64, 200, 255))
    rgba.paste((128, 64, 200, 0), (16, 0, 32, 32))  # transparent right half: LoadImage's mask is 1 there
    (env.base / "input").mkdir(exist_ok=True)
    rgba.save(env.base / "input" / "half.png")
    prompt = base()
    prompt.update({
        "110": {"class_type": "LoadImage", "inputs": {"image": "half.png"}},
        "111": {"class_type": "VAEEncode", "inputs": {"pixels": ["110", 0], "vae": ["4", 2]}},
        "112": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["111", 0], "mask": ["110", 1]}},
    })
    prompt["3"]["inputs"].update(latent_image=["112", 0], denoise=0.8)
    source, masked = env.value(prompt, "111", 0), env.value(prompt, "112", 0)
    assert masked["noise_mask"].shape == (1, 1, 32, 32) and "noise_mask" not in source
    assert masked["noise_mask"][..., :16].max() == 0 and masked["noise_mask"][..., 16:].min() == 1
    out = env.value(prompt, "3", 0)["samples"]
    torch.testing.assert_close(out[..., :2], source["samples"][..., :2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[..., 2:], source["samples"][..., 2:])


class RecordingControl:
    """A control object by the `nodes.sampling.cond_models` contract: a handle to place, a chain, and
    `get_control` (adding no residuals) that records whether its model was placed when the sampler asked."""

    def __init__(self, manager: Any, previous: "RecordingControl | None" = None) -> None:
        from diffusion.patcher import ModelHandle

        self.handle = ModelHandle(torch.nn.Linear(2, 2), name="control", kind="other")
        self.previous_controlnet = previous
        self.manager = manager
        self.placed: list[bool] = []

    def get_control(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict, batch_chunks: int,
                    transformer_options: dict) -> None:
        self.placed.append(self.manager.is_loaded(self.handle))
        if self.previous_controlnet is not None:
            self.previous_controlnet.get_control(x, sigma, cond, batch_chunks, transformer_options)
        return None


def test_models_in_conditioning_are_placed_while_sampling(env: SDEnv) -> None:
    from nodes.context import InterruptFlag, NodeContext, running
    from nodes.sampling import common_ksampler

    prompt = base()
    model, positive, negative = env.value(prompt, "4", 0), env.value(prompt, "6", 0), env.value(prompt, "7", 0)
    first = RecordingControl(env.models)
    second = RecordingControl(env.models, previous=first)
    positive = [[positive[0][0], {**positive[0][1], "control": second}]]
    ctx = NodeContext(prompt_id="c", node_id="3", class_type="KSampler", interrupt=InterruptFlag(),
                      models=env.models, folders=env.folders)
    with running(ctx):
        (out,) = common_ksampler(model, 1, 2, 5.0, "euler", "normal", positive, negative,
                                 {"samples": torch.zeros(1, 4, 4, 4)})
    assert out["samples"].shape == (1, 4, 4, 4)
    assert first.placed and all(first.placed) and second.placed and all(second.placed)
