"""Textual-inversion embeddings: finding the file a prompt's `embedding:NAME` names, and reading its vectors.

A textual inversion (Gal et al. (2022), "An Image is Worth One Word: Personalizing Text-to-Image Generation using
Textual Inversion") is a few learned token-embedding rows. Files come in several layouts, all read here the way
ComfyUI reads them (`comfy/sd1_clip.py`, `load_embed`):

- A1111 `.pt`/`.bin`: a dict with `string_to_param: {"*": N×C tensor}` (plus name/step metadata);
- kohya/diffusers `.safetensors`: `emb_params` (or, for SDXL-style files, `clip_l`/`clip_g`) or a single tensor;
- a list of dicts of tensors; bundled-in-LoRA `bundle_emb.NAME.string_to_param.*`; otherwise the first tensor.

Pickles are read with `torch.load(weights_only=True)`: a file that needs code to unpickle is refused, never run.
Every failure is a `logging` warning and a `None` result; a prompt never crashes on a bad embedding.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

log = logging.getLogger(__name__)

EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")


def _search_directories(directories: list[str]) -> list[Path]:
    """The directories and all their subdirectories (ComfyUI finds `NAME` in any subfolder)."""
    found: list[Path] = []
    for base in directories:
        found.append(Path(base))
        for root, _dirs, _files in os.walk(base, followlinks=True):
            if Path(root) != Path(base):
                found.append(Path(root))
    return found


def find_embedding_file(name: str, directories: list[str]) -> Path | None:
    """The file `name` refers to (exact file name, or name plus a known extension) inside `directories`."""
    for directory in _search_directories(directories):
        base = directory.resolve()
        candidate = (base / name).resolve()
        if not candidate.is_relative_to(base):  # `embedding:../../secret` must not leave the folder
            continue
        if candidate.is_file():
            return candidate
        for ext in EMBEDDING_EXTENSIONS:
            with_ext = candidate.with_name(candidate.name + ext)
            if with_ext.is_file():
                return with_ext
    return None


def list_embeddings(directories: list[str]) -> list[str]:
    """Names of the embedding files in `directories` (relative, without extension), as `GET /embeddings` lists."""
    names: set[str] = set()
    for base in directories:
        root = Path(base)
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.suffix.lower() in EMBEDDING_EXTENSIONS and path.is_file():
                names.add(path.relative_to(root).with_suffix("").as_posix())
    return sorted(names)


def _read_file(path: Path) -> object:
    if path.suffix.lower() == ".safetensors":
        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _bundled(data: dict, suffix: str) -> torch.Tensor | None:
    parts = [v for k, v in data.items() if k.startswith("bundle_emb.") and k.endswith(suffix)]
    return torch.cat(parts, dim=0) if parts else None


def _vectors_of(data: object, embedding_size: int, key: str | None) -> torch.Tensor | None:
    """Pick the embedding tensor out of a loaded file's contents (layouts listed in the module docstring)."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, list):
        rows = [
            t.reshape(-1, t.shape[-1])
            for item in data if isinstance(item, dict)
            for t in item.values() if isinstance(t, torch.Tensor) and t.shape[-1] == embedding_size
        ]
        return torch.cat(rows, dim=0) if rows else None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("string_to_param"), dict):
        return next(iter(data["string_to_param"].values()), None)
    for name in (key, "emb_params"):
        if name is not None and isinstance(data.get(name), torch.Tensor):
            return data[name]
    bundled = _bundled(data, ".string_to_param.*")
    if bundled is None and key is not None:
        bundled = _bundled(data, f".{key}")
    if bundled is not None:
        return bundled
    return next((v for v in data.values() if isinstance(v, torch.Tensor)), None)


def read_embedding(path: Path, embedding_size: int, key: str | None = None) -> torch.Tensor | None:
    """The N×C vectors stored in one embedding file, or None (with a warning) if they can't be used."""
    try:
        data = _read_file(path)
    except pickle.UnpicklingError as exc:
        log.warning("embedding %s is not a plain-tensor file (refused, not executed), ignored: %s", path, exc)
        return None
    except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as exc:
        log.warning("embedding %s could not be read, ignored: %s", path, exc)
        return None
    vectors = _vectors_of(data, embedding_size, key)
    if vectors is None:
        log.warning("embedding %s holds no embedding tensor, ignored", path)
        return None
    vectors = vectors.detach().reshape(-1, vectors.shape[-1]) if vectors.ndim != 2 else vectors.detach()
    if vectors.shape[-1] != embedding_size:
        log.warning(
            "embedding %s has %d-dim vectors but this text encoder needs %d (wrong model family?), ignored",
            path, vectors.shape[-1], embedding_size,
        )
        return None
    return vectors


def load_embedding(
    name: str, directories: list[str], embedding_size: int, key: str | None = None
) -> torch.Tensor | None:
    """The N×C vectors of embedding `name` found in `directories`, or None if absent or unusable (warned)."""
    path = find_embedding_file(name, directories)
    if path is None:
        return None
    return read_embedding(path, embedding_size, key)
