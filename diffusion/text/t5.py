"""The T5 encoder tower of SD3/SD3.5 (T5-XXL v1.1; Raffel et al. 2020, "Exploring the Limits of Transfer Learning
with a Unified Text-to-Text Transformer"), built with transformers' `T5EncoderModel` from the files users have.

Owns:
- `is_t5` / `t5_prefix`: a T5 encoder's keys in any file (`encoder.block.N.layer.0.SelfAttention.q.weight`,
  `shared.weight`, ...: the layout of ComfyUI's `t5xxl_fp16.safetensors` / `t5xxl_fp8_e4m3fn*.safetensors`, of
  transformers' own exports, and below `text_encoders.t5xxl.transformer.` inside SD3 single files);
- `T5Config`: the tower's shape read off those keys (width, heads, depth, feed-forward width, gated or not);
- `T5Encoder`: the module (`transformer` is the `T5EncoderModel`, so its state-dict keys are the file's under
  `transformer.`); every linear layer upcasts its weight per call (`diffusion.networks.mmdit_blocks.Linear`), so fp16, bf16,
  `float8_e4m3fn` and ComfyUI "scaled fp8" weights stay as stored in memory and the computation is fp32, as Loom
  computes every text tower;
- `build_t5`: the tower of a state dict, its fp8 tensors kept in fp8;
- `encode_t5_weighted`: (cond, None) of T5 token chunks with ComfyUI's prompt-weight rule.

ComfyUI's T5 semantics (`comfy/text_encoders/t5.py`, `sd3_clip.py`) as the spec: no attention mask (padding tokens
take part in attention), the last layer after the final RMS norm; an intermediate layer chosen by CLIPSetLastLayer
goes through the final norm too; no pooled output.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks.mmdit_blocks import FP8_DTYPES, Linear
from diffusion.text.prompt import Chunk, chunk_ids

_Q_KEY = "encoder.block.0.layer.0.SelfAttention.q.weight"
_BIAS_KEY = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
_BLOCK = re.compile(r"encoder\.block\.(\d+)\.")
# Keys of whole encoder-decoder files that the encoder does not use.
_IGNORED = ("decoder.", "lm_head.")
T5_PAD_TOKEN, T5_EOS_TOKEN = 0, 1
_STORED = (*FP8_DTYPES, torch.float16, torch.bfloat16)  # storage dtypes linear weights keep


def t5_prefix(keys: object) -> str | None:
    """The prefix in front of a T5 encoder's keys (`""`, `"transformer."`, ...), None when there is none."""
    for key in keys:  # type: ignore[attr-defined]
        if isinstance(key, str) and key.endswith(_Q_KEY):
            return key[: -len(_Q_KEY)]
    return None


def is_t5(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a file's keys hold a T5 encoder (what ComfyUI takes for T5 when a file is neither CLIP-L nor -G)."""
    return t5_prefix(state_dict) is not None


@dataclass(frozen=True)
class T5Config:
    """The shape of a T5 encoder; `family` is the token key ComfyUI gives SD3's T5 ("t5xxl")."""

    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int
    gated: bool = True  # T5 v1.1 (T5-XXL): gated-GELU feed-forward; the original T5: ReLU
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    family: str = "t5xxl"

    @property
    def width(self) -> int:
        """The hidden width (4096 for T5-XXL): the width of `embedding:` vectors for this tower."""
        return self.d_model

    def transformers_config(self):  # -> transformers.T5Config
        """The same shape as transformers' config (encoder only, no dropout)."""
        from transformers import T5Config as HFConfig

        return HFConfig(vocab_size=self.vocab_size, d_model=self.d_model, d_kv=self.d_kv, d_ff=self.d_ff,
                        num_layers=self.num_layers, num_heads=self.num_heads, dropout_rate=0.0,
                        relative_attention_num_buckets=self.num_buckets,
                        relative_attention_max_distance=self.max_distance, layer_norm_epsilon=self.eps,
                        feed_forward_proj="gated-gelu" if self.gated else "relu", is_encoder_decoder=False,
                        use_cache=False)


def t5_config_from_state_dict(state_dict: dict[str, torch.Tensor], prefix: str = "") -> T5Config:
    """The T5 shape of keys below `prefix`; ValueError naming what is missing."""
    def get(key: str) -> torch.Tensor:
        if prefix + key not in state_dict:
            raise ValueError(f"T5 encoder weights lack {prefix + key}")
        return state_dict[prefix + key]

    shared_key = "shared.weight" if prefix + "shared.weight" in state_dict else "encoder.embed_tokens.weight"
    vocab, d_model = get(shared_key).shape
    heads = get(_BIAS_KEY).shape[1]
    inner = get(_Q_KEY).shape[0]
    gated = prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state_dict
    d_ff = get("encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight").shape[0]
    layers = 1 + max(int(m.group(1)) for k in state_dict if k.startswith(prefix)
                     for m in [_BLOCK.match(k[len(prefix):])] if m)
    return T5Config(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads, d_ff=d_ff,
                    num_layers=layers, gated=gated, num_buckets=get(_BIAS_KEY).shape[0])


def _feed_forward_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' feed-forward without its cast of the activations to `wo`'s storage dtype (fp16/fp8 weights
    here are upcast by the layer instead)."""
    if hasattr(self, "wi_0"):
        h = self.act(self.wi_0(x)) * self.wi_1(x)
    else:
        h = self.act(self.wi(x))
    return self.wo(h)


@lru_cache(maxsize=1)
def _feed_forward_classes() -> dict[type, type]:
    """transformers' feed-forward classes → subclasses with Loom's forward (made on first use: importing
    transformers takes seconds, and start-up must not pay for it)."""
    from transformers.models.t5 import modeling_t5

    return {base: type(f"Upcast{base.__name__}", (base,), {"forward": _feed_forward_forward})
            for base in (modeling_t5.T5DenseGatedActDense, modeling_t5.T5DenseActDense)}


def _upcasting(model: nn.Module) -> None:
    """Turn every linear layer into one that upcasts its stored weight per call, and every feed-forward into one
    that computes in the activations' dtype. Only the classes change; no tensor is touched."""
    feed_forwards = _feed_forward_classes()
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = Linear
        elif type(module) in feed_forwards:
            module.__class__ = feed_forwards[type(module)]


class T5Encoder(nn.Module):
    """A T5 encoder tower; `tokenizer_paths` are where its `tokenizer.json` is looked for, in order (beside its
    weights first; read when a prompt is tokenized, so a file put there later is found)."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        from transformers import T5EncoderModel

        self.config = config
        self.transformer = T5EncoderModel(config.transformers_config())
        _upcasting(self.transformer)
        self.tokenizer_paths: list[Path] = []
        self.source = ""  # the file the weights came from, for messages
        self.fp8_file = False  # whether the token table was stored in fp8

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def embed(self, tokens: torch.Tensor, extra_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings in fp32; ids >= vocab_size index rows of `extra_embeddings` (`embedding:` vectors)."""
        weight = self.transformer.shared.weight
        vocab = weight.shape[0]
        n_extra = 0 if extra_embeddings is None else extra_embeddings.shape[0]
        if tokens.numel() and int(tokens.max()) >= vocab + n_extra:
            raise ValueError(f"token id {int(tokens.max())} is beyond T5's vocabulary ({vocab}) and the "
                             f"{n_extra} extra rows")
        x = F.embedding(tokens.clamp(max=vocab - 1), weight).float()
        if self.fp8_file:
            x = torch.nan_to_num(x)  # ComfyUI's guard for fp8 T5 files
        if n_extra:
            rows = extra_embeddings.to(device=x.device, dtype=torch.float32)
            x = torch.where((tokens >= vocab)[..., None], rows[(tokens - vocab).clamp(min=0, max=n_extra - 1)], x)
        return x

    def _hidden_index(self, layer_idx: int | None) -> int | None:
        if layer_idx is None or abs(layer_idx) > self.num_layers:
            return None
        return layer_idx + self.num_layers if layer_idx < 0 else layer_idx

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, layer_idx: int | None = None,
                extra_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """B×T ids → B×T×d_model fp32 hidden states: the last layer, or layer `layer_idx` (negative from the end;
        beyond the depth: the last), both after the final RMS norm."""
        device = self.transformer.shared.weight.device
        tokens = tokens.to(device=device, dtype=torch.long)
        x = self.embed(tokens, extra_embeddings)
        target = self._hidden_index(layer_idx)
        captured: list[torch.Tensor] = []
        hook = None
        if target is not None and target != self.num_layers - 1:
            block = self.transformer.encoder.block[target]
            hook = block.register_forward_hook(lambda _m, _i, out: captured.append(out[0].clone()))
        try:
            last = self.transformer(inputs_embeds=x).last_hidden_state
        finally:
            if hook is not None:
                hook.remove()
        if captured:
            return self.transformer.encoder.final_layer_norm(captured[0]).float()
        return last.float()


def _pad_rows(chunks: list[Chunk]) -> list[Chunk]:
    """Rows of one length, shorter ones padded with T5's pad token (weight 1)."""
    length = max(len(c) for c in chunks)
    return [list(c) + [(T5_PAD_TOKEN, 1.0)] * (length - len(c)) for c in chunks]


def empty_t5_chunk(length: int) -> Chunk:
    """The empty prompt's tokens for T5 (ComfyUI's `gen_empty_tokens`: end token, then padding up to `length`)."""
    return [(T5_EOS_TOKEN, 1.0)] + [(T5_PAD_TOKEN, 1.0)] * max(0, length - 1)


@torch.no_grad()
def encode_t5_weighted(encoder: T5Encoder, chunks: list[Chunk],
                       layer_idx: int | None = None) -> tuple[torch.Tensor, None]:
    """(cond 1×T×d_model on the CPU in fp32, None): a token of weight w ≠ 1 becomes z_empty + (z − z_empty)·w,
    z_empty the empty prompt's state at that position (ComfyUI's `encode_token_weights`); no chunks at all encode
    the empty prompt alone (one end token)."""
    weighted = any(item[1] != 1.0 for chunk in chunks for item in chunk)
    batch = list(chunks)
    if weighted or not batch:
        batch.append(empty_t5_chunk(max((len(c) for c in chunks), default=0)))
    batch = _pad_rows(batch)
    ids, weights, extra = chunk_ids(batch, encoder.config.vocab_size)
    hidden = encoder(ids, layer_idx, extra).cpu()
    if not chunks:
        return hidden[-1:], None
    z = hidden[: len(chunks)]
    if weighted:
        w = weights[: len(chunks), :, None]
        z = torch.where(w != 1.0, (z - hidden[-1:]) * w + hidden[-1:], z)
    return z.reshape(1, -1, z.shape[-1]), None


def build_t5(state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
             source: str = "") -> T5Encoder:
    """The T5 encoder of `state_dict` (keys below any prefix; an encoder-decoder file's decoder is ignored).

    Linear weights and the token table keep a float8 (token table: fp32 then), fp16 or bf16 storage dtype and
    otherwise take `dtype`; norms and the relative-position table are fp32; ComfyUI "scaled fp8" files'
    `scale_weight` scalars go to their layers. ValueError naming the problem when the keys do not fit.
    """
    prefix = t5_prefix(state_dict)
    if prefix is None:
        raise ValueError(f"no T5 encoder keys (such as {_Q_KEY})")
    config = t5_config_from_state_dict(state_dict, prefix)
    own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    own = {k: v for k, v in own.items() if not k.startswith(_IGNORED) and k != "scaled_fp8"}
    scales = {k[: -len(".scale_weight")]: v for k, v in own.items() if k.endswith(".scale_weight")}
    own = {k: v for k, v in own.items() if not k.endswith((".scale_weight", ".scale_input"))}
    if "shared.weight" not in own:
        own["shared.weight"] = own["encoder.embed_tokens.weight"]
    own.pop("encoder.embed_tokens.weight", None)
    with torch.device("meta"):
        encoder = T5Encoder(config)
    expected = {k for k in encoder.transformer.state_dict() if k != "encoder.embed_tokens.weight"}
    missing, unexpected = sorted(expected - set(own)), sorted(set(own) - expected)
    if missing or unexpected:
        raise ValueError(f"T5 encoder weights do not fit a T5 of {config.num_layers} layers: {len(missing)} "
                         f"missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    # Weights as stored when half or fp8 (each layer upcasts per call: a 4.7 B-parameter T5-XXL must never be
    # widened to fp32 in memory), fp32 ones in `dtype`; the token table's rows are looked up, not multiplied, so an
    # fp8 table becomes fp32 (or `dtype`); norms and the 32-bucket position table in fp32 (a few kB).
    plain = torch.float32 if dtype in FP8_DTYPES else dtype
    linear = {n + ".weight" for n, m in encoder.transformer.named_modules() if isinstance(m, Linear)}

    def cast(key: str, value: torch.Tensor) -> torch.Tensor:
        if key in linear:
            return value if value.dtype in _STORED else value.to(dtype)
        if key == "shared.weight":
            return value if value.dtype in (torch.float16, torch.bfloat16) else value.to(plain)
        return value.to(torch.float32)

    encoder.fp8_file = own["shared.weight"].dtype in FP8_DTYPES
    tensors = {k: cast(k, v) for k, v in own.items()}
    encoder.transformer.load_state_dict(tensors, strict=False, assign=True)
    encoder.transformer.encoder.embed_tokens = encoder.transformer.shared
    for name, scale in scales.items():
        module = encoder.transformer.get_submodule(name)
        if not isinstance(module, Linear):
            raise ValueError(f"scaled fp8: {name}.scale_weight belongs to no linear layer")
        module.scale_weight = scale.float()
    encoder.source = source
    return encoder.eval().requires_grad_(False)
