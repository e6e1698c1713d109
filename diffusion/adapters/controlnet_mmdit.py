"""SD3.5 ControlNets in Stability's format (SD3.5 Large Blur / Canny / Depth): the network, its files and its
control object. ComfyUI's `comfy/cldm/dit_embedder.py` and `load_controlnet_sd35` (`comfy/controlnet.py`) are the
spec; written from them, not copied.

Owns:
- `is_sd35_controlnet` and `load_sd3_controlnet` (the loader node asks it first): the file's marks
  (`controlnet_blocks.0.weight`, `pos_embed_input.proj.weight` and SD3-style blocks
  `transformer_blocks.0.adaLN_modulation.1.bias`);
- `SD35ControlNetNet`: patch embedder of the noisy latent (`x_embedder`, taken from the model it is applied to),
  timestep and pooled-text embedders (`y_embedder`; "double" files put the model's own pooled embedder,
  `orig_y_embedder`, in front of it), a patch embedder of the hint latent (`pos_embed_input`), x-only MMDiT blocks
  (`transformer_blocks.N`, no context) and one linear layer per block (`controlnet_blocks.N`). The width is
  64 × the main model's depth; its output list repeats each block's residual ⌈depth / blocks⌉ times, one per
  main-model joint block (the MMDiT adds residual i to its image tokens after joint block i);
- `ControlNetSD35`: the hint image resized to the latent size × 8 (nearest-exact, centre crop), prepared per
  control type (canny: a·127.5 + 0.5, depth: 1 − a, blur: as is), encoded with the `vae` given to
  ControlNetApplyAdvanced and brought into the SD3 latent space; before each sampling run the main model's patch
  embedder (or pooled embedder, "double" files) is copied into the network, as ComfyUI does.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from diffusion.networks.attention import attention
from diffusion.files.checkpoint import CheckpointError
from diffusion.adapters.controlnet import ControlBase, ControlDict, broadcast_to_batch, resize_hint
from diffusion.files.latent_formats import SD3 as SD3_LATENT
from diffusion.networks.mmdit import EmbedMLP, PatchEmbed
from diffusion.networks.mmdit_blocks import DismantledBlock
from diffusion.patcher import ModelHandle
from diffusion.networks.unet_blocks import timestep_embedding

# diffusers names of the top-level modules (Stability's files use them) -> SD3 names
_TOP_LEVEL = {"pos_embed.proj.": "x_embedder.proj.", "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
              "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
              "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
              "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2."}
POOLED_WIDTH, HEAD_DIM, PATCH, LATENT_CHANNELS = 2048, 64, 2, 16
CONTROL_TYPES = {0: "blur", 1: "canny", 2: "depth"}


def is_sd35_controlnet(sd: dict[str, torch.Tensor]) -> bool:
    return "controlnet_blocks.0.weight" in sd and "pos_embed_input.proj.weight" in sd and \
        "transformer_blocks.0.adaLN_modulation.1.bias" in sd


def sincos_grid(dim: int, w: int, h: int, center: float = 7.5, magnitude: float = 7.5) -> torch.Tensor:
    """(h·w)×dim positions over a grid centred on `center`, the shorter side spanning ±`magnitude` (ComfyUI's
    `get_2d_sincos_pos_embed_torch`): the first half of the features encodes the column, the second the row."""
    small = min(h, w)
    rows = torch.linspace(center - h / small * magnitude, center + h / small * magnitude, h)
    cols = torch.linspace(center - w / small * magnitude, center + w / small * magnitude, w)
    grid_r, grid_c = torch.meshgrid(rows, cols, indexing="ij")

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim / 4.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_d(grid_c), one_d(grid_r)], dim=1)


def pad_to_patches(x: torch.Tensor, hint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent and its hint padded (circularly, as the MMDiT pads) to whole 2×2 patches."""
    pad_h, pad_w = (-x.shape[2]) % PATCH, (-x.shape[3]) % PATCH
    if pad_h or pad_w:
        x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        hint = nn.functional.pad(hint, (0, pad_w, 0, pad_h), mode="circular")
    return x, hint


class SD35ControlNetNet(nn.Module):
    """The network; attribute names are the file's (after the top-level renaming)."""

    def __init__(self, hidden: int, blocks: int, double_y_emb: bool, hint_channels: int = LATENT_CHANNELS,
                 pooled_width: int = POOLED_WIDTH) -> None:
        super().__init__()
        self.hidden, self.double_y_emb = hidden, double_y_emb
        self.main_depth = hidden // HEAD_DIM
        self.x_embedder = PatchEmbed(PATCH, LATENT_CHANNELS, hidden)
        self.t_embedder = EmbedMLP(256, hidden)
        self.orig_y_embedder = EmbedMLP(pooled_width, hidden) if double_y_emb else None
        self.y_embedder = EmbedMLP(hidden if double_y_emb else pooled_width, hidden)
        heads = hidden // HEAD_DIM
        self.transformer_blocks = nn.ModuleList(DismantledBlock(hidden, heads, 4 * hidden, qk_norm=False)
                                                for _ in range(blocks))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.pos_embed_input = PatchEmbed(PATCH, hint_channels, hidden)

    @property
    def dtype(self) -> torch.dtype:
        return self.controlnet_blocks[0].weight.dtype

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                y: torch.Tensor | None = None) -> ControlDict:
        """{"output": residuals B×N×D}, one per joint block of the main model."""
        dtype = self.dtype
        x, hint = pad_to_patches(x, hint)
        tokens = self.x_embedder(x.to(dtype))
        if not self.double_y_emb:
            grid = sincos_grid(self.hidden, x.shape[3] // PATCH, x.shape[2] // PATCH)
            tokens = tokens + grid.to(tokens.device, dtype)
        c = self.t_embedder(timestep_embedding(timesteps.reshape(-1), 256).to(dtype))
        if y is not None:
            y = y.to(dtype)
            if self.orig_y_embedder is not None:
                y = self.orig_y_embedder(y)
            c = c + self.y_embedder(y)
        tokens = tokens + self.pos_embed_input(hint.to(dtype))
        repeat = math.ceil(self.main_depth / len(self.transformer_blocks))
        output: list[torch.Tensor | None] = []
        for block, project in zip(self.transformer_blocks, self.controlnet_blocks):
            qkv, state = block.pre_attention(tokens, c)
            out = block.post_attention(attention(*qkv, block.attn.heads, mode="sdpa"), state, "sdpa")
            if not self.double_y_emb:
                tokens = out
            output += [project(out)] * repeat
        return {"output": output}


def _renamed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        for old, new in _TOP_LEVEL.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def build_sd35_controlnet(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[SD35ControlNetNet, str]:
    """The network of a Stability SD3.5 ControlNet file and its control type ("blur", "canny", "depth", or
    "unknown"). The embedders a file leaves out (taken from the main model before sampling) start as zeros."""
    sd = _renamed(sd)
    kind = CONTROL_TYPES.get(round(float(sd.pop("control_type"))), "unknown") if "control_type" in sd else "unknown"
    y_shape = sd["y_embedder.mlp.0.weight"].shape
    hidden = y_shape[0]
    blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))
    hint_channels = sd["pos_embed_input.proj.weight"].shape[1]
    double = y_shape[0] == y_shape[1]
    # The pooled width is SD3's 2048 in every real file; read off the shape where the file shows it.
    with torch.device("meta"):
        net = SD35ControlNetNet(hidden, blocks, double_y_emb=double, hint_channels=hint_channels,
                                pooled_width=POOLED_WIDTH if double else y_shape[1])
    expected = net.state_dict()
    unexpected = sorted(set(sd) - set(expected))
    missing = [k for k in expected if k not in sd and not k.startswith(("x_embedder.", "orig_y_embedder."))]
    if unexpected or missing:
        raise CheckpointError(f"SD3.5 ControlNet weights do not fit: {len(missing)} missing (e.g. {missing[:3]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    wrong = [k for k, v in sd.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(f"SD3.5 ControlNet tensor {wrong[0]} has shape {tuple(sd[wrong[0]].shape)}, the "
                              f"network expects {tuple(expected[wrong[0]].shape)}")
    full = {k: sd[k].to(dtype) if k in sd else torch.zeros(v.shape, dtype=dtype) for k, v in expected.items()}
    net.load_state_dict(full, strict=True, assign=True)
    return net.eval().requires_grad_(False), kind


_PREPROCESS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "canny": lambda a: a * 255 * 0.5 + 0.5, "depth": lambda a: 1.0 - a,
}


class ControlNetSD35(ControlBase):
    """A Stability SD3.5 ControlNet applied with a VAE (its hint is a latent)."""

    def __init__(self, handle: ModelHandle, control_type: str = "unknown") -> None:
        super().__init__(handle)
        self.control_type = control_type

    def copy(self) -> "ControlNetSD35":
        return ControlNetSD35(self.handle, self.control_type)

    def set_cond_hint(self, hint: torch.Tensor, strength: float = 1.0,
                      percent_range: tuple[float, float] = (0.0, 1.0), vae: Any = None) -> "ControlNetSD35":
        if vae is None:
            raise ValueError("this SD3.5 ControlNet takes its hint as a latent: connect a VAE (the SD3 model's) to "
                             "the 'vae' input of ControlNetApplyAdvanced")
        return super().set_cond_hint(hint, strength, percent_range, vae)  # type: ignore[return-value]

    def pre_run(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        net: SD35ControlNetNet = self.handle.model
        main = model.diffusion_model
        if net.orig_y_embedder is not None:
            net.orig_y_embedder.load_state_dict(main.y_embedder.state_dict())
        else:
            net.x_embedder.load_state_dict(main.x_embedder.state_dict())
        super().pre_run(model, percent_to_sigma)

    def _hint_latent(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        size = (x.shape[2] * self.vae.downscale_ratio, x.shape[3] * self.vae.downscale_ratio)
        image = resize_hint(self.hint_original.float(), size[1], size[0])
        image = _PREPROCESS.get(self.control_type, lambda a: a)(image)
        latent = self.vae.encode(image.movedim(1, -1))
        return SD3_LATENT.process_in(latent).to(x.device, dtype)

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int) -> ControlDict:
        net: SD35ControlNetNet = self.handle.model
        if self.hint_original is None:
            raise ValueError("ControlNet has no hint image: apply it with ControlNetApplyAdvanced")
        if self._hint is None or tuple(self._hint.shape[2:]) != tuple(x.shape[2:]):
            self._hint = self._hint_latent(x, net.dtype)
        hint = broadcast_to_batch(self._hint, x.shape[0], batch_chunks)
        ms = self.model_sampling
        return net(ms.calculate_input(sigma, x), hint, ms.timestep(sigma).float(), y=cond.get("y"))


def load_sd3_controlnet(sd: dict[str, torch.Tensor], dtype: torch.dtype, name: str = "") -> ControlNetSD35 | None:
    """The control object of an SD3.5 ControlNet file in Stability's format, None for other files (the diffusers
    layout is `diffusion.adapters.controlnet_sd3_diffusers`'s, SD1/SD2/SDXL ControlNets `diffusion.adapters.controlnet`'s)."""
    if not is_sd35_controlnet(sd):
        return None
    net, kind = build_sd35_controlnet(sd, dtype)
    return ControlNetSD35(ModelHandle(net, name=name or "controlnet", kind="other"), kind)
