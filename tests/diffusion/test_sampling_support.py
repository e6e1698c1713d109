"""Support for the sampler tests (no tests here): test oracles, k-diffusion's sampling module (PyPI
`k-diffusion`, imported by file path so its heavy package __init__ is skipped) and an analytic denoiser for
Gaussian data."""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch


def load_k_diffusion_sampling():
    """k_diffusion/sampling.py as a module, with a one-function stand-in for its `utils` import."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install k-diffusion --no-deps torchdiffeq)")
    name = "_kdiffusion_oracle"
    if f"{name}.sampling" in sys.modules:
        return sys.modules[f"{name}.sampling"]
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType(f"{name}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules[name] = package
    sys.modules[f"{name}.utils"] = utils
    path = spec.submodule_search_locations[0] + "/sampling.py"
    sampling_spec = importlib.util.spec_from_file_location(f"{name}.sampling", path)
    module = importlib.util.module_from_spec(sampling_spec)
    sys.modules[f"{name}.sampling"] = module
    try:
        sampling_spec.loader.exec_module(module)
    except ImportError as exc:
        pytest.skip(f"k_diffusion.sampling needs {exc.name}")
    return module


class GaussianDenoiser:
    """The exact denoiser of data ~ N(mu, s²) (per element) under noise sigma: E[x0 | x] =
    (x·s² + mu·sigma²)/(s² + sigma²). The probability-flow ODE from x_T at sigma_T is solved exactly by
    x(sigma) = mu + (x_T - mu)·sqrt(s² + sigma²)/sqrt(s² + sigma_T²)."""

    def __init__(self, mu: float = 0.5, s: float = 0.7):
        self.mu, self.s = mu, s
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        self.calls += 1
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (x * self.s ** 2 + self.mu * sig ** 2) / (self.s ** 2 + sig ** 2)

    def ode_solution(self, x_t: torch.Tensor, sigma_t: float, sigma: float = 0.0) -> torch.Tensor:
        return self.mu + (x_t - self.mu) * ((self.s ** 2 + sigma ** 2) / (self.s ** 2 + sigma_t ** 2)) ** 0.5


class GuidedGaussian:
    """Two Gaussian denoisers (cond, uncond) combined by guidance.cfg_function with the model_options hooks,
    so CFG++ samplers can read the unconditional prediction."""

    def __init__(self, cond: GaussianDenoiser, uncond: GaussianDenoiser, cfg: float):
        self.cond, self.uncond, self.cfg = cond, uncond, cfg

    def __call__(self, x, sigma, model_options=None, **_):
        from diffusion.sampling.guidance import cfg_function
        return cfg_function(None, self.cond(x, sigma), self.uncond(x, sigma), self.cfg, x, sigma, model_options or {})
