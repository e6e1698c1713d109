"""Reading model files into state dicts, and splitting single-file checkpoints into their components.

Owns:
- `read_state_dict` / `read_metadata`: `.safetensors` memory-mapped and copied tensor by tensor straight into the
  final tensors (cast while copying, several threads), `.ckpt/.pt/.pth/.bin` through `torch.load(weights_only=True)` — a pickle that
  would need to run code is refused with `CheckpointError`, never executed;
- `split_components`: a single-file SD checkpoint's keys sorted into UNet (`model.diffusion_model.`), VAE
  (`first_stage_model.`) and text encoder (`cond_stage_model.`) with the prefixes stripped, the known extras
  (diffusion schedule buffers, EMA bookkeeping, `position_ids`) set aside, and anything else reported as unknown;
- `CheckpointError`, the one error type of the loading path, whose message says what was found and what to do.

The safetensors layout (8-byte little-endian header length, JSON header, raw little-endian data) is documented at
https://github.com/huggingface/safetensors#format. The file is mapped privately and each tensor's pages are released
(`madvise(MADV_DONTNEED)`) once it is copied out, so the file never sits in the resident set beside its copy: a fp16
file cast to fp32 peaks at about the fp32 size, and no fp32 copy exists when the target is fp16/bf16.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch


class CheckpointError(Exception):
    """A model file that cannot be read or does not have a layout Loom knows."""


SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model."
CONDITIONER_PREFIX = "conditioner."  # SDXL: conditioner.embedders.N.*
TEXT_ENCODER_PREFIXES = (TEXT_ENCODER_PREFIX, CONDITIONER_PREFIX)  # every single-file text tower key

# Top-level tensors of LDM training checkpoints that no network consumes (the DDPM schedule is recomputed by the
# sampler from the beta range; EMA bookkeeping; the CLIP position ids, which are arange(77)).
KNOWN_EXTRA_KEYS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights",
})
KNOWN_EXTRA_PREFIXES = ("model_ema.",)
KNOWN_EXTRA_SUFFIXES = ("position_ids",)

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_READ_THREADS = max(1, min(4, os.cpu_count() or 1))
# A precision for every tensor, or one chosen per key (e.g. fp16 text encoder, fp32 UNet); None keeps the file's.
DTypeChoice = torch.dtype | Callable[[str], torch.dtype | None] | None


@dataclass
class LoadReport:
    """What loading a file did with its keys: the extras it ignored, the keys nothing used, what was missing."""

    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class Components:
    """A checkpoint's tensors by component, prefixes stripped; `extras` are known leftovers, `unknown` the rest."""

    unet: dict[str, torch.Tensor] = field(default_factory=dict)
    vae: dict[str, torch.Tensor] = field(default_factory=dict)
    text_encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    unknown: dict[str, torch.Tensor] = field(default_factory=dict)

    def report(self) -> LoadReport:
        """The ignored and unknown keys (sorted); `missing` is filled by whoever builds the networks."""
        return LoadReport(ignored=sorted(self.extras), unknown=sorted(self.unknown))


def _is_known_extra(key: str) -> bool:
    return (
        key in KNOWN_EXTRA_KEYS
        or key.startswith(KNOWN_EXTRA_PREFIXES)
        or key.endswith(KNOWN_EXTRA_SUFFIXES)
    )


def split_components(state_dict: dict[str, torch.Tensor]) -> Components:
    """Sort a single-file checkpoint's keys into UNet / VAE / text encoder (prefix stripped) / extras / unknown.

    Text-encoder keys keep everything after `cond_stage_model.` (`transformer.text_model...` for SD1,
    `model.transformer...` for SD2); SDXL's keep everything after `conditioner.` (`embedders.N...`).
    """
    parts = Components()
    for key, tensor in state_dict.items():
        if _is_known_extra(key):
            parts.extras[key] = tensor
        elif key.startswith(UNET_PREFIX):
            parts.unet[key[len(UNET_PREFIX):]] = tensor
        elif key.startswith(VAE_PREFIX):
            parts.vae[key[len(VAE_PREFIX):]] = tensor
        elif key.startswith(TEXT_ENCODER_PREFIX):
            parts.text_encoder[key[len(TEXT_ENCODER_PREFIX):]] = tensor
        elif key.startswith(CONDITIONER_PREFIX):
            parts.text_encoder[key[len(CONDITIONER_PREFIX):]] = tensor
        else:
            parts.unknown[key] = tensor
    return parts


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The keys that start with `prefix`, without it; the whole dict unchanged when no key has it."""
    if not any(k.startswith(prefix) for k in state_dict):
        return dict(state_dict)
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


# --- safetensors ---------------------------------------------------------------------------------------------


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its data begins."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is not a safetensors file: it is shorter than its 8-byte header length")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 1024 * 1024 or length > os.path.getsize(path):
            raise CheckpointError(f"{path} is not a safetensors file: header length {length} is implausible")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path} has a corrupt safetensors header: {err}") from err
    return header, 8 + length


def _target_dtype(dtype: DTypeChoice, key: str, shape: list[int] | None = None,
                  matrix_dtype: Callable[[str], torch.dtype | None] | None = None) -> torch.dtype | None:
    if matrix_dtype is not None and shape is not None and len(shape) >= 2:
        chosen = matrix_dtype(key)
        if chosen is not None:
            return chosen
    return dtype(key) if callable(dtype) else dtype


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.to(device) if str(device) != "cpu" else tensor


def _read_one(
    mapped: mmap.mmap, info: dict, base: int, dtype: torch.dtype | None, device: torch.device | str
) -> torch.Tensor:
    """One tensor copied (and cast) out of the mapped file; its pages are then dropped from this process."""
    try:
        file_dtype = _ST_DTYPES[info["dtype"]]
    except KeyError as err:
        raise CheckpointError(f"unsupported safetensors dtype {info['dtype']!r}") from err
    start, end = info["data_offsets"]
    shape = info["shape"]
    numel = math.prod(shape)
    if numel * file_dtype.itemsize != end - start or base + end > len(mapped):
        raise CheckpointError(f"tensor of shape {shape} does not match its bytes {start}..{end}")
    if numel == 0:
        return _cast(torch.empty(shape, dtype=file_dtype), dtype, device)
    source = torch.frombuffer(mapped, dtype=file_dtype, count=numel, offset=base + start).view(shape)
    target = dtype if dtype is not None and source.is_floating_point() else file_dtype
    # Straight from the page cache into the final tensor: a cast when the dtype changes, one copy otherwise.
    tensor = source.to(target, copy=True)
    del source
    _release(mapped, base + start, base + end)
    return tensor.to(device) if str(device) != "cpu" else tensor


def _release(mapped: mmap.mmap, start: int, end: int) -> None:
    """Drop the mapped pages of [start, end) from the resident set (they stay in the OS page cache)."""
    first = start - start % mmap.PAGESIZE
    length = end - first
    if hasattr(mapped, "madvise") and length > 0:
        mapped.madvise(mmap.MADV_DONTNEED, first, min(length, len(mapped) - first))


def _read_safetensors(path: Path, dtype: DTypeChoice, device: torch.device | str,
                      matrix_dtype: Callable[[str], torch.dtype | None] | None = None) -> dict[str, torch.Tensor]:
    header, base = _safetensors_header(path)
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]
    )
    needed = base + max((info["data_offsets"][1] for _, info in entries), default=0)
    size = os.path.getsize(path)
    if size < needed:
        raise CheckpointError(
            f"{path.name} is truncated: its header lists {needed:,} bytes but the file has {size:,} "
            f"({100 * size / needed:.0f}%); the download or copy was probably interrupted — fetch the file again"
        )
    with open(path, "rb") as f:
        # A private (copy-on-write) mapping: writable for torch.frombuffer, never written back to the file.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        # The casts and copies release the GIL, so a few threads overlap page faults and conversion.
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            tensors = list(
                pool.map(lambda kv: _read_one(mapped, kv[1], base,
                                              _target_dtype(dtype, kv[0], kv[1]["shape"], matrix_dtype), device),
                         entries)
            )
    finally:
        mapped.close()
    return {k: t for (k, _), t in zip(entries, tensors)}


# --- pickled torch files -------------------------------------------------------------------------------------


def _inert_class(module: str, name: str) -> type:
    """A do-nothing stand-in for a class some checkpoints pickle next to the weights (training callbacks)."""

    def _setstate(self: object, state: object) -> None:
        return None

    return type(name, (), {"__module__": module, "__qualname__": name, "__setstate__": _setstate})


# PyTorch Lightning pickles its ModelCheckpoint callback state into SD1.x training checkpoints; allowing this
# inert stand-in lets `weights_only` read those files without importing or running Lightning.
_INERT_GLOBALS = [
    _inert_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    _inert_class("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"),
]


def _torch_load(path: Path) -> object:
    use_mmap = zipfile.is_zipfile(path)  # torch can only memory-map the zip-based format
    try:
        with torch.serialization.safe_globals(_INERT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path.name} is a pickle that wants to run code or build objects other than tensors, so it was refused "
            f"and nothing in it was executed. Convert it to .safetensors with a tool you trust, or use a "
            f"safetensors version of the model. (Detail: {str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path.name} could not be read as a PyTorch file: {err}") from err


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded pickle: a bare state dict, or one under a `state_dict` key."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors (top-level keys: {sorted(map(str, obj))[:10]})")
    return tensors


def _read_pickle(path: Path, dtype: DTypeChoice, device: torch.device | str) -> dict[str, torch.Tensor]:
    tensors = _unwrap(_torch_load(path), path)
    return {key: _cast(tensor, _target_dtype(dtype, key), device) for key, tensor in tensors.items()}


# --- public API ----------------------------------------------------------------------------------------------


def read_state_dict(
    path: str | os.PathLike,
    dtype: DTypeChoice = None,
    device: torch.device | str = "cpu",
    matrix_dtype: Callable[[str], torch.dtype | None] | None = None,
) -> dict[str, torch.Tensor]:
    """All tensors of a model file, floating ones cast to `dtype` (None keeps the file's) while reading.

    `dtype` may also be a function of the key, to give components different precisions in one pass;
    `matrix_dtype` (safetensors files), a function of the key, overrides it for tensors of 2+ dimensions where it
    gives a dtype (fp8 storage of the matmul weights, cast once while reading instead of after a half copy).
    Each tensor is read and converted on its own, so the peak memory is the result plus one tensor.
    Raises `CheckpointError` for unreadable files, unknown suffixes and pickles that need code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path, dtype, device, matrix_dtype)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path, dtype, device)
    raise CheckpointError(
        f"{path.name}: unknown model file type {suffix!r}; expected one of "
        f"{SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES}"
    )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file; {} for other formats."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return {}
    header, _ = _safetensors_header(path)
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def read_keys(path: str | os.PathLike) -> list[str]:
    """The tensor names of a safetensors file, from its header alone (no tensor read); [] for other formats or a
    missing file (callers then read the file as usual)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return []
    header, _ = _safetensors_header(path)
    return [k for k in header if k != "__metadata__"]


def keep_fp8(path: str | os.PathLike, dtype: torch.dtype) -> Callable[[str], torch.dtype | None]:
    """A per-key dtype choice for `read_state_dict` that keeps a safetensors file's float8 tensors in float8 (the
    networks that take them upcast per layer) and casts the rest to `dtype`."""
    path = Path(path)
    fp8 = set()
    if path.is_file() and path.suffix.lower() in SAFETENSORS_SUFFIXES:
        header, _ = _safetensors_header(path)
        fp8 = {k for k, v in header.items() if k != "__metadata__" and str(v.get("dtype", "")).startswith("F8")}
    return lambda key: None if key in fp8 else dtype


def stored_fp8_dtype(path: str | os.PathLike, prefix: str = "") -> torch.dtype | None:
    """The float8 dtype most of a safetensors file's 2-D+ weights under `prefix` are stored in (from the header
    alone), or None when they are not fp8 (or the file is not safetensors). A UNet-only file's keys may lack the
    prefix: then all keys count."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return None
    header, _ = _safetensors_header(path)
    entries = {k: v for k, v in header.items() if k != "__metadata__" and len(v.get("shape", ())) >= 2}
    if prefix and any(k.startswith(prefix) for k in entries):
        entries = {k: v for k, v in entries.items() if k.startswith(prefix)}
    counts: dict[str, int] = {}
    for v in entries.values():
        counts[str(v.get("dtype", ""))] = counts.get(str(v.get("dtype", "")), 0) + 1
    if not counts:
        return None
    top = max(counts, key=lambda k: counts[k])
    return {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}.get(top)
