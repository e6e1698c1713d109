"""DPM-Solver++ family (Lu et al. 2022b, arXiv:2211.01095) in data-prediction form on lambda = -log(sigma):
2S ancestral, the stochastic SDE variant, 2M, 2M SDE (midpoint/heun), 3M SDE, their CFG++ forms and the
`_gpu` variants (Brownian tree kept on the latent's device instead of the CPU)."""
from __future__ import annotations

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.common import (Callback, Denoiser, UncondCapture, ancestral_noise, get_ancestral_step,
                                       half_log_snr, lambda_to_sigma, report, sde_noise, setup, to_d)


def _2s_midpoint(model, x, denoised, sigma, sigma_down, s_in, extra_args):
    """One DPM-Solver++(2S) step from sigma to sigma_down; returns (x at sigma_down, midpoint prediction)."""
    t, t_next = half_log_snr(sigma), half_log_snr(sigma_down)
    h = t_next - t
    s = t + 0.5 * h
    x_2 = (lambda_to_sigma(s) / lambda_to_sigma(t)) * x - (-h * 0.5).expm1() * denoised
    denoised_2 = model(x_2, lambda_to_sigma(s) * s_in, **extra_args)
    return (lambda_to_sigma(t_next) / lambda_to_sigma(t)) * x - (-h).expm1() * denoised_2, denoised_2


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                              callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                              noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver++(2S) second-order steps (k-diffusion)."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            x, _ = _2s_midpoint(model, x, denoised, sigmas[i], sigma_down, s_in, extra_args)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                                     callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                                     noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral with CFG++ (Chung et al. 2024): steps use the unconditional prediction and
    the guidance vector (guided - uncond) of the first evaluation is added after the step (ComfyUI)."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    capture = UncondCapture()
    extra_args = capture.install(extra_args)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond = capture.uncond
        guidance_vector = denoised - uncond
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], uncond) * (sigma_down - sigmas[i])
        else:
            t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (lambda_to_sigma(s) / lambda_to_sigma(t)) * x - (-h * 0.5).expm1() * uncond
            model(x_2, lambda_to_sigma(s) * s_in, **extra_args)
            x = (lambda_to_sigma(t_next) / lambda_to_sigma(t)) * x - (-h).expm1() * capture.uncond
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        x = x + guidance_vector
    return x


def _sde_substep(x, denoised, lambda_s, lambda_to, alpha_s, alpha_to, eta):
    """Deterministic part of an SDE-DPM-Solver++ sub-step from lambda_s towards lambda_to, and the noise size."""
    sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_to.neg().exp(), eta)
    h_ = sd.log().neg() - lambda_s
    return (alpha_to / alpha_s) * (-h_).exp() * x - alpha_to * (-h_).expm1() * denoised, su


@torch.no_grad()
def sample_dpmpp_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                     callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                     noise_sampler: NoiseSampler | None = None, r=1 / 2, cpu_tree: bool = True) -> torch.Tensor:
    """DPM-Solver++ (stochastic), a two-stage SDE solver (k-diffusion sample_dpmpp_sde), Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    extra_args, s_in = setup(x, extra_args)
    noise = sde_noise(x, sigmas, extra_args, noise_sampler, cpu=cpu_tree)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = lambda_to_sigma(lambda_s_1)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2, su = _sde_substep(x, denoised, lambda_s, lambda_s_1, alpha_s, alpha_s_1, eta)
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x, su = _sde_substep(x, denoised_d, lambda_s, lambda_t, alpha_s, alpha_t, eta)
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_sde_gpu(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                         noise_sampler=None, r=1 / 2) -> torch.Tensor:
    """dpmpp_sde with the Brownian tree on the latent's device (ComfyUI's `_gpu` variant)."""
    return sample_dpmpp_sde(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                            noise_sampler=noise_sampler, r=r, cpu_tree=False)


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                    callback: Callback = None, disable=None) -> torch.Tensor:
    """DPM-Solver++(2M), the second-order multistep solver (Lu et al. 2022b, Algorithm 2)."""
    extra_args, s_in = setup(x, extra_args)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - half_log_snr(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (lambda_to_sigma(t_next) / lambda_to_sigma(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                           callback: Callback = None, disable=None) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++ (Chung et al. 2024), as ComfyUI's sample_dpmpp_2m_cfg_pp."""
    extra_args, s_in = setup(x, extra_args)
    capture = UncondCapture()
    extra_args = capture.install(extra_args)
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond = capture.uncond
        report(callback, x, i, sigmas[i], denoised)
        t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - half_log_snr(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                        callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler: NoiseSampler | None = None, solver_type="midpoint",
                        cpu_tree: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022b, §5 and Appendix; k-diffusion), midpoint or heun correction."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    extra_args, s_in = setup(x, extra_args)
    noise = sde_noise(x, sigmas, extra_args, noise_sampler, cpu=cpu_tree)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde_gpu(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                            s_noise=1.0, noise_sampler=None, solver_type="midpoint") -> torch.Tensor:
    """dpmpp_2m_sde with the Brownian tree on the latent's device."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                               noise_sampler=noise_sampler, solver_type=solver_type, cpu_tree=False)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                             s_noise=1.0, noise_sampler=None, solver_type="heun") -> torch.Tensor:
    """dpmpp_2m_sde with the heun-type second-order correction."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                               noise_sampler=noise_sampler, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun_gpu(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                                 s_noise=1.0, noise_sampler=None, solver_type="heun") -> torch.Tensor:
    """dpmpp_2m_sde_heun with the Brownian tree on the latent's device."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                               noise_sampler=noise_sampler, solver_type=solver_type, cpu_tree=False)


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                        callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler: NoiseSampler | None = None, cpu_tree: bool = True) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion): third-order multistep with exponential-integrator phi functions."""
    if len(sigmas) <= 1:
        return x
    extra_args, s_in = setup(x, extra_args)
    noise = sde_noise(x, sigmas, extra_args, noise_sampler, cpu=cpu_tree)
    denoised_1, denoised_2, h, h_1, h_2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / (h_1 / h))
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde_gpu(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                            s_noise=1.0, noise_sampler=None) -> torch.Tensor:
    """dpmpp_3m_sde with the Brownian tree on the latent's device."""
    return sample_dpmpp_3m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                               noise_sampler=noise_sampler, cpu_tree=False)
