"""ModelSamplingContinuousEDM and ModelSamplingContinuousV: continuous-sigma schedules patched onto a MODEL, and
ModelComputeDtype (ComfyUI `comfy_extras/nodes_model_advanced.py`, same names, inputs and semantics).

"edm" is EDM preconditioning with σ_data 0.5, "edm_playground_v2.5" the same plus Playground v2.5's latent
format, "v_prediction" (CosXL and other EDM-v fine-tunes) and "eps" keep σ_data 1. The schedule lives in
`diffusion/sampling/model_sampling_continuous.py`; the patch is an object patch on the clone, the base model is untouched.
ModelComputeDtype only records the wish (`model_compute_dtype` option on a clone); the model manager carries it out.
"""
from __future__ import annotations

import torch

from diffusion.files.latent_formats import PLAYGROUND_V25
from diffusion.sampling.model_sampling_continuous import ContinuousSampling
from diffusion.patcher import ModelHandle
from nodes.spec import Combo, Float, Input, Node, Output

EDM_SAMPLINGS = ("v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow")
_EDM = {  # sampling -> (parameterisation, sigma_data)
    "v_prediction": ("v_prediction", 1.0), "edm": ("edm", 0.5), "edm_playground_v2.5": ("edm", 0.5),
    "eps": ("eps", 1.0),
}


def _sigma_range(node: str, sigma_min: float, sigma_max: float) -> None:
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"{node}: sigma_min ({sigma_min}) must be above 0 and below sigma_max ({sigma_max})")


class ModelSamplingContinuousEDM(Node):
    """Samples the model with a continuous EDM schedule between sigma_min and sigma_max."""

    CATEGORY = "advanced/model"
    INPUTS = (
        Input("model", "MODEL"),
        Combo("sampling", EDM_SAMPLINGS),
        Float("sigma_max", 120.0, min=0.0, max=1000.0, step=0.001, round=False),
        Float("sigma_min", 0.002, min=0.0, max=1000.0, step=0.001, round=False),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, sampling: str, sigma_max: float, sigma_min: float) -> tuple[ModelHandle]:
        if sampling not in _EDM:
            raise ValueError(f"ModelSamplingContinuousEDM: sampling {sampling!r} (Cosmos) is not supported by Loom; "
                             f"supported: {', '.join(_EDM)}")
        _sigma_range("ModelSamplingContinuousEDM", sigma_min, sigma_max)
        prediction, sigma_data = _EDM[sampling]
        patched = model.clone()
        patched.add_object_patch("model_sampling", ContinuousSampling("edm", prediction, sigma_min, sigma_max,
                                                                      sigma_data))
        if sampling == "edm_playground_v2.5":
            patched.add_object_patch("latent_format", PLAYGROUND_V25)
        return (patched,)


class ModelSamplingContinuousV(Node):
    """Samples a v-prediction model with the continuous arctan-time schedule between sigma_min and sigma_max."""

    CATEGORY = "advanced/model"
    INPUTS = (
        Input("model", "MODEL"),
        Combo("sampling", ("v_prediction",)),
        Float("sigma_max", 500.0, min=0.0, max=1000.0, step=0.001, round=False),
        Float("sigma_min", 0.03, min=0.0, max=1000.0, step=0.001, round=False),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, sampling: str, sigma_max: float, sigma_min: float) -> tuple[ModelHandle]:
        _sigma_range("ModelSamplingContinuousV", sigma_min, sigma_max)
        patched = model.clone()
        patched.add_object_patch("model_sampling", ContinuousSampling("v", "v_prediction", sigma_min, sigma_max))
        return (patched,)


COMPUTE_DTYPES = {"default": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelComputeDtype(Node):
    """Makes the model compute in fp32, fp16 or bf16 whatever precision its weights are stored in ("default": in
    the weights' own)."""

    CATEGORY = "advanced/debug/model"
    INPUTS = (Input("model", "MODEL"), Combo("dtype", tuple(COMPUTE_DTYPES)))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, dtype: str = "default") -> tuple[ModelHandle]:
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"ModelComputeDtype: dtype {dtype!r} is not one of {', '.join(COMPUTE_DTYPES)}")
        patched = model.clone()
        patched.set_option("model_compute_dtype", COMPUTE_DTYPES[dtype])
        return (patched,)


NODES: list[type] = [ModelSamplingContinuousEDM, ModelSamplingContinuousV, ModelComputeDtype]
