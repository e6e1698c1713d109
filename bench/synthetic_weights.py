"""Deterministic random-weight safetensors files too big to hold in memory: the layouts of SD3.5 Large's MMDiT and
of T5-XXL (neither has a key list in ../shared/reference), written tensor by tensor so building an 8 GB file takes
one tensor's worth of memory.

Shapes come from the real modules built on the `meta` device (Loom's MMDiT at SD3.5 Large's published config;
transformers' T5EncoderModel at T5-v1.1-XXL's), so the files have exactly the keys and shapes users' files have.
Values follow ../shared/reference/make_random_checkpoint.py's rules (per-key seed crc32(key); norm scales
1 + 0.05·randn, biases 0.02·randn, matrices randn/sqrt(fan_in)), so every machine writes the same bytes.
Matrices (2+ dims) may be stored in float8_e4m3fn as the `*_fp8_e4m3fn` files ComfyUI users download are.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float8_e4m3fn: "F8_E4M3", torch.int64: "I64"}
Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]


def random_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The fp32 values of `key` (the reference script's rules)."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if len(shape) >= 2:
        fan_in = max(1, int(torch.Size(shape).numel() // shape[0]))
        return torch.randn(shape, generator=gen) / fan_in ** 0.5
    if key.endswith("weight") and len(shape) == 1:
        return 1 + 0.05 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def write_streamed(path: Path, spec: Spec, metadata: dict[str, str] | None = None) -> Path:
    """Write `spec` (key → shape, storage dtype) to `path` one tensor at a time; atomic (temp file, then rename)."""
    header: dict[str, object] = {"__metadata__": metadata or {}}
    offset = 0
    keys = sorted(spec)
    for key in keys:
        shape, dtype = spec[key]
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key in keys:
            shape, dtype = spec[key]
            f.write(random_tensor(key, shape).to(dtype).contiguous().view(torch.uint8).numpy().tobytes())
    tmp.replace(path)
    return path


def _spec_of(module: torch.nn.Module, matrix_dtype: torch.dtype, other_dtype: torch.dtype,
             skip: tuple[str, ...] = ()) -> Spec:
    spec: Spec = {}
    for key, t in module.state_dict().items():
        if key in skip:
            continue
        spec[key] = (tuple(t.shape), matrix_dtype if t.dim() >= 2 else other_dtype)
    return spec


def sd35_large_mmdit_spec(matrix_dtype: torch.dtype = torch.float8_e4m3fn) -> Spec:
    """SD3.5 Large's MMDiT as a bare `diffusion_model` file (models/unet): 38 joint blocks of width 2432, 38 heads,
    RMS QK-norm, no dual-attention blocks, a 192×192 positional table; `pos_embed` kept in fp16 as in the files."""
    from diffusion.networks.mmdit import MMDiT, MMDiTConfig

    config = MMDiTConfig(depth=38, hidden_size=2432, heads=38, pos_embed_max_size=192, qk_norm=True)
    with torch.device("meta"):
        net = MMDiT(config)
    spec = _spec_of(net, matrix_dtype, torch.float16, skip=("pos_embed",))
    spec["pos_embed"] = ((1, 192 * 192, 2432), torch.float16)
    return spec


def t5xxl_spec(matrix_dtype: torch.dtype = torch.float8_e4m3fn) -> Spec:
    """T5-v1.1-XXL's encoder in transformers' layout (ComfyUI's t5xxl_*.safetensors: `shared.weight`, `encoder.*`,
    no tied `encoder.embed_tokens.weight`)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    spec = _spec_of(model, matrix_dtype, torch.float16, skip=("encoder.embed_tokens.weight",))
    # the relative-position table is a 2-D matrix but stays in half precision in the fp8 files
    rel = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    spec[rel] = (spec[rel][0], torch.float16)
    return spec


def spec_from_key_list(path: Path, prefix: str = "", strip: str = "") -> Spec:
    """A spec from a ../shared/reference key list, keeping the keys under `prefix` and removing `strip`."""
    names = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64}
    tensors = json.loads(path.read_text())["tensors"]
    return {k[len(strip):] if strip and k.startswith(strip) else k: (tuple(shape), names[dt])
            for k, (shape, dt) in tensors.items() if k.startswith(prefix) and names[dt] != torch.int64}
