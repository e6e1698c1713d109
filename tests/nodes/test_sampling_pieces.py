"""The custom-sampling pieces through the real executor on the tiny SD1.5 checkpoint: each SAMPLER node against the
KSamplerSelect sampler it parameterises (same latent at the same knobs, a different one at others), the new
schedulers' sigmas against values derived here independently, the sigma tools, AddNoise, and /object_info shapes."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from diffusion.files.assemble import model_sampling_of
from diffusion.sampling.noise import prepare_noise
from tests.nodes.sd_env import SDEnv, txt2img

STEPS = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("pieces"))


def custom(sampler_node: dict[str, Any], steps: int = STEPS, scheduler: str = "normal") -> dict[str, Any]:
    """txt2img's loader and prompts, sampled by SamplerCustom with `sampler_node` as node "s"."""
    prompt = txt2img(steps=steps)
    for key in ("3", "8", "9"):
        del prompt[key]
    prompt["s"] = sampler_node
    prompt["sig"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler,
                                                                "steps": steps, "denoise": 1.0}}
    prompt["c"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": 7, "cfg": 5.0, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["s", 0], "sigmas": ["sig", 0], "latent_image": ["5", 0]}}
    return prompt


def sample(env: SDEnv, class_type: str, **inputs: Any) -> torch.Tensor:
    return env.value(custom({"class_type": class_type, "inputs": inputs}), "c")["samples"]


def selected(env: SDEnv, name: str) -> torch.Tensor:
    return sample(env, "KSamplerSelect", sampler_name=name)


@pytest.mark.parametrize("class_type,inputs,name", [
    ("SamplerEulerAncestral", {"eta": 1.0, "s_noise": 1.0}, "euler_ancestral"),
    ("SamplerEulerAncestralCFGPP", {"eta": 1.0, "s_noise": 1.0}, "euler_ancestral_cfg_pp"),
    ("SamplerEulerCFGpp", {"version": "regular"}, "euler_cfg_pp"),
    ("SamplerLMS", {"order": 4}, "lms"),
    ("SamplerDPMPP_2M_SDE", {"solver_type": "midpoint", "eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"},
     "dpmpp_2m_sde"),
    ("SamplerDPMPP_2M_SDE", {"solver_type": "heun", "eta": 1.0, "s_noise": 1.0, "noise_device": "gpu"},
     "dpmpp_2m_sde_heun_gpu"),
    ("SamplerDPMPP_3M_SDE", {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}, "dpmpp_3m_sde"),
    ("SamplerDPMPP_SDE", {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"}, "dpmpp_sde"),
    ("SamplerDPMPP_2S_Ancestral", {"eta": 1.0, "s_noise": 1.0}, "dpmpp_2s_ancestral"),
    ("SamplerER_SDE", {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}, "er_sde"),
    ("SamplerSASolver", {"model": ["4", 0], "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8,
                         "s_noise": 1.0, "predictor_order": 3, "corrector_order": 4, "use_pece": False,
                         "simple_order_2": False}, "sa_solver"),
])
def test_sampler_node_at_default_knobs_is_the_named_sampler(env: SDEnv, class_type: str, inputs: dict,
                                                            name: str) -> None:
    torch.testing.assert_close(sample(env, class_type, **inputs), selected(env, name))


def test_sampler_knobs_take_effect(env: SDEnv) -> None:
    # eta 0 turns ancestral Euler into plain Euler; s_noise 0 likewise removes the fresh noise
    torch.testing.assert_close(sample(env, "SamplerEulerAncestral", eta=0.0, s_noise=1.0), selected(env, "euler"))
    noisy = sample(env, "SamplerEulerAncestral", eta=1.0, s_noise=1.0)
    assert (sample(env, "SamplerEulerAncestral", eta=0.5, s_noise=1.0) - noisy).abs().max() > 1e-4
    assert (sample(env, "SamplerLMS", order=1) - sample(env, "SamplerLMS", order=4)).abs().max() > 1e-4
    # ER-SDE's ODE solver type is deterministic: the seed-independent result equals the reverse-time SDE at eta 0
    ode = sample(env, "SamplerER_SDE", solver_type="ODE", max_stage=3, eta=1.0, s_noise=1.0)
    torch.testing.assert_close(ode, sample(env, "SamplerER_SDE", solver_type="Reverse-time SDE", max_stage=3,
                                           eta=0.0, s_noise=1.0))
    assert (ode - selected(env, "er_sde")).abs().max() > 1e-4
    pece = sample(env, "SamplerSASolver", model=["4", 0], eta=1.0, sde_start_percent=0.2, sde_end_percent=0.8,
                  s_noise=1.0, predictor_order=3, corrector_order=4, use_pece=True, simple_order_2=False)
    torch.testing.assert_close(pece, selected(env, "sa_solver_pece"))


def test_dpm_adaptive_node_and_cfgpp_alternative(env: SDEnv) -> None:
    knobs = dict(order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                 accept_safety=0.81, eta=0.0, s_noise=1.0)
    torch.testing.assert_close(sample(env, "SamplerDPMAdaptative", **knobs), selected(env, "dpm_adaptive"))
    loose = sample(env, "SamplerDPMAdaptative", **{**knobs, "rtol": 0.5, "atol": 0.5})
    assert torch.isfinite(loose).all()
    alt = sample(env, "SamplerEulerCFGpp", version="alternative")
    assert torch.isfinite(alt).all() and (alt - selected(env, "euler_cfg_pp")).abs().max() > 1e-4


def test_lcm_upscale_grows_the_latent(env: SDEnv) -> None:
    out = sample(env, "SamplerLCMUpscale", scale_ratio=2.0, scale_steps=-1, upscale_method="bilinear")
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()  # 32 px → 4×4 latent, doubled
    same = sample(env, "SamplerLCMUpscale", scale_ratio=1.0, scale_steps=-1, upscale_method="bilinear")
    torch.testing.assert_close(same, selected(env, "lcm"))
    one = sample(env, "SamplerLCMUpscale", scale_ratio=1.5, scale_steps=1, upscale_method="nearest-exact")
    assert one.shape == (1, 4, 6, 6)


def sigmas(env: SDEnv, class_type: str, **inputs: Any) -> torch.Tensor:
    prompt = {"4": txt2img()["4"], "n": {"class_type": class_type, "inputs": inputs}}
    return env.value(prompt, "n")


def test_laplace_scheduler_matches_the_laplace_quantiles(env: SDEnv) -> None:
    n, lo, hi, mu, beta = 6, 0.03, 14.6, 0.2, 0.7
    out = sigmas(env, "LaplaceScheduler", steps=n, sigma_max=hi, sigma_min=lo, mu=mu, beta=beta)
    expected = []
    for i in range(n):
        p = i / (n - 1)
        sign = (0.5 - p > 0) - (0.5 - p < 0)
        lam = mu - beta * sign * math.log(1 - 2 * abs(0.5 - p) + 1e-5)
        expected.append(min(max(math.exp(lam), lo), hi))
    torch.testing.assert_close(out, torch.tensor(expected + [0.0]), rtol=1e-5, atol=1e-6)


def test_vp_scheduler(env: SDEnv) -> None:
    out = sigmas(env, "VPScheduler", steps=4, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    ts = [1 + (0.001 - 1) * i / 3 for i in range(4)]
    expected = [math.sqrt(math.expm1(19.9 * t * t / 2 + 0.1 * t)) for t in ts] + [0.0]
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_beta_scheduler_uses_the_models_schedule(env: SDEnv) -> None:
    from scipy import stats
    out = sigmas(env, "BetaSamplingScheduler", model=["4", 0], steps=5, alpha=0.6, beta=0.6)
    model = env.value({"4": txt2img()["4"]}, "4")
    table = model_sampling_of(model).sigmas.double()
    ts = 1 - np.linspace(0, 1, 5, endpoint=False)
    idx = np.rint(stats.beta.ppf(ts, 0.6, 0.6) * (len(table) - 1)).astype(int)
    expected = [float(table[i]) for i in idx] + [0.0]
    torch.testing.assert_close(out.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_optimal_steps_scheduler(env: SDEnv) -> None:
    flux = [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001]
    out = sigmas(env, "OptimalStepsScheduler", model_type="FLUX", steps=10, denoise=1.0)
    torch.testing.assert_close(out, torch.tensor(flux[:-1] + [0.0]))
    half = sigmas(env, "OptimalStepsScheduler", model_type="FLUX", steps=10, denoise=0.5)
    torch.testing.assert_close(half, torch.tensor(flux[5:-1] + [0.0]))
    more = sigmas(env, "OptimalStepsScheduler", model_type="FLUX", steps=20, denoise=1.0)
    logs = np.log(np.array(flux[::-1]))
    resampled = np.exp(np.interp(np.linspace(0, 1, 21), np.linspace(0, 1, 11), logs))[::-1]
    torch.testing.assert_close(more, torch.tensor(list(resampled[:-1]) + [0.0], dtype=torch.float32))
    assert sigmas(env, "OptimalStepsScheduler", model_type="Wan", steps=20, denoise=0.0).numel() == 0


def test_gits_scheduler(env: SDEnv) -> None:
    # rows of the published GITS tables (zju-pi/diff-sampler, as ComfyUI's GITSScheduler ships them)
    two = sigmas(env, "GITSScheduler", coeff=1.20, steps=2, denoise=1.0)
    torch.testing.assert_close(two, torch.tensor([14.61464119, 0.803307, 0.0]))
    ten = sigmas(env, "GITSScheduler", coeff=1.20, steps=10, denoise=1.0)
    expected = [14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381, 0.32104823,
                0.19894916, 0.09824532, 0.0]
    torch.testing.assert_close(ten, torch.tensor(expected))
    torch.testing.assert_close(sigmas(env, "GITSScheduler", coeff=1.20, steps=10, denoise=0.5),
                               torch.tensor(expected[5:]))
    low = sigmas(env, "GITSScheduler", coeff=0.80, steps=3, denoise=1.0)
    torch.testing.assert_close(low, torch.tensor([14.61464119, 11.54541874, 6.77309084, 0.0]))
    twenty = [14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.24153244, 0.95350921,
              0.74807048, 0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.29807833, 0.25053367, 0.22545385,
              0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753]
    many = sigmas(env, "GITSScheduler", coeff=1.20, steps=30, denoise=1.0)
    resampled = np.exp(np.interp(np.linspace(0, 1, 31), np.linspace(0, 1, 21), np.log(np.array(twenty[::-1]))))[::-1]
    torch.testing.assert_close(many, torch.tensor(list(resampled[:-1]) + [0.0], dtype=torch.float32))
    info = env.registry.object_info(env.folders)["GITSScheduler"]
    assert info["input"]["required"]["coeff"][1] == {"default": 1.2, "min": 0.8, "max": 1.5, "step": 0.05}


def test_sigma_tools(env: SDEnv) -> None:
    base = {"class_type": "KarrasScheduler", "inputs": {"steps": 3, "sigma_max": 8.0, "sigma_min": 1.0, "rho": 1.0}}
    # rho 1: linear 8, 4.5, 1, then 0
    prompt = {"k": base, "n": {"class_type": "SetFirstSigma", "inputs": {"sigmas": ["k", 0], "sigma": 20.0}}}
    torch.testing.assert_close(env.value(prompt, "n"), torch.tensor([20.0, 4.5, 1.0, 0.0]))
    torch.testing.assert_close(env.value({"k": base}, "k"), torch.tensor([8.0, 4.5, 1.0, 0.0]))  # input untouched
    extend = {"k": base, "n": {"class_type": "ExtendIntermediateSigmas", "inputs": {
        "sigmas": ["k", 0], "steps": 2, "start_at_sigma": -1.0, "end_at_sigma": 2.0, "spacing": "linear"}}}
    torch.testing.assert_close(env.value(extend, "n"), torch.tensor([8.0, 6.25, 4.5, 2.75, 1.0, 0.0]))
    extend["n"]["inputs"].update(steps=4, start_at_sigma=5.0, end_at_sigma=0.5, spacing="cosine")
    fractions = [math.sin(k / 4 * math.pi / 2) for k in (1, 2, 3)]
    expected = [8.0, 4.5] + [4.5 + f * (1.0 - 4.5) for f in fractions] + [1.0] + [1.0 - f for f in fractions] + [0.0]
    torch.testing.assert_close(env.value(extend, "n"), torch.tensor(expected))


def test_sampling_percent_to_sigma(env: SDEnv) -> None:
    model = env.value({"4": txt2img()["4"]}, "4")
    ms = model_sampling_of(model)

    def value(percent: float, actual: bool) -> float:
        return sigmas(env, "SamplingPercentToSigma", model=["4", 0], sampling_percent=percent,
                      return_actual_sigma=actual)

    assert value(0.5, False) == pytest.approx(float(ms.percent_to_sigma(0.5)))
    assert value(0.0, False) == pytest.approx(999999999.9)
    assert value(0.0, True) == pytest.approx(float(ms.sigma_max))
    assert value(1.0, True) == pytest.approx(float(ms.sigma_min))
    assert value(1.0, False) == 0.0


def test_add_noise(env: SDEnv) -> None:
    latent = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    env.registry.register(_feed(latent))
    prompt = {"4": txt2img()["4"], "f": {"class_type": "FeedLatent", "inputs": {}},
              "k": {"class_type": "KarrasScheduler", "inputs": {"steps": 3, "sigma_max": 8.0, "sigma_min": 1.0,
                                                                "rho": 1.0}},
              "z": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
              "n": {"class_type": "AddNoise", "inputs": {"model": ["4", 0], "noise": ["z", 0], "sigmas": ["k", 0],
                                                         "latent_image": ["f", 0]}}}
    out = env.value(prompt, "n")["samples"]
    scale = 0.18215  # SD1 latent format: process_in multiplies, process_out divides
    expected = (latent * scale + prepare_noise(latent, 5) * 8.0) / scale
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _feed(latent: torch.Tensor) -> type:
    from nodes.spec import Node, Output

    class FeedLatent(Node):
        """Test-only: a fixed LATENT."""

        OUTPUTS = (Output("LATENT"),)

        def execute(self) -> tuple:
            return ({"samples": latent},)

    return FeedLatent


def test_object_info_shapes(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    assert info["SamplerEulerAncestralCFGPP"]["display_name"] == "SamplerEulerAncestralCFG++"
    assert info["SamplerEulerCFGpp"]["category"] == "_for_testing"
    assert info["SamplerDPMPP_2M_SDE"]["input_order"]["required"] == ["solver_type", "eta", "s_noise",
                                                                        "noise_device"]
    assert info["SamplerDPMPP_2M_SDE"]["input"]["required"]["noise_device"][0] == ["gpu", "cpu"]
    assert info["SamplerDPMAdaptative"]["input_order"]["required"] == [
        "order", "rtol", "atol", "h_init", "pcoeff", "icoeff", "dcoeff", "accept_safety", "eta", "s_noise"]
    assert info["SamplerLCMUpscale"]["input"]["required"]["scale_steps"][1] == {"default": -1, "min": -1,
                                                                                "max": 1000, "step": 1}
    assert info["LaplaceScheduler"]["input_order"]["required"] == ["steps", "sigma_max", "sigma_min", "mu", "beta"]
    assert info["SetFirstSigma"]["input"]["required"]["sigma"][1]["default"] == 136.0
    assert info["SamplingPercentToSigma"]["output_name"] == ["sigma_value"]
    assert info["SamplingPercentToSigma"]["output"] == ["FLOAT"]
    assert info["AddNoise"]["experimental"] is True
    assert info["OptimalStepsScheduler"]["input"]["required"]["model_type"][0] == ["FLUX", "Wan", "Chroma"]
    for name in ("SamplerEulerAncestral", "SamplerSASolver", "SamplerER_SDE", "BetaSamplingScheduler", "VPScheduler"):
        assert info[name]["output"] == (["SAMPLER"] if name.startswith("Sampler") else ["SIGMAS"])
