"""GGUF text encoders (the files the ComfyUI-GGUF pack's CLIPLoaderGGUF nodes take) as Loom's text towers.

Owns:
- `check_text_arch`: which GGUF files are text encoders. As in the pack, a text file must say what it is in
  `general.architecture`; Loom builds the T5 encoders ("t5", "t5encoder": city96's t5-v1_1-xxl-encoder-gguf and
  llama.cpp's own T5 conversions). A diffusion model, a file without an architecture or a text model no Loom family
  uses (llama, qwen, gemma, ...) is refused before any tensor is read, with the reason. CLIP-L and CLIP-G have no
  GGUF form the pack reads; they come from their ordinary files, which the GGUF loader nodes list too;
- `t5_key`: llama.cpp's T5 tensor names (`token_embd.weight`, `enc.blk.N.attn_q.weight`, `enc.blk.N.ffn_gate
  .weight`, `enc.output_norm.weight`, ...) → the ordinary layout `diffusion/text/t5.py` builds from
  (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`, ...); names already in that layout are kept,
  a whole T5's decoder (`dec.*`) and LM head (`output.weight`) are dropped;
- `load_gguf_t5`: the `T5Encoder` of such a file. Quantised matmul weights (the attention and feed-forward Linear
  layers: nearly all of T5-XXL's bytes) stay packed in memory and are dequantised per call to the input's dtype by
  the layer (`weight_cast.layer_weight`, as for GGUF UNets; weight patches apply to each dequantised copy); the
  token table, which is looked up rather than multiplied, and any other quantised tensor are dequantised once at
  load. The logical shapes come from the file's reversed dims, or its `comfy.gguf.orig_shape.*` metadata
  (`gguf_loading.read_gguf`). The tokenizer is found as for a .safetensors T5 (`diffusion.text.t5_tokenizer`).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError
from diffusion.files.gguf_loading import QuantizedWeight, read_gguf
from diffusion.networks.mmdit_blocks import FP8_DTYPES
from diffusion.networks.weight_cast import casting
from diffusion.text.t5 import T5Encoder, build_t5
from diffusion.text.t5_tokenizer import tokenizer_candidates

log = logging.getLogger(__name__)

TEXT_ARCHS = ("t5", "t5encoder")
# The `general.architecture` values of GGUF diffusion models (the pack's image list).
DIFFUSION_ARCHS = ("sd1", "sdxl", "sd3", "flux", "aura", "hidream", "cosmos", "ltxv", "hyvid", "wan", "lumina2",
                   "qwen_image")
# llama.cpp's per-block T5 encoder names → the ordinary layout below `encoder.block.N.`
_T5_BLOCK_PARTS = {
    "attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k", "attn_v": "layer.0.SelfAttention.v",
    "attn_o": "layer.0.SelfAttention.o", "attn_norm": "layer.0.layer_norm",
    "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias", "ffn_gate": "layer.1.DenseReluDense.wi_0",
    "ffn_up": "layer.1.DenseReluDense.wi_1", "ffn_down": "layer.1.DenseReluDense.wo",
    "ffn_norm": "layer.1.layer_norm",
}
_BLOCK_NAME = re.compile(r"enc\.blk\.(\d+)\.(\w+)\.(weight|bias)")
# The matmul weights of a T5 encoder in the ordinary layout (the layers that dequantise per call).
_LINEAR_WEIGHT = re.compile(r"\.(SelfAttention\.[qkvo]|DenseReluDense\.(wi|wi_0|wi_1|wo))\.weight$")


def check_text_arch(arch: str | None, path: str | os.PathLike[str]) -> None:
    """`CheckpointError` with the reason unless `arch` is a GGUF text-encoder architecture Loom builds."""
    if arch in TEXT_ARCHS:
        return
    where = os.fspath(path)
    if arch is None:
        raise CheckpointError(f"{where}: the GGUF file has no general.architecture, so it is not a llama.cpp-style "
                              f"text encoder (Loom reads T5 encoders from GGUF: {', '.join(TEXT_ARCHS)}); use the "
                              f".safetensors version")
    if arch in DIFFUSION_ARCHS:
        raise CheckpointError(f"{where}: a diffusion model (GGUF architecture {arch!r}), not a text encoder; load it "
                              f"with UnetLoaderGGUF")
    raise CheckpointError(f"{where}: GGUF architecture {arch!r} is not a text encoder Loom builds from GGUF (it "
                          f"builds {', '.join(TEXT_ARCHS)}; CLIP-L and CLIP-G come from their .safetensors files)")


def t5_key(name: str, gated: bool = True) -> str | None:
    """The ordinary T5 key of a GGUF tensor name (None: a tensor the encoder does not use); `gated` False maps
    `ffn_up` to the ungated feed-forward's `wi` (the original T5; v1.1 / T5-XXL is gated)."""
    if name == "token_embd.weight":
        return "shared.weight"
    if name == "enc.output_norm.weight":
        return "encoder.final_layer_norm.weight"
    if name.startswith(("dec.", "output.")):
        return None
    match = _BLOCK_NAME.fullmatch(name)
    if match is None or match.group(2) not in _T5_BLOCK_PARTS:
        return name  # the ordinary layout already, or a name the strict check in build_t5 reports
    part = _T5_BLOCK_PARTS[match.group(2)]
    if not gated and match.group(2) == "ffn_up":
        part = "layer.1.DenseReluDense.wi"
    return f"encoder.block.{match.group(1)}.{part}.{match.group(3)}"


def t5_state_dict(tensors: dict[str, torch.Tensor | QuantizedWeight]) -> dict[str, torch.Tensor | QuantizedWeight]:
    """A GGUF T5 file's tensors under the ordinary names (decoder and LM head left out)."""
    gated = not any(".ffn_up." in k for k in tensors) or any(".ffn_gate." in k for k in tensors)
    out: dict[str, torch.Tensor | QuantizedWeight] = {}
    for name, value in tensors.items():
        key = t5_key(name, gated)
        if key is not None:
            out[key] = value
    return out


def load_gguf_t5(path: str | os.PathLike[str], dtype: torch.dtype,
                 tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> T5Encoder:
    """The T5 encoder of a GGUF text-encoder file: packed matmul weights, unquantised tensors as `build_t5` keeps
    them (half weights as stored, fp32 ones in `dtype`, norms fp32), the token table dequantised to `dtype` (fp32
    for an fp8 `dtype`). `CheckpointError` naming the file and the reason for anything else."""
    where = os.fspath(path)
    tensors, _arch = read_gguf(path, check_arch=lambda arch: check_text_arch(arch, path))
    state = t5_state_dict(tensors)
    plain = torch.float32 if dtype in FP8_DTYPES else dtype
    packed = {k: v for k, v in state.items() if isinstance(v, QuantizedWeight) and _LINEAR_WEIGHT.search(k)}
    # Packed weights enter build_t5 as meta placeholders of their logical shape (a half dtype: kept as stored), so
    # its key, shape and config checks run on them; the packed blocks replace them afterwards.
    ready = {k: torch.empty(v.shape, dtype=torch.float16, device="meta") if k in packed
             else v.dequantize(plain) if isinstance(v, QuantizedWeight) else v for k, v in state.items()}
    try:
        tower = build_t5(ready, dtype, source=where)
    except ValueError as err:
        raise CheckpointError(f"{where}: not a T5 encoder Loom can build ({err})") from err
    for key, weight in packed.items():
        layer = tower.transformer.get_submodule(key[: -len(".weight")])
        if not casting(layer):
            raise CheckpointError(f"{where}: GGUF tensor {key} is quantised but its layer cannot dequantise")
        layer._parameters["weight"] = nn.Parameter(weight.raw, requires_grad=False)
        layer.weight_qtype, layer.weight_shape = weight.qtype, weight.shape
    tower.tokenizer_paths = tokenizer_candidates(path, tokenizer_dirs)
    log.info("GGUF T5 %s: %d packed matmul weights, %d other tensors", os.path.basename(where), len(packed),
             len(state) - len(packed))
    return tower
