"""SAMPLER nodes with a sampler's knobs exposed: SamplerEulerAncestral, SamplerEulerAncestralCFGPP,
SamplerEulerCFGpp, SamplerLMS, SamplerDPMPP_2M_SDE, SamplerDPMPP_3M_SDE, SamplerDPMPP_SDE,
SamplerDPMPP_2S_Ancestral, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver and SamplerLCMUpscale.

Each returns a `diffusion.sampling.sample.Sampler` (the function and its options) that SamplerCustom(Advanced) runs.
Names, inputs, defaults, ranges, categories and display names are ComfyUI's (`comfy_extras/nodes_custom_sampler.py`,
`nodes_advanced_samplers.py`); "noise_device" picks the `_gpu` variant whose Brownian tree lives on the latent's
device, as ComfyUI does.
"""
from __future__ import annotations

from dataclasses import dataclass

from diffusion.files.assemble import model_sampling_of
from diffusion.patcher import ModelHandle
from diffusion.sampling.sample import Sampler, sampler_object
from diffusion.sampling.samplers import get_sampler
from diffusion.sampling.samplers.sa_solver import tau_interval
from diffusion.sampling.samplers.variants import sample_euler_cfg_pp_alternative, sample_lcm_upscale
from nodes.spec import Boolean, Combo, Float, Input, Int, Node, Output
from nodes.upscaling_math import common_upscale

_SAMPLERS = "sampling/custom_sampling/samplers"
_NOISE_DEVICES = ("gpu", "cpu")


def _knob(name: str, default: float, top: float = 100.0) -> object:
    return Float(name, default, min=0.0, max=top, step=0.01, round=False)


def _on_device(name: str, noise_device: str) -> str:
    return name if noise_device == "cpu" else name + "_gpu"


class SamplerEulerAncestral(Node):
    """Euler ancestral with its eta (how much fresh noise per step) and s_noise (its scale)."""

    CATEGORY = _SAMPLERS
    INPUTS = (_knob("eta", 1.0), _knob("s_noise", 1.0))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float) -> tuple[Sampler]:
        return (sampler_object("euler_ancestral", eta=eta, s_noise=s_noise),)


class SamplerEulerAncestralCFGPP(Node):
    """Euler ancestral with CFG++ (re-noising along the unconditional prediction)."""

    DISPLAY_NAME = "SamplerEulerAncestralCFG++"
    CATEGORY = _SAMPLERS
    INPUTS = (_knob("eta", 1.0, top=1.0), _knob("s_noise", 1.0, top=10.0))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float) -> tuple[Sampler]:
        return (sampler_object("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise),)


class SamplerEulerCFGpp(Node):
    """Euler with CFG++; "alternative" is the earlier formulation of the step."""

    DISPLAY_NAME = "SamplerEulerCFG++"
    CATEGORY = "_for_testing"
    INPUTS = (Combo("version", ("regular", "alternative")),)
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, version: str) -> tuple[Sampler]:
        if version == "alternative":
            return (Sampler(sample_euler_cfg_pp_alternative),)
        return (sampler_object("euler_cfg_pp"),)


class SamplerLMS(Node):
    """Linear multistep of the given order."""

    CATEGORY = _SAMPLERS
    INPUTS = (Int("order", 4, min=1, max=100),)
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, order: int) -> tuple[Sampler]:
        return (sampler_object("lms", order=order),)


class SamplerDPMPP_3M_SDE(Node):
    """DPM-Solver++(3M) SDE."""

    CATEGORY = _SAMPLERS
    INPUTS = (_knob("eta", 1.0), _knob("s_noise", 1.0), Combo("noise_device", _NOISE_DEVICES))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float, noise_device: str) -> tuple[Sampler]:
        return (sampler_object(_on_device("dpmpp_3m_sde", noise_device), eta=eta, s_noise=s_noise),)


class SamplerDPMPP_2M_SDE(Node):
    """DPM-Solver++(2M) SDE with the midpoint or Heun correction."""

    CATEGORY = _SAMPLERS
    INPUTS = (Combo("solver_type", ("midpoint", "heun")), _knob("eta", 1.0), _knob("s_noise", 1.0),
              Combo("noise_device", _NOISE_DEVICES))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple[Sampler]:
        return (sampler_object(_on_device("dpmpp_2m_sde", noise_device), eta=eta, s_noise=s_noise,
                               solver_type=solver_type),)


class SamplerDPMPP_SDE(Node):
    """DPM-Solver++ SDE with intermediate step ratio r."""

    CATEGORY = _SAMPLERS
    INPUTS = (_knob("eta", 1.0), _knob("s_noise", 1.0), _knob("r", 0.5), Combo("noise_device", _NOISE_DEVICES))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple[Sampler]:
        return (sampler_object(_on_device("dpmpp_sde", noise_device), eta=eta, s_noise=s_noise, r=r),)


class SamplerDPMPP_2S_Ancestral(Node):
    """DPM-Solver++(2S) ancestral."""

    CATEGORY = _SAMPLERS
    INPUTS = (_knob("eta", 1.0), _knob("s_noise", 1.0))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, eta: float, s_noise: float) -> tuple[Sampler]:
        return (sampler_object("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise),)


class SamplerDPMAdaptative(Node):
    """Adaptive-step DPM-Solver with its error-controller settings."""

    CATEGORY = _SAMPLERS
    INPUTS = (Int("order", 3, min=2, max=3), _knob("rtol", 0.05), _knob("atol", 0.0078), _knob("h_init", 0.05),
              _knob("pcoeff", 0.0), _knob("icoeff", 1.0), _knob("dcoeff", 0.0), _knob("accept_safety", 0.81),
              _knob("eta", 0.0), _knob("s_noise", 1.0))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, order: int, rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float,
                dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> tuple[Sampler]:
        return (sampler_object("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff,
                               icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety, eta=eta,
                               s_noise=s_noise),)


@dataclass(frozen=True)
class ReverseTimeNoiseScaler:
    """ER-SDE's noise scaler for the reverse-time SDE: x^(eta+1) (eta 0 is the ODE)."""

    eta: float

    def __call__(self, x):
        return x ** (self.eta + 1)


class SamplerER_SDE(Node):
    """The extended reverse-time SDE solver: ER-SDE, the plain reverse-time SDE (with eta), or the ODE."""

    CATEGORY = _SAMPLERS
    INPUTS = (Combo("solver_type", ("ER-SDE", "Reverse-time SDE", "ODE")), Int("max_stage", 3, min=1, max=3),
              Float("eta", 1.0, min=0.0, max=100.0, step=0.01, round=False,
                    tooltip="Stochastic strength of the reverse-time SDE; 0 is the deterministic ODE. "
                            "The ER-SDE solver type ignores it."),
              _knob("s_noise", 1.0))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple[Sampler]:
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0, 0
        scaler = None if solver_type == "ER-SDE" else ReverseTimeNoiseScaler(eta)
        return (sampler_object("er_sde", s_noise=s_noise, noise_scaler=scaler, max_stage=max_stage),)


class SamplerSASolver(Node):
    """SA-Solver: stochastic between sde_start_percent and sde_end_percent of sampling, deterministic outside."""

    CATEGORY = _SAMPLERS
    INPUTS = (Input("model", "MODEL"), Float("eta", 1.0, min=0.0, max=10.0, step=0.01, round=False),
              Float("sde_start_percent", 0.2, min=0.0, max=1.0, step=0.001),
              Float("sde_end_percent", 0.8, min=0.0, max=1.0, step=0.001), _knob("s_noise", 1.0),
              Int("predictor_order", 3, min=1, max=6), Int("corrector_order", 4, min=0, max=6),
              Boolean("use_pece"), Boolean("simple_order_2"))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, model: ModelHandle, eta: float, sde_start_percent: float, sde_end_percent: float,
                s_noise: float, predictor_order: int, corrector_order: int, use_pece: bool,
                simple_order_2: bool) -> tuple[Sampler]:
        sampling = model_sampling_of(model)
        tau = tau_interval(float(sampling.percent_to_sigma(sde_start_percent)),
                           float(sampling.percent_to_sigma(sde_end_percent)), eta=eta)
        return (Sampler(get_sampler("sa_solver"), {"tau_func": tau, "s_noise": s_noise,
                                                  "predictor_order": predictor_order,
                                                  "corrector_order": corrector_order, "use_pece": use_pece,
                                                  "simple_order_2": simple_order_2}),)


class SamplerLCMUpscale(Node):
    """LCM sampling that grows the latent by scale_ratio over the first scale_steps steps (−1: half of them)."""

    CATEGORY = _SAMPLERS
    INPUTS = (Float("scale_ratio", 1.0, min=0.1, max=20.0, step=0.01),
              Int("scale_steps", -1, min=-1, max=1000, step=1),
              Combo("upscale_method", ("bislerp", "nearest-exact", "bilinear", "area", "bicubic")))
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, scale_ratio: float, scale_steps: int, upscale_method: str) -> tuple[Sampler]:
        return (Sampler(sample_lcm_upscale, {"total_upscale": scale_ratio,
                                             "upscale_steps": None if scale_steps < 0 else scale_steps,
                                             "upscale_method": upscale_method, "resize": common_upscale}),)


NODES: list[type] = [SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerEulerCFGpp, SamplerLMS,
                     SamplerDPMPP_3M_SDE, SamplerDPMPP_2M_SDE, SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral,
                     SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver, SamplerLCMUpscale]
