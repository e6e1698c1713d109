"""ComfyUI's `comfy.latent_formats` for custom node packs: `LatentFormat` and the family classes (SD15, SDXL,
SDXL_Playground_2_5, SD3) with Loom's factors (`diffusion/files/latent_formats.py`).

Each class is instantiated with no arguments, as ComfyUI's are, and has `scale_factor`, `latent_channels`,
`latent_rgb_factors`, `latent_rgb_factors_bias`, `taesd_decoder_name`, `process_in` and `process_out`.
`isinstance(model.model.latent_format, comfy.latent_formats.SDXL)` holds for Loom's SDXL models.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.files import latent_formats as _loom

BINDING: Any  # set by compat.install_compat before this module runs


class _FormatMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        spec = cls.__dict__.get("_spec") or getattr(cls, "_spec", None)
        if cls.__name__ == "LatentFormat":
            return isinstance(obj, _loom.LatentFormat)
        return spec is not None and obj == spec


class LatentFormat(metaclass=_FormatMeta):
    """A latent space: Loom's `diffusion.files.latent_formats.LatentFormat` under ComfyUI's attribute names."""

    _spec: _loom.LatentFormat = _loom.SD15

    def __init__(self) -> None:
        spec = self._spec
        self.scale_factor = spec.scale_factor
        self.latent_channels = spec.channels
        self.latent_rgb_factors = [list(row) for row in spec.rgb_factors]
        self.latent_rgb_factors_bias = list(spec.rgb_bias) if spec.rgb_bias is not None else None
        self.taesd_decoder_name = spec.taesd_decoder_name
        self.shift_factor = spec.shift_factor
        self.latent_dimensions = 2

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self._spec.process_in(latent)

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self._spec.process_out(latent)


class SD15(LatentFormat):
    _spec = _loom.SD15


class SDXL(LatentFormat):
    _spec = _loom.SDXL


class SDXL_Playground_2_5(LatentFormat):  # noqa: N801 (ComfyUI's class name)
    _spec = _loom.PLAYGROUND_V25


class SD3(LatentFormat):
    _spec = _loom.SD3
