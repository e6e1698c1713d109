"""The T2I-Adapter style model (Mou et al. 2023, TencentARC/T2I-Adapter `StyleAdapter`): a small transformer that
turns CLIP vision hidden states into extra context tokens appended to the text conditioning (ComfyUI
StyleModelApply).

Owns `StyleAdapter` (keys `style_embedding`, `ln_pre`, `transformer_layes.N.*` (sic, as in the files), `ln_post`,
`proj`), `load_style_model` (config read off the shapes) and `StyleModel.get_cond`.
"""
from __future__ import annotations

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError


class StyleAdapter(nn.Module):
    """Learned style tokens appended to the vision tokens, a transformer over both, the style tokens projected to
    the text context width."""

    def __init__(self, width: int, context_dim: int, heads: int, layers: int, num_token: int) -> None:
        super().__init__()
        from open_clip.transformer import QuickGELU, ResidualAttentionBlock

        self.num_token = num_token
        self.style_embedding = nn.Parameter(torch.zeros(1, num_token, width))
        self.ln_pre = nn.LayerNorm(width)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))
        # OpenAI CLIP's residual attention block (quick-GELU MLP), batch-first.
        self.transformer_layes = nn.Sequential(*(ResidualAttentionBlock(width, heads, act_layer=QuickGELU,
                                                                        batch_first=True) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        style = self.style_embedding.to(x.dtype).expand(x.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([x, style], dim=1))
        for block in self.transformer_layes:
            x = block(x)
        return self.ln_post(x[:, -self.num_token:]) @ self.proj


class StyleModel:
    """STYLE_MODEL: the adapter and how to get conditioning tokens from a CLIP vision output."""

    def __init__(self, model: StyleAdapter) -> None:
        self.model = model

    def get_cond(self, clip_vision_output: object) -> torch.Tensor:
        hidden = clip_vision_output.last_hidden_state  # type: ignore[attr-defined]
        param = self.model.proj
        with torch.no_grad():
            return self.model(hidden.to(param.device, param.dtype)).float()


def load_style_model(sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> StyleModel:
    """A `StyleModel` from a style adapter file's tensors (e.g. t2iadapter_style_sd14v1)."""
    if "style_embedding" not in sd:
        raise CheckpointError("not a T2I-Adapter style model (no style_embedding); ComfyUI's other style model "
                              "kinds (Flux Redux) are not supported")
    _, num_token, width = sd["style_embedding"].shape
    context_dim = sd["proj"].shape[1]
    layers = 0
    while f"transformer_layes.{layers}.ln_1.weight" in sd:
        layers += 1
    heads = 8  # the StyleAdapter's fixed head count (ComfyUI and the reference build it with 8)
    with torch.device("meta"):
        model = StyleAdapter(width, context_dim, heads, layers, num_token)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return StyleModel(model.eval().requires_grad_(False))
