"""What a model family declares: the `ModelFamily` record every family module in this package fills in.

A family says how its UNet is recognised (`matches`, from `UNetShapes`, the text-encoder layout found beside it and
the file's metadata), its `UNetConfig` read off the shapes (`unet_config`: the heads rule and depths), the text
encoders it assembles (ComfyUI's names: "clip_l", "clip_h", "clip_g"), its latent format and preview factors, its
model sampling (`prediction`: the default parameterisation and any family-specific metadata/heuristic) and its
memory estimates (`memory_usage_factor`, relative to SD1.5's activation memory per latent pixel) and, for
class-conditional UNets, how a cond becomes the ADM vector `y` (`encode_adm`). The registry (`diffusion.families.registry`) asks them in priority order.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffusion.families.shapes import UNetShapes
from diffusion.files.latent_formats import LatentFormat
from diffusion.networks.unet import UNetConfig

# Metadata values that say "v-prediction" (modelspec.prediction_type, kohya's and A1111's keys).
V_VALUES = ("v", "v_prediction", "v-prediction", "vpred", "v-pred")


@dataclass(frozen=True)
class Evidence:
    """What detection sees: the UNet's shapes, the layout family of the text encoders in the same file (None
    without), and the file's safetensors metadata."""

    shapes: UNetShapes
    text_encoder: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def prediction_from_metadata(metadata: dict[str, str]) -> str | None:
    """"v" or "eps" when the metadata names a prediction type, else None."""
    for key in ("modelspec.prediction_type", "prediction_type"):
        if metadata.get(key):
            return "v" if metadata[key].strip().lower() in V_VALUES else "eps"
    return None


@dataclass(frozen=True)
class SamplingSpec:
    """How a file says it must be sampled when that is not the family's default discrete ε schedule: `kind`
    "discrete" (the 1000-step table, `prediction` "eps"/"v_prediction", `zsnr`) or "edm" (continuous sigmas
    between `sigma_min` and `sigma_max`, `prediction` "v_prediction"/"edm" with `sigma_data`); `latent` names a
    different latent format ("playground_v2.5")."""

    kind: str = "discrete"
    prediction: str = "eps"
    zsnr: bool = False
    sigma_min: float = 0.002
    sigma_max: float = 120.0
    sigma_data: float = 1.0
    latent: str | None = None


@dataclass(frozen=True)
class ModelFamily:
    """One model family. `matches` decides from `Evidence`; a higher `priority` is asked first (specific
    families before the catch-all fallbacks). `prediction(unet_state_dict, metadata)` gives "eps"/"v"."""

    name: str
    description: str
    priority: int
    matches: Callable[[Evidence], bool]
    unet_config: Callable[[UNetShapes], UNetConfig]
    text_encoders: tuple[str, ...]
    latent_format: LatentFormat
    clip_type: str
    prediction_heuristic: Callable[[dict[str, torch.Tensor]], str] | None = None
    memory_usage_factor: float = 1.0
    adm_channels: int | None = None
    # (cond options, latent height px, latent width px, "positive"/"negative", the UNet's ADM width) -> its `y`
    encode_adm: Callable[[dict, int, int, str, int], torch.Tensor] | None = None
    # The checkpoint's top-level marker tensors (`v_pred`, `ztsnr`, `edm_mean`, ...) -> a non-default schedule
    sampling_from_keys: Callable[[dict[str, torch.Tensor]], SamplingSpec | None] | None = None

    def prediction(self, unet: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        """The file's metadata when it names a prediction type; else the family's heuristic, else "eps"."""
        named = prediction_from_metadata(metadata or {})
        if named is not None:
            return named
        return self.prediction_heuristic(unet) if self.prediction_heuristic is not None else "eps"
