"""SD3 ControlNets in the diffusers layout (InstantX's SD3 Canny / Pose / Tile / Inpainting): a copy of the first
joint blocks of the MMDiT with a hint patch embedder and one linear layer per block. ComfyUI's `comfy/cldm/mmdit.py`
and `load_controlnet_mmdit` (`comfy/controlnet.py`) are the spec; written from them, not copied.

Owns `is_diffusers_sd3_controlnet`, the key conversion from diffusers' `SD3ControlNetModel` names to the MMDiT's
(the separate q/k/v projections joined into `qkv`), `SD3DiffusersControlNetNet` and `ControlNetSD3Diffusers`.
ComfyUI's semantics: the pooled vector is zeroed; the noisy latent is embedded with the network's own patch
embedder and positional table (the 7.5-centred sin-cos grid when the file has no table); the hint is the VAE latent
times 1.5305 without SD3's shift; residual i of the network's n blocks is repeated depth/n times (depth = width/64,
the last one time less), the MMDiT adding residual j after its joint block j.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError
from diffusion.adapters.controlnet import ControlDict, broadcast_to_batch, resize_hint
from diffusion.adapters.controlnet_mmdit import HEAD_DIM, PATCH, ControlNetSD35, pad_to_patches, sincos_grid
from diffusion.files.latent_formats import SD3 as SD3_LATENT
from diffusion.networks.mmdit import EmbedMLP, PatchEmbed
from diffusion.networks.mmdit_blocks import JointBlock
from diffusion.patcher import ModelHandle
from diffusion.networks.unet_blocks import timestep_embedding

_TOP = {"pos_embed.proj.": "x_embedder.proj.", "pos_embed.pos_embed": "pos_embed",
        "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
        "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
        "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
        "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2."}
_BLOCK = {"norm1.linear.": "x_block.adaLN_modulation.1.", "norm1_context.linear.": "context_block.adaLN_modulation.1.",
          "attn.to_out.0.": "x_block.attn.proj.", "attn.to_add_out.": "context_block.attn.proj.",
          "ff.net.0.proj.": "x_block.mlp.fc1.", "ff.net.2.": "x_block.mlp.fc2.",
          "ff_context.net.0.proj.": "context_block.mlp.fc1.", "ff_context.net.2.": "context_block.mlp.fc2.",
          "attn.norm_q.": "x_block.attn.ln_q.", "attn.norm_k.": "x_block.attn.ln_k.",
          "attn.norm_added_q.": "context_block.attn.ln_q.", "attn.norm_added_k.": "context_block.attn.ln_k."}
_QKV = {"x_block.attn.qkv.": ("attn.to_q.", "attn.to_k.", "attn.to_v."),
        "context_block.attn.qkv.": ("attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj.")}


def is_diffusers_sd3_controlnet(sd: dict[str, torch.Tensor]) -> bool:
    return "controlnet_blocks.0.weight" in sd and "pos_embed_input.proj.weight" in sd and \
        "transformer_blocks.0.attn.to_q.weight" in sd


def _block_count(sd: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))


def convert_diffusers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers `SD3ControlNetModel` keys → the MMDiT's (`joint_blocks.N.…`), q/k/v concatenated."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(("controlnet_blocks.", "pos_embed_input.", "context_embedder.")):
            out[key] = value
        for old, new in _TOP.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
    for i in range(_block_count(sd)):
        src, dst = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for old, new in _BLOCK.items():
            for part in ("weight", "bias"):
                if f"{src}{old}{part}" in sd:
                    out[f"{dst}{new}{part}"] = sd[f"{src}{old}{part}"]
        for new, parts in _QKV.items():
            for part in ("weight", "bias"):
                if all(f"{src}{p}{part}" in sd for p in parts):
                    out[f"{dst}{new}{part}"] = torch.cat([sd[f"{src}{p}{part}"] for p in parts], dim=0)
    return out


class SD3DiffusersControlNetNet(nn.Module):
    """The network, with the MMDiT's attribute names."""

    def __init__(self, hidden: int, blocks: int, pooled: int, context_dim: int, mlp_hidden: int, qk_norm: bool,
                 hint_channels: int, pos_table_size: int | None) -> None:
        super().__init__()
        self.hidden, self.depth = hidden, hidden // HEAD_DIM
        self.x_embedder = PatchEmbed(PATCH, 16, hidden)
        self.pos_embed = nn.Parameter(torch.empty(1, pos_table_size ** 2, hidden)) if pos_table_size else None
        self.t_embedder = EmbedMLP(256, hidden)
        self.y_embedder = EmbedMLP(pooled, hidden)
        self.context_embedder = nn.Linear(context_dim, hidden)
        self.joint_blocks = nn.ModuleList(JointBlock(hidden, hidden // HEAD_DIM, mlp_hidden, qk_norm,
                                                     context_pre_only=False, dual_attention=False)
                                          for _ in range(blocks))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.pos_embed_input = PatchEmbed(PATCH, hint_channels, hidden)

    @property
    def dtype(self) -> torch.dtype:
        return self.controlnet_blocks[0].weight.dtype

    def positions(self, h: int, w: int) -> torch.Tensor:
        """The centre h×w patches of the file's table, or the sin-cos grid when it has none."""
        if self.pos_embed is None:
            return sincos_grid(self.hidden, w, h)[None]
        m = int(round(self.pos_embed.shape[1] ** 0.5))
        if h > m or w > m:
            raise ValueError(f"the latent is {h}×{w} patches but this ControlNet's positional table is {m}×{m}")
        top, left = (m - h) // 2, (m - w) // 2
        return self.pos_embed.reshape(1, m, m, -1)[:, top:top + h, left:left + w].reshape(1, h * w, -1)

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None) -> ControlDict:
        dtype = self.dtype
        x, hint = pad_to_patches(x, hint)
        tokens = self.x_embedder(x.to(dtype))
        tokens = tokens + self.positions(x.shape[2] // PATCH, x.shape[3] // PATCH).to(tokens.device, dtype)
        tokens = tokens + self.pos_embed_input(hint.to(dtype))
        c = self.t_embedder(timestep_embedding(timesteps.reshape(-1), 256).to(dtype))
        pooled = self.y_embedder.mlp[0].in_features
        c = c + self.y_embedder(torch.zeros(x.shape[0], pooled, device=x.device, dtype=dtype))  # ComfyUI zeroes y
        ctx = self.context_embedder(context.to(dtype))
        blocks = len(self.joint_blocks)
        output: list[torch.Tensor | None] = []
        for i, (block, project) in enumerate(zip(self.joint_blocks, self.controlnet_blocks)):
            ctx, tokens = block(ctx, tokens, c, "sdpa")
            count = self.depth // blocks - (1 if i == blocks - 1 else 0)
            output += [project(tokens)] * count
        return {"output": output}


def build_diffusers_sd3_controlnet(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> SD3DiffusersControlNetNet:
    conv = convert_diffusers_keys(sd)
    if conv["pos_embed_input.proj.weight"].shape[1] != 16:
        raise CheckpointError(f"SD3 ControlNets whose hint has {conv['pos_embed_input.proj.weight'].shape[1]} "
                              f"channels (the inpainting ones: latent + mask) are not supported; 16 are")
    hidden = conv["x_embedder.proj.weight"].shape[0]
    table = conv.get("pos_embed")
    shapes = {k: conv[k].shape for k in ("y_embedder.mlp.0.weight", "context_embedder.weight",
                                          "joint_blocks.0.x_block.mlp.fc1.weight", "pos_embed_input.proj.weight")}
    with torch.device("meta"):
        net = SD3DiffusersControlNetNet(
            hidden, _block_count(sd), shapes["y_embedder.mlp.0.weight"][1], shapes["context_embedder.weight"][1],
            shapes["joint_blocks.0.x_block.mlp.fc1.weight"][0], "joint_blocks.0.x_block.attn.ln_q.weight" in conv,
            shapes["pos_embed_input.proj.weight"][1], int(round(table.shape[1] ** 0.5)) if table is not None else None)
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(conv)), sorted(set(conv) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"SD3 ControlNet (diffusers layout) weights do not fit: {len(missing)} missing (e.g. "
                              f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    net.load_state_dict({k: v.to(dtype) for k, v in conv.items()}, strict=True, assign=True)
    return net.eval().requires_grad_(False)


class ControlNetSD3Diffusers(ControlNetSD35):
    """An InstantX-style SD3 ControlNet: the hint latent without SD3's shift, the text context passed in."""

    def __init__(self, handle: ModelHandle, control_type: str = "diffusers") -> None:
        super().__init__(handle, control_type)

    def copy(self) -> "ControlNetSD3Diffusers":
        return ControlNetSD3Diffusers(self.handle)

    def pre_run(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        super(ControlNetSD35, self).pre_run(model, percent_to_sigma)  # its own embedders: nothing to take

    def _hint_latent(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        size = (x.shape[2] * self.vae.downscale_ratio, x.shape[3] * self.vae.downscale_ratio)
        latent = self.vae.encode(resize_hint(self.hint_original.float(), size[1], size[0]).movedim(1, -1))
        return (latent * SD3_LATENT.scale_factor).to(x.device, dtype)

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int) -> ControlDict:
        net: SD3DiffusersControlNetNet = self.handle.model
        if self.hint_original is None:
            raise ValueError("ControlNet has no hint image: apply it with ControlNetApplyAdvanced")
        if self._hint is None or tuple(self._hint.shape[2:]) != tuple(x.shape[2:]):
            self._hint = self._hint_latent(x, net.dtype)
        hint = broadcast_to_batch(self._hint, x.shape[0], batch_chunks)
        ms = self.model_sampling
        return net(ms.calculate_input(sigma, x), hint, ms.timestep(sigma).float(), cond["c_crossattn"])


def load_diffusers_sd3_controlnet(sd: dict[str, torch.Tensor], dtype: torch.dtype,
                                  name: str = "") -> ControlNetSD3Diffusers:
    return ControlNetSD3Diffusers(ModelHandle(build_diffusers_sd3_controlnet(sd, dtype), name=name or "controlnet",
                                              kind="other"))
