"""Samplers: against k-diffusion (PyPI) where it has the function, against the exact probability-flow ODE
solution and the data distribution of an analytic (Gaussian) denoiser otherwise, plus CFG++ and seeding rules."""
from __future__ import annotations

import warnings

import pytest
import torch

from diffusion.sampling.model_sampling import ModelSampling
from diffusion.sampling.noise import BrownianTreeNoiseSampler, default_noise_sampler
from diffusion.sampling.samplers import SAMPLER_NAMES, SAMPLERS
from diffusion.sampling.samplers.deis_coeffs import deis_coefficients
from diffusion.sampling.schedules import calculate_sigmas
from tests.diffusion.test_sampling_support import GaussianDenoiser, GuidedGaussian, load_k_diffusion_sampling

MS = ModelSampling()
KSAMPLER_LIST = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
DETERMINISTIC = ["euler", "euler_cfg_pp", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2m",
                 "dpmpp_2m_cfg_pp", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
                 "gradient_estimation", "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2", "plms"]
STOCHASTIC = sorted(set(SAMPLERS) - set(DETERMINISTIC) - {"lcm"})


@pytest.fixture(autouse=True)
def _quiet_torchsde():
    # torchsde warns when a query lands within float rounding of the tree's end, as in ComfyUI.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def seeded_noise(x: torch.Tensor, seed: int = 7):
    """A fresh, reproducible noise sampler (the same sequence for our run and the oracle's)."""
    gen = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=gen)


def start(shape=(2, 4, 8, 8), steps=10, scheduler="karras", seed=0):
    sigmas = calculate_sigmas(MS, scheduler, steps)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return noise * sigmas[0], sigmas


def test_every_ksampler_name_is_registered():
    assert SAMPLER_NAMES[:len(KSAMPLER_LIST)] == KSAMPLER_LIST
    assert "plms" in SAMPLERS


KD_PLAIN = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m"]
KD_NOISED = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"]


@pytest.mark.parametrize("name", KD_PLAIN)
def test_deterministic_samplers_match_k_diffusion(name):
    kd = load_k_diffusion_sampling()
    den = GaussianDenoiser()
    x, sigmas = start()
    if name == "lms":
        # ComfyUI's LMS (which we follow) jumps to the denoised prediction on the final step to sigma 0;
        # k-diffusion 0.1.1 integrates it. Compare up to the last positive sigma, then check that rule.
        ours = SAMPLERS[name](den, x, sigmas[:-1])
        theirs = kd.sample_lms(den, x, sigmas[:-1], disable=True)
        full = SAMPLERS[name](den, x, sigmas)
        torch.testing.assert_close(full, den(ours, sigmas[-2].reshape(1)), rtol=1e-5, atol=1e-5)
    else:
        ours = SAMPLERS[name](den, x, sigmas)
        theirs = getattr(kd, f"sample_{name}")(den, x, sigmas, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", KD_NOISED)
def test_ancestral_samplers_match_k_diffusion(name):
    kd = load_k_diffusion_sampling()
    den = GaussianDenoiser()
    x, sigmas = start()
    ours = SAMPLERS[name](den, x, sigmas, noise_sampler=seeded_noise(x))
    theirs = getattr(kd, f"sample_{name}")(den, x, sigmas, disable=True, noise_sampler=seeded_noise(x))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kd_name,kw", [
    ("dpmpp_sde", "sample_dpmpp_sde", {}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}),
])
def test_sde_samplers_match_k_diffusion_with_brownian_trees(name, kd_name, kw):
    """Our Brownian tree (seeded) against k-diffusion's torchsde-based one with the same seed."""
    kd = load_k_diffusion_sampling()
    den = GaussianDenoiser()
    x, sigmas = start()
    lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
    ours = SAMPLERS[name](den, x, sigmas, extra_args={"seed": 123})
    theirs = getattr(kd, kd_name)(den, x, sigmas, disable=True,
                                  noise_sampler=kd.BrownianTreeNoiseSampler(x, lo, hi, seed=123), **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_dpm_fast_and_adaptive_match_k_diffusion():
    kd = load_k_diffusion_sampling()
    den = GaussianDenoiser()
    x, sigmas = start(steps=9)
    ours = SAMPLERS["dpm_fast"](den, x, sigmas)
    theirs = kd.sample_dpm_fast(den, x, sigmas[-2], sigmas[0], len(sigmas) - 1, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours = SAMPLERS["dpm_adaptive"](den, x, sigmas)
    theirs = kd.sample_dpm_adaptive(den, x, sigmas[-2], sigmas[0], disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_brownian_tree_matches_torchsde_reference():
    kd = load_k_diffusion_sampling()
    x = torch.zeros(1, 4, 4, 4)
    lo, hi = torch.tensor(0.03), torch.tensor(14.6)
    ours = BrownianTreeNoiseSampler(x, lo, hi, seed=42, cpu=True)
    ref = kd.BrownianTreeNoiseSampler(x, lo, hi, seed=42)
    for a, b in [(14.6, 7.0), (7.0, 1.0), (1.0, 0.03), (3.0, 2.5)]:
        torch.testing.assert_close(ours(torch.tensor(a), torch.tensor(b)), ref(torch.tensor(a), torch.tensor(b)))
    # Unit variance per interval, as the samplers expect.
    big = BrownianTreeNoiseSampler(torch.zeros(1, 4, 64, 64), lo, hi, seed=1, cpu=True)
    assert float(big(torch.tensor(5.0), torch.tensor(4.0)).std()) == pytest.approx(1.0, abs=0.05)


def test_default_noise_sampler_seeds_like_comfyui():
    """DESIGN.md / ComfyUI 0.3.64: the ancestral generator lives on the latent's device, seeded with the seed
    (on the CPU its first draw equals the initial noise); newer ComfyUI's seed+1 is an option."""
    x = torch.zeros(1, 4, 8, 8)
    first = default_noise_sampler(x, seed=5)(None, None)
    assert torch.equal(first, torch.randn(x.shape, generator=torch.Generator().manual_seed(5)))
    shifted = default_noise_sampler(x, seed=5, cpu_seed_offset=1)(None, None)
    assert torch.equal(shifted, torch.randn(x.shape, generator=torch.Generator().manual_seed(6)))
    den = GaussianDenoiser()
    xs, sigmas = start(shape=(1, 4, 8, 8))
    a = SAMPLERS["euler_ancestral"](den, xs, sigmas, extra_args={"seed": 5})
    b = SAMPLERS["euler_ancestral"](den, xs, sigmas, noise_sampler=seeded_noise(xs, 5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_follow_the_exact_ode(name):
    """With a Gaussian data distribution the probability-flow ODE has a closed form; every ODE sampler
    must land near it (first-order ones within 0.1, higher-order ones much closer) with 30 steps."""
    den = GaussianDenoiser()
    x, sigmas = start(steps=30)
    out = SAMPLERS[name](GuidedGaussian(den, den, 1.0), x, sigmas)
    err = float((out - den.ode_solution(x, float(sigmas[0]))).abs().mean())
    first_order = {"euler", "euler_cfg_pp", "ddim", "heunpp2", "gradient_estimation", "gradient_estimation_cfg_pp",
                   "dpm_adaptive"}
    assert err < (0.1 if name in first_order else 0.02), err


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_reach_the_data_distribution(name):
    """SDE/ancestral samplers: the final samples' mean and spread match N(mu, s²)."""
    den = GaussianDenoiser(mu=0.5, s=0.7)
    x, sigmas = start(shape=(1, 4, 64, 64), steps=40, scheduler="karras")
    out = SAMPLERS[name](GuidedGaussian(den, den, 1.0), x, sigmas, extra_args={"seed": 3})
    assert float(out.mean()) == pytest.approx(0.5, abs=0.05)
    assert float(out.std()) == pytest.approx(0.7, abs=0.1)


@pytest.mark.parametrize("name", ["euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp",
                                  "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp",
                                  "gradient_estimation_cfg_pp"])
def test_cfg_pp_equals_base_sampler_without_guidance(name):
    """CFG++ only differs from its base sampler through (guided - uncond); with equal predictions they agree."""
    den = GaussianDenoiser()
    x, sigmas = start()
    model = GuidedGaussian(den, den, 1.0)
    base = name.replace("_cfg_pp", "")
    ours = SAMPLERS[name](model, x, sigmas, extra_args={"seed": 9})
    ref = SAMPLERS[base](model, x, sigmas, extra_args={"seed": 9})
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_euler_cfg_pp_step_uses_uncond_direction():
    """One CFG++ Euler step (Chung et al. 2024, Algorithm 1): x1 = D_cfg + sigma_1·(x0 - D_uncond)/sigma_0."""
    cond, uncond = GaussianDenoiser(mu=1.0), GaussianDenoiser(mu=-1.0)
    model = GuidedGaussian(cond, uncond, 1.0)  # cfg 1: the uncond pass must still run for CFG++
    x0 = torch.randn(1, 4, 4, 4)
    sigmas = torch.tensor([3.0, 1.0])
    out = SAMPLERS["euler_cfg_pp"](model, x0, sigmas)
    s = torch.tensor([3.0])
    expected = cond(x0, s) + 1.0 * (x0 - uncond(x0, s)) / 3.0
    torch.testing.assert_close(out, expected)


def test_ddim_is_euler_and_lcm_renoises():
    den = GaussianDenoiser()
    x, sigmas = start()
    assert torch.equal(SAMPLERS["ddim"](den, x, sigmas), SAMPLERS["euler"](den, x, sigmas))
    sig = torch.tensor([5.0, 2.0, 0.0])
    noise = seeded_noise(x, 1)
    out = SAMPLERS["lcm"](den, x, sig, noise_sampler=noise)
    n = seeded_noise(x, 1)(None, None)
    x1 = den(x, torch.tensor([5.0])) + 2.0 * n
    torch.testing.assert_close(out, den(x1, torch.tensor([2.0])))


def test_deis_coefficients_integrate_dsigma():
    """Each tAB coefficient set integrates the Lagrange basis against dsigma/dt: they sum to the step."""
    sigmas = calculate_sigmas(MS, "karras", 8)
    coeffs = deis_coefficients(sigmas, 3)
    for i, c in enumerate(coeffs[:-1]):
        if c:
            assert float(sum(c)) == pytest.approx(float(sigmas[i + 1] - sigmas[i]), rel=2e-3)
    rho = deis_coefficients(sigmas, 3, deis_mode="rhoab")
    for i, c in enumerate(rho):
        if c:
            assert float(sum(c)) == pytest.approx(float(sigmas[i + 1] - sigmas[i]), rel=1e-4)


def _plms_ldm_reference(den, x_ve, sigmas):
    """PLMS written as in ldm/models/diffusion/plms.py (VP space, alphas_cumprod), for comparison."""
    alphas = 1 / (sigmas ** 2 + 1)
    x = x_ve * alphas[0].sqrt()
    old = []

    def eps_at(x_vp, i):
        s = sigmas[i]
        xv = x_vp / alphas[i].sqrt()
        return (xv - den(xv, s.reshape(1))) / s

    def step(x_vp, e, i):
        a, a_prev = alphas[i], alphas[i + 1]
        pred_x0 = (x_vp - (1 - a).sqrt() * e) / a.sqrt()
        return a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e

    for i in range(len(sigmas) - 1):
        e = eps_at(x, i)
        if not old:
            x_prev = step(x, e, i)
            e_prime = (e + eps_at(x_prev, i + 1)) / 2
        elif len(old) == 1:
            e_prime = (3 * e - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = step(x, e_prime, i)
        old = (old + [e])[-3:]
    return x / alphas[-1].sqrt()


def test_plms_matches_the_ldm_formulation():
    den = GaussianDenoiser()
    x, _ = start(shape=(1, 4, 8, 8))
    sigmas = calculate_sigmas(MS, "ddim_uniform", 12)[:-1]  # LDM's PLMS ends at the last DDIM timestep
    x = x / calculate_sigmas(MS, "karras", 10)[0] * sigmas[0]
    ours = SAMPLERS["plms"](den, x.double(), sigmas.double())
    ref = _plms_ldm_reference(den, x.double(), sigmas.double())
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_callback_reports_every_step():
    den = GaussianDenoiser()
    x, sigmas = start(steps=6)
    seen = []
    SAMPLERS["dpmpp_2m"](den, x, sigmas, callback=lambda info: seen.append((info["i"], float(info["sigma"]))))
    assert [i for i, _ in seen] == list(range(6))
    assert [s for _, s in seen] == pytest.approx([float(s) for s in sigmas[:-1]])


def test_uni_pc_uses_one_evaluation_per_step():
    den = GaussianDenoiser()
    x, sigmas = start(steps=8)
    SAMPLERS["uni_pc"](den, x, sigmas)
    assert den.calls == 8


@pytest.fixture(scope="module")
def tiny_guided():
    """A classifier-free-guided tiny random-weight SD1 UNet (Loom's UNetModel) as the denoiser."""
    from diffusion.networks.diffusion_model import DiffusionModel
    from diffusion.sampling.guidance import CFGGuider
    from diffusion.networks.unet import build_unet
    from tests.fixtures.tiny_checkpoints import tiny_unet_config, tiny_unet_state_dict
    from tests.fixtures.tiny_text_encoders import TINY_WIDTH
    model = DiffusionModel(build_unet(tiny_unet_config("sd15"), tiny_unet_state_dict("sd15", seed=4),
                                      dtype=torch.float32))
    gen = torch.Generator().manual_seed(0)
    guider = CFGGuider(model)
    guider.set_conds([[torch.randn(1, 77, TINY_WIDTH, generator=gen), {}]],
                     [[torch.randn(1, 77, TINY_WIDTH, generator=gen), {}]])
    guider.set_cfg(4.0)
    guider.prepare(torch.zeros(1, 4, 8, 8), None, None)
    return lambda x, sigma, **kw: guider(x, sigma)


@pytest.mark.parametrize("name", KD_PLAIN + ["euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_3m_sde"])
def test_samplers_match_k_diffusion_on_tiny_unet(tiny_guided, name):
    kd = load_k_diffusion_sampling()
    x, sigmas = start(shape=(1, 4, 8, 8), steps=4)
    if name == "lms":
        sigmas = sigmas[:-1]
    kw_ours, kw_theirs = {}, {}
    if name in KD_NOISED:
        kw_ours["noise_sampler"], kw_theirs["noise_sampler"] = seeded_noise(x), seeded_noise(x)
    elif name.endswith("_sde"):
        kw_ours["extra_args"] = {"seed": 5}
        kw_theirs["noise_sampler"] = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=5)
    with torch.no_grad():
        ours = SAMPLERS[name](tiny_guided, x, sigmas, **kw_ours)
        theirs = getattr(kd, f"sample_{name}")(tiny_guided, x, sigmas, disable=True, **kw_theirs)
    # dpmpp_3m_sde follows ComfyUI's alpha_t-weighted form, k-diffusion 0.1.1 the equivalent exp(-h(1+eta))
    # form; on UNet-sized values the two round differently by a few 1e-5.
    tol = 5e-5 if name == "dpmpp_3m_sde" else 1e-5
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
