"""The SD1.x/2.x VAE: `AutoencoderKL` networks (Rombach et al. 2022, LDM `model.py`) and the `VAE` socket value.

Owns `VAEConfig` (full and tiny), the encoder/decoder with LDM key names (`encoder.*`, `decoder.*`, `quant_conv`,
`post_quant_conv`), `build_vae` (meta-device build, tensors assigned, no second copy), `normalize_vae_state_dict`
(mid-block attention stored as 2-D linear weights in some files becomes 1×1 conv weights), and `VAE`, which turns
latents in the VAE's raw space into IMAGE tensors (B×H×W×C, 0..1, float32 on the CPU) and back, whole or in tiles
(`diffusion.networks.tiling`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks.attention import attention
from diffusion.networks.conv3x3 import preferred_layout, use_fast_convs
from diffusion.networks.tiling import tiled_average
from diffusion.networks.unet import load_assigned


@dataclass(frozen=True)
class VAEConfig:
    """LDM `ddconfig` plus `embed_dim`; the defaults are SD1.x/2.x's KL-f8 autoencoder."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 4
    embed_dim: int = 4
    double_z: bool = True
    use_quant_conv: bool = True  # the SD3/SD3.5 16-channel VAE has neither quant_conv nor post_quant_conv

    @classmethod
    def sd(cls) -> VAEConfig:
        return cls()

    @classmethod
    def tiny(cls) -> VAEConfig:
        """Four levels (so the same ×8 scale as SD) of 32/32/64/64 channels, one block each."""
        return replace(cls(), ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Two 3×3 convolutions with a residual; `nin_shortcut` (1×1) where the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SiLU and the residual add in place on tensors this block made (ComfyUI's SiLU(inplace=True) too): the
        # same numbers, two fewer activation-sized tensors at once (a 1024² SDXL decode's peak, bench/RESULTS.md)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return h.add_(skip)


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels, with 1×1 conv projections `q`, `k`, `v`, `proj_out`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (t.flatten(2).transpose(1, 2) for t in (self.q(n), self.k(n), self.v(n)))
        out = attention(q, k, v, heads=1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3×3 convolution after padding right and bottom by one (LDM's asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution of the encoder (`block`, `downsample`) or decoder (`block`, `upsample`); `attn` stays empty."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        if resample is not None:
            setattr(self, name, resample)


class _Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image → the moments (mean, log-variance) of the latent posterior."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            block_out = cfg.ch * mult
            blocks = [ResnetBlock(block_in if j == 0 else block_out, block_out) for j in range(cfg.num_res_blocks)]
            block_in = block_out
            last = i == len(cfg.ch_mult) - 1
            self.down.append(_Level(blocks, None if last else Downsample(block_out), "downsample"))
        self.mid = _Mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent → image in −1..1 (not clamped)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in)
        levels: list[_Level] = []
        for i in reversed(range(len(cfg.ch_mult))):
            block_out = cfg.ch * cfg.ch_mult[i]
            blocks = [ResnetBlock(block_in if j == 0 else block_out, block_out) for j in range(cfg.num_res_blocks + 1)]
            block_in = block_out
            levels.insert(0, _Level(blocks, Upsample(block_out) if i != 0 else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder; `encode` returns the posterior mean, `decode` the image in −1..1."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.use_quant_conv:
            self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
            self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        else:
            self.quant_conv = self.post_quant_conv = None
        use_fast_convs(self)  # CPU 3×3 convolutions by Winograd or one GEMM where it pays (networks/conv3x3.py)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.encoder(preferred_layout(x))
        mean, _logvar = (moments if self.quant_conv is None else self.quant_conv(moments)).chunk(2, dim=1)
        return mean.contiguous()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = preferred_layout(z)
        return self.decoder(z if self.post_quant_conv is None else self.post_quant_conv(z)).contiguous()


_ATTN_PROJECTIONS = ("q", "k", "v", "proj_out")


def normalize_vae_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring mid-block attention weights stored as linear (C×C) matrices to the 1×1 conv shape (C×C×1×1)."""
    out = dict(state_dict)
    for part in ("encoder", "decoder"):
        for name in _ATTN_PROJECTIONS:
            key = f"{part}.mid.attn_1.{name}.weight"
            if key in out and out[key].ndim == 2:
                out[key] = out[key][:, :, None, None]
    return out


def build_vae(
    config: VAEConfig,
    state_dict: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> AutoencoderKL:
    """An `AutoencoderKL` holding `state_dict`'s tensors (VAE keys, no prefix) in `dtype`, built on meta first."""
    with torch.device("meta"):
        model = AutoencoderKL(config)
    if state_dict is None:
        return model.to_empty(device=device).to(dtype).eval().requires_grad_(False)
    load_assigned(model, normalize_vae_state_dict(state_dict), dtype, device, "VAE")
    return model.eval().requires_grad_(False)


class VAE:
    """The VAE socket value (ComfyUI semantics): LATENT `samples` in the raw VAE space ⇄ IMAGE B×H×W×C in 0..1.

    `model` is the `AutoencoderKL`; the memory manager places it, and `decode`/`encode` follow it: inputs are
    cast to its parameters' dtype and device, results come back as float32 on the CPU.
    `scale_factor` (0.18215 for SD1/2) maps the raw space to the sampler's space; the model wrapper applies it.
    """

    def __init__(self, model: AutoencoderKL, scale_factor: float = 0.18215) -> None:
        self.model = model
        self.scale_factor = scale_factor

    @property
    def downscale_ratio(self) -> int:
        return self.model.config.downscale

    @property
    def latent_channels(self) -> int:
        return self.model.config.embed_dim

    def _placement(self) -> tuple[torch.dtype, torch.device]:
        """(compute dtype, device): `compute_dtype` where the weights are stored in another dtype
        (diffusion/networks/weight_cast.py), else the weights' own."""
        p = next(self.model.parameters())
        return getattr(self.model, "compute_dtype", None) or p.dtype, p.device

    def _decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent B×C×h×w → image B×3×H×W in 0..1, float32 on the CPU."""
        dtype, device = self._placement()
        with torch.inference_mode():
            out = self.model.decode(latent.to(device=device, dtype=dtype))
        return ((out.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()

    def _encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image B×3×H×W in 0..1 → latent mean, float32 on the CPU."""
        dtype, device = self._placement()
        with torch.inference_mode():
            out = self.model.encode(pixels.to(device=device, dtype=dtype) * 2.0 - 1.0)
        return out.float().cpu()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """LATENT samples (B×C×h×w, raw VAE space) → IMAGE (B×H×W×3 float32 on the CPU, clamp((x+1)/2, 0, 1)).
        Called from a ComfyUI pack, the model manager places the VAE first (`patcher_api.placed`)."""
        from diffusion.patcher_api import placed

        with placed([self], self.memory_required_decode(tuple(latent.shape), self._placement()[0])):
            return self._decode_raw(latent).movedim(1, -1).contiguous()

    def crop_pixels(self, image: torch.Tensor) -> torch.Tensor:
        """Centre-crop an IMAGE so height and width are multiples of the downscale ratio (as ComfyUI does)."""
        r = self.downscale_ratio
        for dim in (1, 2):
            size = image.shape[dim]
            if size % r:
                image = image.narrow(dim, (size % r) // 2, (size // r) * r)
        return image

    def _pixels(self, image: torch.Tensor) -> torch.Tensor:
        return self.crop_pixels(image)[..., :3].movedim(-1, 1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE (B×H×W×C in 0..1; alpha dropped, cropped to multiples of 8) → latent mean, float32 on the CPU."""
        from diffusion.patcher_api import placed

        with placed([self], self.memory_required_encode(tuple(image.shape), self._placement()[0])):
            return self._encode_raw(self._pixels(image))

    def decode_tiled(
        self, latent: torch.Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 16
    ) -> torch.Tensor:
        """`decode` in overlapping tiles (sizes in latent pixels); see `diffusion.networks.tiling.tiled_average`."""
        from diffusion.patcher_api import placed

        r = self.downscale_ratio
        with placed([self]):
            out = tiled_average(latent, self._decode_raw, (tile_y, tile_x), overlap, scale=r, out_channels=3)
        return out.clamp(0.0, 1.0).movedim(1, -1).contiguous()

    def encode_tiled(
        self, image: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64
    ) -> torch.Tensor:
        """`encode` in overlapping tiles (sizes in image pixels)."""
        from diffusion.patcher_api import placed

        r = self.downscale_ratio
        with placed([self]):
            return tiled_average(
                self._pixels(image), self._encode_raw, (tile_y, tile_x), overlap, scale=1.0 / r,
                out_channels=self.latent_channels,
            )

    # --- ComfyUI's comfy.sd.VAE names ---------------------------------------------------------------------------
    @property
    def first_stage_model(self) -> AutoencoderKL:
        return self.model

    @property
    def patcher(self) -> object | None:
        return getattr(self, "handle", None)

    @property
    def vae_dtype(self) -> torch.dtype:
        return self._placement()[0]

    def spacial_compression_decode(self) -> int:
        """Pixels per latent pixel along each side (8 for SD's VAE)."""
        return self.downscale_ratio

    def spacial_compression_encode(self) -> int:
        return self.downscale_ratio

    def temporal_compression_decode(self) -> None:
        """None: an image VAE (ComfyUI's answer for non-video VAEs)."""
        return None

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def memory_required_decode(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Estimated working bytes to decode latents of `shape` (B×C×h×w) in `dtype`.

        The decoder's last level holds a few feature maps of `ch` channels at full resolution (GroupNorm, SiLU
        and conv each materialise one); 12 such maps plus the mid-block attention's h·w×h·w scores bound it.
        """
        b, _, h, w = shape
        r, size = self.downscale_ratio, torch.finfo(dtype).bits // 8
        ch = self.model.config.ch * max(self.model.config.ch_mult[:2])
        maps = 12 * ch * (h * r) * (w * r) * size
        scores = (h * w) ** 2 * 4
        return int(b * (maps + scores))

    def memory_required_encode(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Estimated working bytes to encode images of `shape` (B×H×W×C) in `dtype`."""
        b, height, width = shape[0], shape[1], shape[2]
        r, size = self.downscale_ratio, torch.finfo(dtype).bits // 8
        ch = self.model.config.ch * max(self.model.config.ch_mult[:2])
        maps = 10 * ch * height * width * size
        scores = ((height // r) * (width // r)) ** 2 * 4
        return int(b * (maps + scores))
