"""GGUF diffusion-model files (the ComfyUI-GGUF pack's format) as Loom networks that stay quantised in memory.

Owns `read_gguf` (the file's tensors: F32/F16/BF16 ones as torch tensors, quantised ones as `QuantizedWeight` —
the packed blocks, the GGML type and the logical shape, from `comfy.gguf.orig_shape.<name>` metadata where the
converter reshaped a tensor; keys under `model.diffusion_model.` have it stripped) and `load_gguf_unet` (a UNet
(sd1/sd2/sdxl) or an SD3 MMDiT built on `meta` with the tensors assigned: quantised matmul weights stay packed and
are dequantised per call by the cast layers, `weight_cast.layer_weight`; any other quantised tensor is dequantised
once at load). Reading uses the `gguf` package; the dequantisers are Loom's own (`diffusion/files/gguf_quants.py`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from diffusion.files.checkpoint import UNET_PREFIX, CheckpointError
from diffusion.families import Evidence, family_for, read_unet_shapes
from diffusion.files.gguf_quants import dequantize, is_supported
from diffusion.networks.mmdit import MMDiT, mmdit_config_from_state_dict, sincos_pos_embed_2d
from diffusion.files.mmdit_loading import is_mmdit
from diffusion.networks.unet import UNetModel
from diffusion.networks.weight_cast import casting, make_casting

log = logging.getLogger(__name__)
IMAGE_ARCHS = ("sd1", "sdxl", "sd3")  # what Loom builds of the pack's `general.architecture` values
_FLOAT_TYPES = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}


@dataclass
class QuantizedWeight:
    """One quantised tensor: packed GGML blocks (uint8), the type number and the logical (torch-order) shape."""

    raw: torch.Tensor
    qtype: int
    shape: tuple[int, ...]

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(self.raw, self.qtype, self.shape, dtype)


Loaded = dict[str, "torch.Tensor | QuantizedWeight"]


def read_gguf(path: str | os.PathLike[str],
              check_arch: Callable[[str | None], None] | None = None) -> tuple[Loaded, str | None]:
    """(tensors by name, `general.architecture` or None) of a GGUF file; `CheckpointError` for types Loom cannot
    read. `check_arch` sees the architecture before any tensor is read (and raises for a file of the wrong kind)."""
    import gguf  # the format reader; only GGUF files need it

    try:
        reader = gguf.GGUFReader(os.fspath(path))
    except (ValueError, OSError) as err:
        raise CheckpointError(f"{os.fspath(path)}: not a readable GGUF file ({err})") from err
    arch_field = reader.get_field("general.architecture")
    arch = str(bytes(arch_field.parts[arch_field.data[-1]]), "utf-8") if arch_field is not None else None
    if check_arch is not None:
        check_arch(arch)
    names = [t.name for t in reader.tensors]
    prefixed = any(n.startswith(UNET_PREFIX) for n in names)
    out: Loaded = {}
    for t in reader.tensors:
        name = t.name
        if prefixed:
            if not name.startswith(UNET_PREFIX):
                continue
            name = name[len(UNET_PREFIX):]
        shape = _orig_shape(reader, t.name) or tuple(int(v) for v in reversed(t.shape))
        qtype = int(t.tensor_type)
        data = torch.from_numpy(np.array(t.data))  # a copy in RAM: the file's map is closed after reading
        if qtype in _FLOAT_TYPES:
            out[name] = data.view(_FLOAT_TYPES[qtype]).reshape(shape) if qtype == 30 else data.reshape(shape)
        elif is_supported(qtype):
            out[name] = QuantizedWeight(data.reshape(-1), qtype, shape)
        else:
            raise CheckpointError(f"{os.fspath(path)}: tensor {t.name} is GGML type {t.tensor_type.name}, which "
                                  f"Loom does not dequantise (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, F16, F32)")
    return out, arch


def _orig_shape(reader: object, name: str) -> tuple[int, ...] | None:
    field = reader.get_field(f"comfy.gguf.orig_shape.{name}")  # type: ignore[attr-defined]
    if field is None:
        return None
    return tuple(int(field.parts[i][0]) for i in field.data)


def _shapes(tensors: Loaded) -> dict[str, torch.Tensor]:
    """Meta tensors of the logical shapes, for the detection code that reads keys and shapes."""
    return {k: torch.empty(v.shape if isinstance(v, QuantizedWeight) else tuple(v.shape), device="meta")
            for k, v in tensors.items()}


def load_gguf_unet(path: str | os.PathLike[str], dtype: torch.dtype) -> tuple[nn.Module, str, str]:
    """(network computing in `dtype`, family name, prediction) of a GGUF UNet/MMDiT file."""
    tensors, arch = read_gguf(path)
    if arch is not None and arch not in IMAGE_ARCHS:
        raise CheckpointError(f"{os.fspath(path)}: GGUF architecture {arch!r} is not a model family Loom runs "
                              f"(it runs {', '.join(IMAGE_ARCHS)})")
    shapes = _shapes(tensors)
    if is_mmdit(shapes):
        try:
            config = mmdit_config_from_state_dict(shapes)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{os.fspath(path)}: MMDiT tensors missing ({err})") from err
        if "pos_embed" not in tensors:
            tensors["pos_embed"] = sincos_pos_embed_2d(config.hidden_size, config.pos_embed_max_size, 64)
        with torch.device("meta"):
            net: nn.Module = MMDiT(config)
        family, prediction = "sd3", "flow"
    else:
        try:
            detected = family_for(Evidence(read_unet_shapes(shapes), None, {}))
            unet_config = detected.unet_config(read_unet_shapes(shapes))
        except (KeyError, ValueError, CheckpointError) as err:
            raise CheckpointError(f"{os.fspath(path)}: not a UNet or MMDiT Loom knows ({err})") from err
        with torch.device("meta"):
            net = UNetModel(unet_config)
        family, prediction = detected.name, detected.prediction(shapes, {})
    assign_gguf(net, tensors, dtype, os.fspath(path))
    counts: dict[str, int] = {}
    for v in tensors.values():
        kind = f"type {v.qtype}" if isinstance(v, QuantizedWeight) else str(v.dtype)
        counts[kind] = counts.get(kind, 0) + 1
    log.info("GGUF %s: %s", os.path.basename(os.fspath(path)), ", ".join(f"{k} ({n})" for k, n in counts.items()))
    return net.eval().requires_grad_(False), family, prediction


def assign_gguf(net: nn.Module, tensors: Loaded, dtype: torch.dtype, what: str) -> None:
    """Put `tensors` into `net` (built on meta): matmul weights of casting layers stay packed (`weight_qtype`,
    `weight_shape` on the layer), unquantised weights of casting layers keep the file's dtype, everything else
    computes in `dtype`; strict key and shape checks."""
    make_casting(net)
    expected = net.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{what}: GGUF tensors do not match the network: {len(missing)} missing (e.g. "
                              f"{missing[:5]}), {len(unexpected)} unexpected (e.g. {unexpected[:5]})")
    for key, value in tensors.items():
        shape = value.shape if isinstance(value, QuantizedWeight) else tuple(value.shape)
        if tuple(shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{what}: GGUF tensor {key} has shape {tuple(shape)}, the network "
                                  f"{tuple(expected[key].shape)}")
        owner_path, _, attr = key.rpartition(".")
        owner = net.get_submodule(owner_path) if owner_path else net
        keeps = casting(owner) and attr in ("weight", "bias")
        if isinstance(value, QuantizedWeight):
            if keeps and attr == "weight":
                owner.weight_qtype, owner.weight_shape = value.qtype, value.shape
                tensor = value.raw
            else:
                tensor = value.dequantize(dtype)
        else:
            tensor = value if keeps else value.to(dtype)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
        else:
            owner._buffers[attr] = tensor
    net.compute_dtype = dtype
