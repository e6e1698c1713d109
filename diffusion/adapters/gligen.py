"""GLIGEN box grounding (Li et al. 2023, "GLIGEN: Open-Set Grounded Text-to-Image Generation"): the position net,
the gated self-attention fusers, the file loader, and the `middle_patch` that runs a fuser inside each UNet
transformer block.

File layout (`gligen_sd14_textbox_pruned.safetensors`): `<block>.1.transformer_blocks.0.fuser.*` per UNet transformer
(`input_blocks.N`, `middle_block`, `output_blocks.N`) and `position_net.*`. Grounding tokens are made from each
phrase's pooled text embedding and its box `(x1, y1, x2, y2)` normalised by the latent size, Fourier-embedded with
8 frequencies (temperature 100, sin/cos interleaved per frequency); unused slots (30 in all) take the learned null
features. A fuser attends over [visual tokens; grounding tokens] and adds the visual part back through tanh gates
(`alpha_attn`, `alpha_dense`; zero gates leave the UNet unchanged), paper §3.2 eq. 8.

Conditioning carries `gligen: ("position", handle, [(pooled 1×C, h, w, y, x), ...])` with the box in latent pixels;
`gligen_patches` turns that into `{"middle_patch": [fn]}` for one UNet call, as ComfyUI's sampler does.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import nn

from diffusion.networks.unet_blocks import CrossAttention, FeedForward

MAX_OBJS = 30
FOURIER_FREQS = 8
FOURIER_TEMPERATURE = 100.0
_FUSER_KEY = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.1\.transformer_blocks\.0\.fuser\.(.+)$")

PositionParams = list[tuple[torch.Tensor, int, int, int, int]]
MiddlePatch = Callable[[torch.Tensor, dict], torch.Tensor]


def fourier_embed(x: torch.Tensor, num_freqs: int = FOURIER_FREQS,
                  temperature: float = FOURIER_TEMPERATURE) -> torch.Tensor:
    """[sin(f₀x), cos(f₀x), sin(f₁x), cos(f₁x), ...] along the last dim, f_k = temperature^(k/num_freqs)
    (GLIGEN's FourierEmbedder): B×N×4 boxes -> B×N×(4·2·num_freqs)."""
    freqs = temperature ** (torch.arange(num_freqs, dtype=torch.float32) / num_freqs)
    parts = []
    for f in freqs.tolist():
        parts += [torch.sin(f * x), torch.cos(f * x)]
    return torch.cat(parts, dim=-1)


class PositionNet(nn.Module):
    """Grounding tokens from (pooled phrase embedding, Fourier box embedding), with learned null features for
    empty slots; an MLP `linears` (in+64 -> 512 -> 512 -> out, SiLU)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        position_dim = FOURIER_FREQS * 2 * 4
        self.linears = nn.Sequential(nn.Linear(in_dim + position_dim, 512), nn.SiLU(), nn.Linear(512, 512),
                                     nn.SiLU(), nn.Linear(512, out_dim))
        self.null_positive_feature = nn.Parameter(torch.zeros(in_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(position_dim))

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        masks = masks.unsqueeze(-1)
        xyxy = fourier_embed(boxes)
        null_text = self.null_positive_feature.to(boxes).view(1, 1, -1)
        null_box = self.null_position_feature.to(boxes).view(1, 1, -1)
        embeddings = embeddings * masks + (1 - masks) * null_text
        xyxy = xyxy * masks + (1 - masks) * null_box
        return self.linears(torch.cat([embeddings, xyxy], dim=-1))


class GatedSelfAttentionDense(nn.Module):
    """GLIGEN's fuser: self-attention over visual+grounding tokens, gated residuals (paper eq. 8)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.linear = nn.Linear(context_dim, query_dim)
        self.attn = CrossAttention(query_dim, query_dim, heads, dim_head)
        self.ff = FeedForward(query_dim)
        self.norm1 = nn.LayerNorm(query_dim)
        self.norm2 = nn.LayerNorm(query_dim)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        n_visual = x.shape[1]
        objs = self.linear(objs)
        attended = self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :n_visual]
        x = x + torch.tanh(self.alpha_attn) * attended
        return x + torch.tanh(self.alpha_dense) * self.ff(self.norm2(x))


def _block_key(name: str) -> tuple[str, int]:
    """"input_blocks.4" -> ("input", 4), "middle_block" -> ("middle", 0): the UNet's options["block"] values."""
    if name == "middle_block":
        return ("middle", 0)
    kind, index = name.split(".")
    return (kind.removesuffix("_blocks"), int(index))


def _heads(query_dim: int, key_dim: int) -> tuple[int, int]:
    # SD1 (768-wide text): 8 heads; otherwise 64-channel heads (at least one, for small test models).
    if key_dim == 768:
        return 8, query_dim // 8
    heads = max(1, query_dim // 64)
    return heads, query_dim // heads


def normalised_boxes(position_params: PositionParams, h: int, w: int) -> torch.Tensor:
    """N×4 boxes (x1, y1, x2, y2) as fractions of an h×w latent, from (pooled, bh, bw, by, bx) in latent pixels."""
    return torch.tensor([[p[4] / w, p[3] / h, (p[4] + p[2]) / w, (p[3] + p[1]) / h] for p in position_params],
                        dtype=torch.float32).reshape(-1, 4)


class Gligen(nn.Module):
    """The fusers by UNet block (`fusers["input_blocks.1"]`, ...) and the position net."""

    def __init__(self, fusers: dict[str, GatedSelfAttentionDense], position_net: PositionNet, key_dim: int) -> None:
        super().__init__()
        self.fusers = nn.ModuleDict({name.replace(".", "_"): m for name, m in fusers.items()})
        self.block_of = {_block_key(name): name.replace(".", "_") for name in fusers}
        self.position_net = position_net
        self.key_dim = key_dim

    def grounding_inputs(self, batch: int, h: int, w: int, position_params: PositionParams
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes B×30×4, masks B×30, embeddings B×30×C), the used slots first, the rest zero."""
        if len(position_params) > MAX_OBJS:
            raise ValueError(f"GLIGEN takes at most {MAX_OBJS} boxes per conditioning, got {len(position_params)}; "
                             "chain fewer GLIGENTextBoxApply nodes")
        n = len(position_params)
        boxes = torch.zeros(MAX_OBJS, 4)
        masks = torch.zeros(MAX_OBJS)
        embeddings = torch.zeros(MAX_OBJS, self.key_dim)
        if n:
            boxes[:n] = normalised_boxes(position_params, h, w)
            masks[:n] = 1.0
            embeddings[:n] = torch.cat([p[0].reshape(1, -1).float().cpu() for p in position_params])
        return (boxes.unsqueeze(0).repeat(batch, 1, 1), masks.unsqueeze(0).repeat(batch, 1),
                embeddings.unsqueeze(0).repeat(batch, 1, 1))

    def middle_patch(self, latent_shape: tuple[int, ...], position_params: PositionParams,
                     device: torch.device) -> MiddlePatch:
        """The `middle_patch` for a UNet call on a latent of `latent_shape` (empty params: null tokens only)."""
        batch, _, h, w = latent_shape
        dtype = next(self.position_net.parameters()).dtype
        boxes, masks, embeddings = (t.to(device=device, dtype=dtype)
                                    for t in self.grounding_inputs(batch, h, w, position_params))
        objs = self.position_net(boxes, masks, embeddings)

        def patch(x: torch.Tensor, options: dict) -> torch.Tensor:
            name = self.block_of.get(tuple(options.get("block", ())))
            if name is None:
                return x
            return self.fusers[name](x, objs.to(device=x.device, dtype=x.dtype))
        return patch


def load_gligen(sd: dict[str, torch.Tensor]) -> Gligen:
    """A Gligen from a GLIGEN file's state dict (fusers' heads as ComfyUI picks them)."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        match = _FUSER_KEY.match(key)
        if match:
            grouped.setdefault(match.group(1), {})[match.group(2)] = value
    if not grouped or "position_net.null_positive_feature" not in sd:
        raise ValueError("not a GLIGEN file: expected '<block>.1.transformer_blocks.0.fuser.*' and 'position_net.*' "
                         "keys (e.g. gligen_sd14_textbox_pruned.safetensors)")
    fusers: dict[str, GatedSelfAttentionDense] = {}
    key_dim = 768
    for name, fsd in grouped.items():
        query_dim, key_dim = fsd["linear.weight"].shape
        fuser = GatedSelfAttentionDense(query_dim, key_dim, *_heads(query_dim, key_dim))
        fuser.load_state_dict(fsd)
        fusers[name] = fuser
    position_net = PositionNet(sd["position_net.null_positive_feature"].shape[0],
                               sd["position_net.linears.4.weight"].shape[0])
    position_net.load_state_dict({k.removeprefix("position_net."): v for k, v in sd.items()
                                  if k.startswith("position_net.")})
    return Gligen(fusers, position_net, key_dim).eval().requires_grad_(False)


def gligen_patches(gligen: tuple, input_x: torch.Tensor) -> dict[str, list[MiddlePatch]]:
    """`{"middle_patch": [fn]}` for a cond's `gligen` entry on this (area-cropped) input."""
    kind, handle, params = gligen[0], gligen[1], gligen[2] if len(gligen) > 2 else []
    model: Gligen = getattr(handle, "model", handle)
    if kind != "position":
        params = []
    return {"middle_patch": [model.middle_patch(tuple(input_x.shape), params, input_x.device)]}
