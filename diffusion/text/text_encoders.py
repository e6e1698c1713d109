"""CLIP text towers (SD1's CLIP-L, SD2's OpenCLIP-H, SDXL/SD3's OpenCLIP bigG) in open_clip_torch's key layout, and
the CLIP socket value.

Owns the network side of text conditioning: the config read off a state dict's shapes, the `TextTransformer`
(`diffusion/text/clip_transformer.py`, open_clip's keys) that holds the weights, the mapping of SD1's HF
`CLIPTextModel` keys onto it, the `CLIP` object nodes pass around (tokenize, encode, clone, CLIP-skip; prompt
parsing itself is `diffusion/text/prompt.py`), and a forward pass with ComfyUI's layer semantics (ComfyUI
`comfy/sd1_clip.py`, `comfy/sd2_clip.py`, `comfy/clip_model.py`):

- the hidden states handed to the UNet are the last layer (SD1) or the penultimate layer (SD2), and the final layer
  norm is applied to whichever layer is taken, including intermediate layers chosen by CLIP-skip;
- the pooled output is the final-normed *last* layer at the first end-of-text token, unprojected for SD1 (ComfyUI's
  SD1 checkpoint model returns the unprojected pooled output) and multiplied by `text_projection` for SD2;
- bigG ("clip_g"; Cherti et al. 2023, trained by LAION) comes in open_clip's layout inside SDXL checkpoints
  (`conditioner.embedders.1.model.*`, `text_projection` used as `x @ P`) and in the HF CLIPTextModelWithProjection
  layout as a separate file (`text_model.*` + `text_projection.weight`, a Linear: `x @ W.T`); ComfyUI tells it from
  CLIP-L by its depth (a layer 30 exists). SDXL and SD3 take its and CLIP-L's penultimate layer *without* the
  final layer norm (`norm_hidden=False`); several towers encoded in step are `diffusion/text/clip_multi.py`;
- weights may be stored in fp16; the computation is always fp32 (as ComfyUI does on CPU), upcasting one block's
  weights at a time, so no permanent fp32 copy of the weights exists.

Architecture: Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision"; SD2's
OpenCLIP ViT-H/14 text tower: Cherti et al. (2023), "Reproducible scaling laws for contrastive language-image
learning".
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from diffusion.text.clip_transformer import TextTransformer
from diffusion.text.prompt import Chunk, PromptTokenizer, chunk_ids
from diffusion.text.t5 import T5Encoder, encode_t5_weighted
from diffusion.text.t5_tokenizer import T5PromptTokenizer
from diffusion.text.tokenizer import EOS_TOKEN

log = logging.getLogger(__name__)

HEAD_WIDTH = 64

# HF CLIPTextModel key (below `text_model.`) -> open_clip TextTransformer key (below `model.`), per layer and global.
_HF_LAYER_KEYS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_HF_GLOBAL_KEYS = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
# Keys real files carry that the text tower does not use.
_KNOWN_EXTRAS = ("embeddings.position_ids", "text_projection.weight", "logit_scale")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Shape and ComfyUI behaviour of one CLIP text tower."""

    family: str  # "sd1" (CLIP-L, quick-GELU), "sd2" (OpenCLIP-H, GELU) or "clip_g" (OpenCLIP bigG, GELU)
    width: int
    layers: int
    heads: int
    vocab_size: int = 49408
    context_length: int = 77
    mlp_ratio: float = 4.0
    projection_dim: int | None = None  # `text_projection` columns (SD2, bigG); None: no projection (SD1)

    @property
    def activation(self) -> str:
        return "quick_gelu" if self.family == "sd1" else "gelu"

    @property
    def default_layer_idx(self) -> int | None:
        """ComfyUI's default layer: SD1 the last (None), SD2 the penultimate (-2)."""
        return None if self.family == "sd1" else -2

    @property
    def pad_token(self) -> int:
        """SD1 pads with end-of-text, SD2 with 0 (ComfyUI's `pad_with_end=False` for SD2)."""
        return EOS_TOKEN if self.family == "sd1" else 0


SD1_CLIP_L = TextEncoderConfig(family="sd1", width=768, layers=12, heads=12)
SD2_OPENCLIP_H = TextEncoderConfig(family="sd2", width=1024, layers=24, heads=16, projection_dim=1024)
OPENCLIP_BIGG = TextEncoderConfig(family="clip_g", width=1280, layers=32, heads=20, projection_dim=1280)
# A tower's name in ComfyUI's token dicts and textual-inversion files, per family.
TOKEN_KEYS = {"sd1": "l", "sd2": "h", "clip_g": "g"}
# ComfyUI's test for bigG in an HF-layout file: the tower is deeper than CLIP-L's 12 / OpenCLIP-H's 24 layers.
BIGG_MARKER = "text_model.encoder.layers.30.mlp.fc1.weight"
CLIP_H_MARKER = "text_model.encoder.layers.22.mlp.fc1.weight"  # OpenCLIP-H (SD2) in the HF layout: 23+ layers


def open_clip_tower(config: TextEncoderConfig) -> nn.Module:
    """The text transformer in open_clip's key layout, plus the `logit_scale` scalar SD2/bigG files carry, so their
    keys load as they are (`diffusion/text/clip_transformer.py`; open_clip itself is not imported)."""
    return TextTransformer(
        context_length=config.context_length,
        vocab_size=config.vocab_size,
        width=config.width,
        heads=config.heads,
        layers=config.layers,
        mlp_ratio=config.mlp_ratio,
        output_dim=config.projection_dim,
        quick_gelu=config.activation == "quick_gelu",
        logit_scale=config.family in ("sd2", "clip_g"),
    )


class TextEncoder(nn.Module):
    """One CLIP text tower: `model` is the `TextTransformer`, whose state-dict keys follow open_clip's layout."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = open_clip_tower(config)

    @property
    def num_layers(self) -> int:
        return self.config.layers

    def _hidden_index(self, layer_idx: int | None) -> int | None:
        """Index of the transformer block whose output is returned; None means the last block.

        ComfyUI semantics: a negative index counts from the end, and an index whose magnitude exceeds the depth
        falls back to the last layer.
        """
        if layer_idx is None:
            layer_idx = self.config.default_layer_idx
        if layer_idx is None or abs(layer_idx) > self.num_layers:
            return None
        return layer_idx + self.num_layers if layer_idx < 0 else layer_idx

    def embed(self, tokens: torch.Tensor, extra_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Token plus position embeddings in fp32; ids >= vocab_size index rows of `extra_embeddings`."""
        weight = self.model.token_embedding.weight
        vocab = weight.shape[0]
        n_extra = 0 if extra_embeddings is None else extra_embeddings.shape[0]
        if tokens.numel() and int(tokens.max()) >= vocab + n_extra:
            raise ValueError(
                f"token id {int(tokens.max())} is beyond the vocabulary ({vocab}) and the {n_extra} extra rows"
            )
        x = F.embedding(tokens.clamp(max=vocab - 1), weight).float()
        if extra_embeddings is not None and extra_embeddings.shape[0] > 0:
            is_extra = tokens >= vocab
            # Rounded through the weights' dtype first, as ComfyUI stores the rows in its embedding table.
            rows = extra_embeddings.to(device=x.device, dtype=weight.dtype).float()
            x = torch.where(is_extra[..., None], rows[(tokens - vocab).clamp(min=0, max=rows.shape[0] - 1)], x)
        return x + self.model.positional_embedding[: tokens.shape[1]].float()

    def forward(
        self,
        tokens: torch.Tensor,
        layer_idx: int | None = None,
        extra_embeddings: torch.Tensor | None = None,
        norm_hidden: bool = True,
        project_pooled: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode B×T token ids; returns (hidden B×T×C, pooled B×C), both fp32 (the pooled output without the
        text projection when `project_pooled` is False: ComfyUI's "unprojected").

        `layer_idx`: None for the family default, -1 the last layer, -2 the penultimate, ... (CLIPSetLastLayer).
        `extra_embeddings`: E×C textual-inversion rows addressed by token ids vocab_size .. vocab_size+E-1.
        `norm_hidden`: whether an intermediate layer's output goes through the final layer norm (SD1/SD2: yes;
        SDXL/SD3: no). The last layer (no CLIP-skip, or an index beyond the depth) is always normed.
        """
        device = self.model.token_embedding.weight.device
        tokens = tokens.to(device=device, dtype=torch.long)
        target = self._hidden_index(layer_idx)
        x = self.embed(tokens, extra_embeddings)
        seq = tokens.shape[1]
        mask = torch.full((seq, seq), float("-inf"), device=device).triu_(1)  # causal
        hidden = None
        for i, block in enumerate(self.model.transformer.resblocks):
            x = _call_fp32(block, x, attn_mask=mask)
            if i == target:
                hidden = x
        x = _call_fp32(self.model.ln_final, x)
        if hidden is None:
            hidden = x
        elif norm_hidden:
            hidden = _call_fp32(self.model.ln_final, hidden)
        # The first end-of-text token; SD1 pads with it, so argmax over the ids would work there but not with
        # textual-inversion ids above the vocabulary.
        eos = (tokens == EOS_TOKEN).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=device), eos]
        if self.model.text_projection is not None and project_pooled:
            pooled = pooled @ self.model.text_projection.float()
        return hidden, pooled


def _call_fp32(module: nn.Module, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
    """Run `module` in fp32, upcasting its (possibly fp16) parameters for this call only."""
    params = dict(module.named_parameters())
    if all(p.dtype == torch.float32 for p in params.values()):
        return module(*args, **kwargs)
    return functional_call(module, {k: p.float() for k, p in params.items()}, args, kwargs)


def _prefixes(keys: list[str], suffix: str) -> list[str]:
    return [key[: -len(suffix)] for key in keys if key.endswith(suffix)]


def detect_family(state_dict: dict[str, torch.Tensor], family: str | None = None) -> tuple[str, str]:
    """(family, key prefix) of a text-encoder state dict in the HF layout ("sd1", "sd2" at OpenCLIP-H's depth, as
    ComfyUI writes SD2's `clip_h` files, or "clip_g" when it is bigG's depth) or open_clip's ("sd2", or "clip_g" at bigG's width 1280). `family` overrides the tower kind (for
    callers that know it, such as an SDXL checkpoint's embedder slot, and tiny test towers).

    Several prefixes can end in the same suffix (a full open_clip file also has `visual.transformer.resblocks.*`),
    so each candidate is checked for the tower's other defining key.
    """
    keys = list(state_dict)
    for prefix in _prefixes(keys, "text_model.embeddings.token_embedding.weight"):
        if f"{prefix}text_model.encoder.layers.0.self_attn.q_proj.weight" in state_dict:
            if family:
                return family, prefix
            if f"{prefix}{BIGG_MARKER}" in state_dict:
                return "clip_g", prefix
            return ("sd2" if f"{prefix}{CLIP_H_MARKER}" in state_dict else "sd1"), prefix
    for prefix in _prefixes(keys, "transformer.resblocks.0.attn.in_proj_weight"):
        if f"{prefix}token_embedding.weight" in state_dict:
            width = state_dict[f"{prefix}token_embedding.weight"].shape[1]
            return family or ("clip_g" if width == OPENCLIP_BIGG.width else "sd2"), prefix
    sample = ", ".join(sorted(keys)[:6])
    raise ValueError(
        f"not a CLIP text encoder of SD1.x (HF `text_model.encoder.layers.N` keys) or SD2.x (open_clip "
        f"`transformer.resblocks.N` keys): found {len(keys)} keys such as {sample}"
    )


def _count_layers(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.search(pattern, k))}
    return max(found) + 1 if found else 0


def is_hf_layout(state_dict: dict[str, torch.Tensor], prefix: str) -> bool:
    """Whether the tower under `prefix` is stored in the HF CLIPTextModel layout (else open_clip's)."""
    return f"{prefix}text_model.embeddings.token_embedding.weight" in state_dict


def config_from_state_dict(state_dict: dict[str, torch.Tensor],
                           family: str | None = None) -> tuple[TextEncoderConfig, str]:
    """The tower's config read off tensor shapes (heads = width // 64), and the key prefix in use."""
    family, prefix = detect_family(state_dict, family)
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    if is_hf_layout(state_dict, prefix):
        vocab, width = state_dict[f"{prefix}text_model.embeddings.token_embedding.weight"].shape
        context = state_dict[f"{prefix}text_model.embeddings.position_embedding.weight"].shape[0]
        hidden = state_dict[f"{prefix}text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
        layers = _count_layers(keys, r"^text_model\.encoder\.layers\.(\d+)\.")
        proj = state_dict.get(f"{prefix}text_projection.weight")
        # SD1 ignores a CLIP-L projection (SD3's clip_l file has one); bigG's and OpenCLIP-H's pooled outputs are
        # projected (as when they are read in open_clip's layout).
        projection = int(proj.shape[0]) if proj is not None and family in ("clip_g", "sd2") else None
    else:
        vocab, width = state_dict[f"{prefix}token_embedding.weight"].shape
        context = state_dict[f"{prefix}positional_embedding"].shape[0]
        hidden = state_dict[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        layers = _count_layers(keys, r"^transformer\.resblocks\.(\d+)\.")
        proj = state_dict.get(f"{prefix}text_projection")
        projection = None if proj is None else int(proj.shape[1])
    config = TextEncoderConfig(
        family=family,
        width=int(width),
        layers=layers,
        heads=max(1, int(width) // HEAD_WIDTH),
        vocab_size=int(vocab),
        context_length=int(context),
        mlp_ratio=hidden / width,
        projection_dim=projection,
    )
    return config, prefix


def hf_to_open_clip(hf: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Map HF `CLIPTextModel` keys (below `text_model.`) onto open_clip's (below `model.`); q/k/v are stacked."""
    out = {f"model.{dst}": hf[src] for src, dst in _HF_GLOBAL_KEYS.items() if src in hf}
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"model.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [hf.get(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            if all(t is not None for t in qkv):
                out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for hf_name, oc_name in _HF_LAYER_KEYS.items():
                if f"{src}{hf_name}.{kind}" in hf:
                    out[f"{dst}{oc_name}.{kind}"] = hf[f"{src}{hf_name}.{kind}"]
    return out


_QKV_ROW = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


def module_key_for_hf(hf_key: str, width: int) -> tuple[str, tuple[int, int, int] | None] | None:
    """Where an HF-layout text-encoder weight lives in TextEncoder: (state-dict key, offset or None).

    For LoRA and other weight patches, which name SD1 and SD2 text weights in the HF layout (as ComfyUI converts
    both to it). q/k/v live stacked in one `in_proj_*` tensor; their offset is (dim, start, length), ComfyUI's
    convention for patching a slice. None if the key names no weight of the tower.
    """
    key = hf_key.removeprefix("text_model.")
    if key in _HF_GLOBAL_KEYS:
        return f"model.{_HF_GLOBAL_KEYS[key]}", None
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if m is None:
        return None
    layer, name, kind = m.groups()
    dst = f"model.transformer.resblocks.{layer}."
    if name.removeprefix("self_attn.") in _QKV_ROW and name.startswith("self_attn."):
        return f"{dst}attn.in_proj_{kind}", (0, _QKV_ROW[name.removeprefix("self_attn.")] * width, width)
    if name in _HF_LAYER_KEYS:
        return f"{dst}{_HF_LAYER_KEYS[name]}.{kind}", None
    return None


def _tower_state_dict(
    state_dict: dict[str, torch.Tensor], config: TextEncoderConfig, prefix: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors in TextEncoder's own layout, and the input keys the layout mapping left out."""
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if is_hf_layout(state_dict, prefix):
        hf = {k[len("text_model."):]: v for k, v in local.items() if k.startswith("text_model.")}
        mapped = hf_to_open_clip(hf, config.layers)
        hf_used = set(_HF_GLOBAL_KEYS) | {k for k in hf if k.startswith("encoder.layers.")}
        unused = [prefix + k for k in local if k[len("text_model."):] not in hf_used]
        if config.projection_dim is not None and "text_projection.weight" in local:
            # HF stores the projection as a Linear (out × in); open_clip multiplies by its transpose.
            mapped["model.text_projection"] = local["text_projection.weight"].t().contiguous()
    else:
        mapped = {f"model.{k}": v for k, v in local.items()}
        unused = []
    return mapped, unused


def build_text_encoder(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None,
                       family: str | None = None) -> TextEncoder:
    """Build the CLIP-L, OpenCLIP-H or bigG text tower that `state_dict` (checkpoint keys, any prefix) describes,
    in `dtype`; `family` ("sd1", "sd2", "clip_g") overrides the kind detection reads off the keys.

    The module is created on the `meta` device and takes the given tensors as its parameters (no random init, no
    second copy beyond SD1's stacked q/k/v). Missing weights are an error; keys nothing uses are logged.
    """
    config, prefix = config_from_state_dict(state_dict, family)
    tensors, unused = _tower_state_dict(state_dict, config, prefix)
    with torch.device("meta"):
        encoder = TextEncoder(config)
    expected = set(encoder.state_dict())
    if "model.logit_scale" in expected and "model.logit_scale" not in tensors:
        # Only the contrastive loss uses it; some converted files leave it out. open_clip's initial value.
        like = tensors["model.token_embedding.weight"]
        tensors["model.logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=like.dtype, device=like.device)
    unused += [prefix + k.removeprefix("model.") for k in sorted(set(tensors) - expected)]
    unused = [k for k in unused if not k.endswith(_KNOWN_EXTRAS)]
    if unused:
        log.warning("text encoder: %d unused keys ignored, e.g. %s", len(unused), ", ".join(unused[:5]))
    missing = sorted(expected - set(tensors))
    if missing:
        raise ValueError(
            f"{config.family} text encoder: {len(missing)} weights missing from the file, e.g. {', '.join(missing[:5])}"
        )
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    encoder.load_state_dict({k: tensors[k] for k in expected}, strict=True, assign=True)
    return encoder.eval().requires_grad_(False)


TokenBatches = dict[str, list[Chunk]]


def tower_tokenizer(tower: nn.Module, embedding_directories: list[str] | None) -> PromptTokenizer:
    """The prompt tokenizer of one tower: its padding, length, embedding width and textual-inversion key
    ("clip_l", "clip_h", "clip_g", "t5xxl": the tensor names in multi-encoder embedding files); T5's reads the
    tokenizer file found beside its weights (`diffusion.text.t5_tokenizer`)."""
    if isinstance(tower, T5Encoder):
        return T5PromptTokenizer(embedding_directories=embedding_directories, embedding_size=tower.config.d_model,
                                 tokenizer_paths=list(tower.tokenizer_paths), source=tower.source)
    config = tower.config
    return PromptTokenizer(
        embedding_directories=embedding_directories, embedding_size=config.width, pad_token=config.pad_token,
        max_length=config.context_length, embedding_key="clip_" + TOKEN_KEYS.get(config.family, "l"),
    )


@torch.no_grad()
def encode_weighted(encoder: TextEncoder, chunks: list[Chunk], empty: Chunk, layer_idx: int | None,
                    norm_hidden: bool = True, project_pooled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond 1×(77·k)×C, pooled 1×C) on the CPU in fp32, weighting as ComfyUI's `encode_token_weights`.

    A token of weight w ≠ 1 becomes z_empty + (z − z_empty)·w, z_empty being the empty prompt's (`empty`) hidden
    state at the same position; only when some weight differs from 1 is the empty prompt encoded at all. The pooled
    output is the first chunk's.
    """
    weighted = any(item[1] != 1.0 for chunk in chunks for item in chunk)
    batch = list(chunks)
    if weighted or not batch:
        batch.append(empty)
    ids, weights, extra = chunk_ids(batch, encoder.config.vocab_size)
    hidden, pooled = encoder(ids, layer_idx, extra, norm_hidden=norm_hidden, project_pooled=project_pooled)
    hidden, pooled = hidden.cpu(), pooled.cpu()
    if not chunks:
        return hidden[-1:], pooled[0:1]
    z = hidden[: len(chunks)]
    if weighted:
        z_empty = hidden[-1:]
        w = weights[: len(chunks), :, None]
        z = torch.where(w != 1.0, (z - z_empty) * w + z_empty, z)
    return z.reshape(1, -1, z.shape[-1]), pooled[0:1]


def towers_of(model: nn.Module) -> dict[str, TextEncoder]:
    """The towers of a text model by token key ("l", "h", "g"): one for a `TextEncoder`, several for a
    `MultiTextEncoder` (diffusion/text/clip_multi.py)."""
    if isinstance(model, TextEncoder):
        return {TOKEN_KEYS.get(model.config.family, "l"): model}
    return model.towers()


class CLIP:
    """The CLIP socket value: a shared text model plus per-clone options (ComfyUI's `comfy.sd.CLIP` semantics).

    The model is one `TextEncoder` (SD1, SD2) or a `MultiTextEncoder` of towers encoded in step (SDXL: CLIP-L and
    bigG; the refiner: bigG). `model` is placed by the memory manager (through `handle`, a ModelHandle the loader
    attaches); this class reads the device from the module's parameters and never moves weights. `clone()` shares
    the module and copies the options, so CLIPSetLastLayer on a clone leaves the original untouched.
    """

    def __init__(
        self,
        model: nn.Module,
        family: str | None = None,
        embedding_directories: list[str] | None = None,
        layer_idx: int | None = None,
    ) -> None:
        self.model = model
        self.family = family or (model.config.family if isinstance(model, TextEncoder) else model.family)
        self.embedding_directories = list(embedding_directories or [])
        self.layer_idx = layer_idx
        self.patches: dict[str, list] = {}
        self.handle: object | None = None
        self.tokenizers = {key: tower_tokenizer(tower, self.embedding_directories)
                           for key, tower in towers_of(model).items()}
        self.tokenizer = next(iter(self.tokenizers.values()))

    @property
    def cond_stage_model(self) -> nn.Module:
        """ComfyUI's name for the text module, for custom nodes that reach for it."""
        return self.model

    @property
    def patcher(self) -> object | None:
        """ComfyUI's name for the model handle."""
        return self.handle

    def clone(self) -> CLIP:
        """A CLIP sharing the same module, with its own copy of the layer choice and patch records."""
        twin = CLIP(self.model, self.family, self.embedding_directories, self.layer_idx)
        twin.patches = {key: list(value) for key, value in self.patches.items()}
        clone_handle = getattr(self.handle, "clone", None)
        twin.handle = clone_handle() if callable(clone_handle) else self.handle
        twin.apply_hooks_to_conds = getattr(self, "apply_hooks_to_conds", None)  # SetClipHooks' HOOKS
        twin.scheduled_clip_hooks = getattr(self, "scheduled_clip_hooks", None)
        return twin

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        """ComfyUI: add weight patches (ComfyUI patch data or WeightPatches) to the text tower's handle; call on a
        clone. Returns the keys applied."""
        if self.handle is None:
            raise RuntimeError("this CLIP has no model handle to record weight patches on")
        return self.handle.add_patches(patches, strength_patch, strength_model)  # type: ignore[attr-defined]

    def get_key_patches(self) -> dict:
        if self.handle is None:
            raise RuntimeError("this CLIP has no model handle")
        return self.handle.get_key_patches()  # type: ignore[attr-defined]

    def get_sd(self) -> dict[str, torch.Tensor]:
        """The text model's (unpatched) state dict."""
        return self.model.state_dict()

    def load_model(self) -> object | None:
        """ComfyUI: place the text tower now; here the model manager places it for the next encode."""
        from diffusion.patcher_api import placed

        with placed([self]):
            pass
        return self.handle

    def clip_layer(self, layer_idx: int) -> None:
        """Stop at layer `layer_idx` (-1 last, -2 penultimate, ...) on every tower, as CLIPSetLastLayer does (on a
        clone)."""
        self.layer_idx = layer_idx

    set_last_layer = clip_layer

    def tokenize(self, text: str, return_word_ids: bool = False, **_options: object) -> TokenBatches:
        """The prompt as 77-token chunks of (token, weight) per tower, keyed as ComfyUI keys them ("l" SD1, "h" SD2,
        "l" and "g" SDXL). Extra keyword options ComfyUI's tokenizers accept for other families are ignored."""
        return {key: tok.tokenize(text, return_word_ids) for key, tok in self.tokenizers.items()}

    def _tokens_for(self, tokens: TokenBatches | list[Chunk], key: str) -> list[Chunk]:
        if not isinstance(tokens, dict):
            return tokens
        if key in tokens:
            return tokens[key]
        if len(tokens) == 1 and len(self.tokenizers) == 1:
            return next(iter(tokens.values()))
        raise ValueError(f"the tokens have no {key!r} entry for this {self.family} text encoder "
                         f"(they have {sorted(tokens)}); tokenize with the same CLIP")

    def encode_tokens(self, tokens: TokenBatches | list[Chunk],
                      project_pooled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, pooled) of tokenized text: each tower encodes its chunks, a multi-tower model combines them."""
        towers = towers_of(self.model)
        if isinstance(self.model, TextEncoder):
            key, tower = next(iter(towers.items()))
            return encode_weighted(tower, self._tokens_for(tokens, key), self.tokenizers[key].empty_chunk(),
                                   self.layer_idx, project_pooled=project_pooled)
        layer_idx = self.model.default_layer_idx if self.layer_idx is None else self.layer_idx
        per_tower = {key: self._tokens_for(tokens, key) for key in towers}
        if self.model.family == "sd3" and not any(per_tower.get(k) for k in ("l", "g")):
            towers = {k: v for k, v in towers.items() if k not in ("l", "g")}  # ComfyUI skips an empty CLIP pair
        outputs = {}
        for key, tower in towers.items():
            if isinstance(tower, T5Encoder):  # T5's default is its last layer
                outputs[key] = encode_t5_weighted(tower, per_tower[key], self.layer_idx)
            else:
                outputs[key] = encode_weighted(tower, per_tower[key], self.tokenizers[key].empty_chunk(), layer_idx,
                                               norm_hidden=self.model.norm_hidden,
                                               project_pooled=project_pooled)
        return self.model.combine(outputs)

    def encode_chunks(self, chunks: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond 1×(77·k)×C, pooled 1×C) of chunks given to every tower."""
        return self.encode_tokens(chunks)

    def encode_from_tokens(
        self, tokens: TokenBatches | list[Chunk], return_pooled: bool = False, return_dict: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        """Encode `tokenize`'s output: cond, or (cond, pooled) with `return_pooled`, or a dict with `return_dict`.
        Called from a ComfyUI pack, the text tower is placed by the model manager first (`patcher_api.placed`).
        `return_pooled="unprojected"` (ComfyUI) gives the pooled output before the towers' text projection."""
        from diffusion.patcher_api import placed

        with placed([self]):
            cond, pooled = self.encode_tokens(tokens, project_pooled=return_pooled != "unprojected")
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: TokenBatches | list[Chunk], unprojected: bool = False,
                                     add_dict: dict | None = None, show_pbar: bool = True) -> list[list]:
        """A CONDITIONING value: [[cond, {"pooled_output": pooled, **add_dict}]] (ComfyUI's form without hooks)."""
        from diffusion.patcher_api import placed

        with placed([self]):
            cond, pooled = self.encode_tokens(tokens, project_pooled=not unprojected)
        return [[cond, {"pooled_output": pooled, **(add_dict or {})}]]

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond 1×(77·k)×C, pooled 1×C) of a prompt."""
        return self.encode_tokens(self.tokenize(text))
