"""The composed denoiser: UNet + model sampling + latent format, as one module whose state-dict keys are
`diffusion_model.*` (the checkpoint's `model.diffusion_model.*` without the `model.` prefix).

`apply_model(x, sigma, c_crossattn, ...)` takes a noisy latent in sampler space at noise level sigma and
returns the denoised prediction in the same space (ComfyUI BaseModel.apply_model): the input is scaled by
c_in, inpainting inputs are concatenated, sigma becomes the UNet's integer timestep, and the raw output
(eps or v) becomes x0 through the parameterisation.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.files.latent_formats import SD15, LatentFormat
from diffusion.sampling.model_sampling import ModelSampling

# "Zero" in pixel space (mid-grey after the VAE's [-1, 1] mapping) encoded and scaled by 0.18215: the masked
# image an inpainting UNet sees when no image is given (ComfyUI blank_inpaint_image_like).
_BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


class DiffusionModel(nn.Module):
    """A UNet with its noise schedule, parameterisation and latent format.

    Args:
        diffusion_model: the network, called as `net(x, timesteps, context=..., y=..., control=...,
            transformer_options=...)` returning the raw prediction.
        model_sampling: schedule + parameterisation (eps or v, zsnr, ...).
        latent_format: scale factor and preview factors of the family.
        family: the registry name of the model's family ("sd1", "sdxl", ...; see `diffusion.families`).
        memory_usage_factor: the family's activation memory per latent pixel relative to SD1.5's.
    """

    def __init__(self, diffusion_model: nn.Module, model_sampling: ModelSampling | None = None,
                 latent_format: LatentFormat = SD15, family: str = "sd1", memory_usage_factor: float = 1.0):
        super().__init__()
        self.family = family
        self.memory_usage_factor = memory_usage_factor
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling if model_sampling is not None else ModelSampling()
        self.latent_format = latent_format

    def working_memory(self, latent_shape: tuple[int, ...], cond_batch: int = 2,
                       dtype: torch.dtype | None = None) -> int:
        """Activation bytes one call on latents of `latent_shape` needs, with `cond_batch` copies run at once (2
        with CFG), in `dtype` (default: the weights' dtype). The memory manager is handed this with the model.

        Empirical for an SD1.5-size UNet with SDPA attention (no T×T matrix): about 20,000 bytes per latent pixel
        and copy at fp16, plus 256 MiB; the family's `memory_usage_factor` scales it (SDXL 0.8, SD3 1.6)."""
        if dtype is None:
            dtype = next(self.parameters()).dtype
        size = max(1, torch.finfo(dtype).bits // 8) if dtype.is_floating_point else 4
        b, _, h, w = latent_shape[:4]
        return int((b * cond_batch * h * w * size * 20_000 + 256 * 1024 ** 2) * self.memory_usage_factor)

    @property
    def model_type(self) -> str:
        """The parameterisation the model was built with ("eps", "v_prediction", "flow", "edm", ...; object
        patches of `model_sampling` on a handle do not change it, as in ComfyUI). ComfyUI packs compare it with
        `comfy.model_base.ModelType`, whose members equal these names."""
        prediction = getattr(self.model_sampling, "prediction", "eps")
        return "eps" if prediction in ("x0", "lcm") else str(prediction)

    def get_dtype(self) -> torch.dtype:
        """The dtype the network's weights are stored in (ComfyUI's BaseModel.get_dtype)."""
        for p in self.diffusion_model.parameters():
            return p.dtype
        return torch.float32

    @property
    def in_channels(self) -> int:
        config = getattr(self.diffusion_model, "config", None)
        return int(getattr(config, "in_channels", 4))

    @property
    def is_inpaint(self) -> bool:
        """A 9-channel UNet: latent + mask + masked-image latent."""
        return self.in_channels == self.latent_format.channels * 2 + 1

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(latent)

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, c_crossattn: torch.Tensor | None = None,
                    c_concat: torch.Tensor | None = None, control: dict | None = None,
                    transformer_options: dict | None = None, y: torch.Tensor | None = None,
                    **_: Any) -> torch.Tensor:
        """Denoised prediction for x (B×C×H×W, sampler space) at per-sample sigma (B,); through the "apply_model"
        wrappers of `transformer_options` when a pack registered some (`diffusion/wrappers.py`)."""
        if transformer_options and transformer_options.get("wrappers"):
            from diffusion.wrappers import run_wrapped

            return run_wrapped("apply_model", self._apply_model, self, transformer_options, x, sigma, c_concat,
                               c_crossattn, control, transformer_options, y=y)
        return self._apply_model(x, sigma, c_concat, c_crossattn, control, transformer_options, y=y)

    def _apply_model(self, x: torch.Tensor, sigma: torch.Tensor, c_concat: torch.Tensor | None = None,
                     c_crossattn: torch.Tensor | None = None, control: dict | None = None,
                     transformer_options: dict | None = None, y: torch.Tensor | None = None,
                     **_: Any) -> torch.Tensor:
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc)], dim=1)
        t = self.model_sampling.timestep(sigma).float()
        out = self.diffusion_model(xc, t, context=c_crossattn, y=y, control=control,
                                   transformer_options=transformer_options or {})
        return self.model_sampling.calculate_denoised(sigma, out.float(), x)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.apply_model(x, sigma, **kwargs)

    def extra_conds(self, cond: dict, *, noise: torch.Tensor, latent_image: torch.Tensor | None = None,
                    denoise_mask: torch.Tensor | None = None, prompt_type: str = "positive",
                    seed: int | None = None) -> dict[str, torch.Tensor]:
        """Model inputs beyond the text context for one cond dict: for inpainting UNets the concatenated
        mask and masked-image latent (from `concat_mask`/`concat_latent_image` if the cond carries them,
        else the sampling run's noise mask and latent; a blank image and an all-ones mask without either); for
        class-conditional families (SDXL) the ADM vector `y` their registry entry builds from the cond (given `seed`,
        the sampling run's, where the family takes it)."""
        self._check_context(cond)
        out: dict[str, torch.Tensor] = {}
        if self.is_instructpix2pix:
            out["c_concat"] = self._image_concat(cond, noise)
        elif self.is_inpaint:
            out["c_concat"] = self._inpaint_concat(cond, noise, latent_image, denoise_mask)
        adm = self.adm_encoder()
        if adm is not None:
            channels = self.diffusion_model.config.adm_in_channels
            # Families that noise-augment image embeddings into `y` (SDXL Revision) take the run's seed.
            seeded = {"seed": seed} if "seed" in inspect.signature(adm).parameters else {}
            y = adm(cond, noise.shape[2] * 8, noise.shape[3] * 8, prompt_type, channels, **seeded)
            out["y"] = y.to(noise.device)
        return out

    def _check_context(self, cond: dict) -> None:
        """A clear error when the text context was made by another family's CLIP (e.g. SDXL base prompts fed
        to the refiner) instead of a shape error deep inside attention."""
        expected = getattr(getattr(self.diffusion_model, "config", None), "context_dim", None)
        context = cond.get("cross_attn")
        if expected is None or context is None or context.shape[-1] == expected:
            return
        raise ValueError(
            f"the conditioning is {context.shape[-1]} wide but this {self.family} model takes a {expected}-wide "
            f"text context: the prompt was encoded with another model's CLIP (for the SDXL refiner use the "
            f"refiner checkpoint's CLIP, for the base the base's)"
        )

    def adm_encoder(self) -> Any:
        """The family's ADM builder when the UNet takes `y` and the family declares one (SDXL), else None."""
        config = getattr(self.diffusion_model, "config", None)
        if getattr(config, "adm_in_channels", None) is None:
            return None
        from diffusion.families import get_family  # the registry imports the networks, not this module

        try:
            return get_family(self.family).encode_adm
        except KeyError:
            return None

    @property
    def is_instructpix2pix(self) -> bool:
        """An InstructPix2Pix UNet (Brooks et al. 2023): the source image's latent as extra input channels."""
        return self.in_channels == self.latent_format.channels * 2

    def _image_concat(self, cond: dict, noise: torch.Tensor) -> torch.Tensor:
        """InstructPix2Pix's extra channels: the cond's `concat_latent_image` (processed in, resized to the
        noise, repeated to its batch), zeros without one."""
        image = cond.get("concat_latent_image")
        if image is None:
            return torch.zeros_like(noise)
        image = self.process_latent_in(image.to(noise.device, noise.dtype))
        if image.shape[-2:] != noise.shape[-2:]:
            image = F.interpolate(image, size=noise.shape[-2:], mode="bilinear", align_corners=False)
        return _resize_batch(image, noise.shape[0])

    def _inpaint_concat(self, cond, noise, latent_image, denoise_mask) -> torch.Tensor:
        mask = cond.get("concat_mask", denoise_mask)
        image = cond.get("concat_latent_image")
        image = latent_image if image is None else self.process_latent_in(image)
        size = noise.shape[-2:]
        if mask is None:
            blank = torch.tensor(_BLANK_INPAINT_LATENT, dtype=noise.dtype, device=noise.device).view(1, -1, 1, 1)
            return torch.cat([torch.ones_like(noise)[:, :1], blank.expand_as(noise)], dim=1)
        if image.shape[1:] != noise.shape[1:]:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        image = _resize_batch(image, noise.shape[0])
        if mask.ndim == noise.ndim:
            mask = mask[:, :1]
        mask = mask.reshape((-1, 1) + tuple(mask.shape[-2:]))
        if mask.shape[-2:] != size:
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        mask = _resize_batch(mask.round(), noise.shape[0])
        return torch.cat([mask.to(noise.device), image.to(noise.device)], dim=1)


def _resize_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Tile or trim to the batch size (ComfyUI resize_to_batch_size's tile/trim cases)."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] > batch:
        return t[:batch]
    return t.repeat((-(-batch // t.shape[0]),) + (1,) * (t.ndim - 1))[:batch]
