"""The discrete noise schedule of the Stable Diffusion families and the model parameterisations.

Owns: the 1000-step scaled-linear beta schedule (DDPM, Ho et al. 2020; betas 0.00085…0.012 as in the
original SD configs), its sigma table (sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod), the
variance-exploding view of Karras et al. 2022), sigma <-> timestep conversion, percent -> sigma, the
zero-terminal-SNR rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", Algorithm 1), and the thin parameterisation wrappers (STYLE.md §3): how the network input is
scaled (c_in) and how a network output becomes a denoised prediction, for eps, v_prediction, x0 and
LCM (consistency-model boundary conditions, Luo et al. 2023).

Conventions follow ComfyUI's ModelSamplingDiscrete so the same sigmas and timesteps reach the UNet:
`timestep(sigma)` is the index of the nearest log-sigma in the table (an integer, as ComfyUI feeds the
UNet), `sigma(t)` interpolates log-sigma linearly between table entries.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

PREDICTION_TYPES = ("eps", "v_prediction", "x0", "lcm")


def _bcast(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample sigma of shape (B,) so it broadcasts against a B×C×H×W tensor."""
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


def scaled_linear_betas(timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The "scaled linear" schedule of the SD configs: betas linear in sqrt space, in float64."""
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps, dtype=torch.float64) ** 2


def rescale_zero_terminal_snr_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Zero-terminal-SNR rescale of a sigma table (Lin et al. 2023, Algorithm 1).

    sqrt(alphas_cumprod) is shifted so its last value is zero and scaled so its first value is kept;
    the last alpha_bar is then set to a tiny positive number so the last sigma stays finite (the value
    ComfyUI uses, 4.8973451890853435e-08, which gives sigma ≈ 4519)."""
    alphas_bar_sqrt = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


class Parameterization(Protocol):
    """How a network's input is scaled and how its output becomes a denoised latent."""

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor,
                           timestep: torch.Tensor) -> torch.Tensor: ...


class EpsPrediction:
    """The network predicts the added noise: denoised = x - sigma·eps (Ho et al. 2020), c_in = 1/sqrt(σ²+σ_data²)."""

    sigma_data = 1.0

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x / (_bcast(sigma, x) ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input, timestep):
        return model_input - model_output * _bcast(sigma, model_output)


class VPrediction(EpsPrediction):
    """The network predicts v = alpha·eps - sigma_vp·x0 (Salimans & Ho 2022, §4), rewritten in sigma space."""

    def calculate_denoised(self, sigma, model_output, model_input, timestep):
        s = _bcast(sigma, model_output)
        sd2 = self.sigma_data ** 2
        return model_input * sd2 / (s ** 2 + sd2) - model_output * s * self.sigma_data / (s ** 2 + sd2) ** 0.5


class X0Prediction(EpsPrediction):
    """The network predicts the clean latent directly."""

    def calculate_denoised(self, sigma, model_output, model_input, timestep):
        return model_output


class LCMPrediction(EpsPrediction):
    """Latent Consistency Model boundary conditions (Luo et al. 2023, eq. 5 with sigma_data 0.5 and the
    timestep scaled by 10, as the LCM-LoRA/LCM-SD1.5 releases): out = c_skip·x + c_out·x0_eps."""

    def calculate_denoised(self, sigma, model_output, model_input, timestep):
        t = _bcast(timestep, model_output).to(model_output.dtype)
        x0 = model_input - model_output * _bcast(sigma, model_output)
        sigma_data = 0.5
        scaled_t = t * 10.0
        c_skip = sigma_data ** 2 / (scaled_t ** 2 + sigma_data ** 2)
        c_out = scaled_t / (scaled_t ** 2 + sigma_data ** 2) ** 0.5
        return c_out * x0 + c_skip * model_input


# Names other modules use for the same parameterisations (diffusion/families.py says "v").
_ALIASES = {"v": "v_prediction", "epsilon": "eps"}

_PARAMETERIZATIONS: dict[str, type] = {
    "eps": EpsPrediction, "v_prediction": VPrediction, "x0": X0Prediction, "lcm": LCMPrediction,
}


class ModelSampling(nn.Module):
    """The discrete schedule plus a parameterisation.

    Args:
        prediction: one of "eps", "v_prediction" (or "v"), "x0", "lcm" (ComfyUI's ModelSamplingDiscrete choices).
        zsnr: rescale the schedule to zero terminal SNR.
        timesteps, beta_start, beta_end: the scaled-linear beta schedule.
        original_timesteps: keep only this many evenly spaced table entries (LCM distillation uses 50);
            None keeps all. Chosen automatically as 50 for prediction "lcm".
    """

    def __init__(self, prediction: str = "eps", zsnr: bool = False, timesteps: int = 1000,
                 beta_start: float = 0.00085, beta_end: float = 0.012, original_timesteps: int | None = None):
        super().__init__()
        prediction = _ALIASES.get(prediction, prediction)
        if prediction not in _PARAMETERIZATIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTION_TYPES}")
        self.prediction = prediction
        self.parameterization: Parameterization = _PARAMETERIZATIONS[prediction]()
        self.zsnr = zsnr
        self.num_timesteps = timesteps
        betas = scaled_linear_betas(timesteps, beta_start, beta_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr_sigmas(sigmas)
        if original_timesteps is None and prediction == "lcm":
            original_timesteps = 50
        self.skip_steps = 1
        if original_timesteps is not None:
            # Distilled schedule: the entries at timesteps 999, 979, ..., 19 (ComfyUI ModelSamplingDiscreteDistilled).
            self.skip_steps = timesteps // original_timesteps
            idx = [timesteps - 1 - k * self.skip_steps for k in range(original_timesteps)][::-1]
            sigmas = sigmas[idx]
        self.register_buffer("sigmas", sigmas.float(), persistent=False)
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar per table entry, recovered from the sigmas (used by DDIM/PLMS-style code)."""
        return 1.0 / (self.sigmas.double() ** 2 + 1.0)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest table index in log-sigma (ComfyUI's `timestep`), scaled back for distilled schedules."""
        sigma = torch.as_tensor(sigma)
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        idx = dists.abs().argmin(dim=0).view(sigma.shape)
        return (idx * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    sigma_to_t = timestep

    def sigma_to_t_interp(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep by linear interpolation of log-sigma (k-diffusion's DiscreteSchedule.sigma_to_t)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return (t * self.skip_steps + (self.skip_steps - 1)).view(sigma.shape)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (possibly fractional) timestep: log-sigma interpolated between table entries."""
        timestep = torch.as_tensor(timestep)
        t = (timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps
        t = t.clamp(min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    t_to_sigma = sigma

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the way through sampling: 0 -> above sigma_max, 1 -> 0 (ComfyUI semantics)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """c_in: scale the noisy latent x (variance sigma²+1) to unit variance for the network."""
        return self.parameterization.calculate_input(sigma, x)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        """Turn the network's raw output into the denoised prediction x0 (sampler latent space)."""
        timestep = self.timestep(sigma) if self.prediction == "lcm" else sigma
        return self.parameterization.calculate_denoised(sigma, model_output, model_input, timestep)

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """The sampler's starting point: noise·sqrt(1+σ²)+latent when starting from the largest sigma
        (the VP prior, as ComfyUI does), else noise·σ+latent."""
        s = _bcast(torch.as_tensor(sigma, device=noise.device).reshape(-1), noise)
        scale = torch.sqrt(1.0 + s ** 2.0) if max_denoise else s
        return noise * scale + latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Undo any output scaling: the identity for the discrete SD schedules."""
        return latent

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        """Whether sampling starts at (or above) the schedule's largest sigma (ComfyUI Sampler.max_denoise)."""
        max_sigma, first = float(self.sigma_max), float(sigmas[0])
        return math.isclose(max_sigma, first, rel_tol=1e-05) or first > max_sigma
