"""DiffusersLoader (ComfyUI's `nodes.py`, deprecated there but still in old workflows): MODEL, CLIP and VAE from a
diffusers model folder under models/diffusers.

`model_path` lists every folder (relative, "/"-separated) below a diffusers search path that holds a
`model_index.json`, as ComfyUI walks them ("." for a search path that is itself such a folder). The parts are
converted to the single-file layout (`diffusion/files/diffusers_convert.py`) and assembled like a checkpoint, through the
memory manager's file cache and precisions as CheckpointLoaderSimple is.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from diffusion.files.assemble import clip_socket, load_diffusers_modules, model_socket, vae_socket
from diffusion.patcher import ModelHandle
from diffusion.text.text_encoders import CLIP
from diffusion.networks.vae import VAE
from folders import resolve_inside
from nodes.loaders import _folders, cached_parts, embedding_directories, node_context, precision
from nodes.spec import Combo, FileIndex, FileList, Node, Output

INDEX_FILE = "model_index.json"


@dataclass(frozen=True)
class DiffusersFolders(FileList):
    """The combo choices: the folders of `kind` that hold a model_index.json."""

    kind: str = "diffusers"

    def resolve(self, files: FileIndex | None) -> list[str]:
        if files is None:
            return []
        names = [n for n in files.list_files(self.kind) if posixpath.basename(n) == INDEX_FILE]
        return sorted({posixpath.dirname(n) or "." for n in names})


def diffusers_folder(model_path: str) -> Path:
    """The first diffusers search path's folder `model_path` that has a model_index.json."""
    folders = _folders(node_context())
    for root in folders.folder_paths("diffusers"):
        candidate = resolve_inside(root, model_path) if model_path != "." else Path(root)
        if (candidate / INDEX_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"DiffusersLoader: no diffusers folder {model_path!r} (with a {INDEX_FILE}) in "
                            f"models/diffusers")


class DiffusersLoader(Node):
    """Loads the UNet, VAE and text encoder(s) of a diffusers model folder."""

    CATEGORY = "advanced/loaders/deprecated"
    INPUTS = (Combo("model_path", DiffusersFolders("diffusers")),)
    OUTPUTS = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    def execute(self, model_path: str) -> tuple[ModelHandle, CLIP | None, VAE | None]:
        ctx = node_context()
        folder = diffusers_folder(model_path)
        chosen = precision(ctx)
        modules = cached_parts(ctx, folder, ("unet", "clip", "vae"), lambda: load_diffusers_modules(folder, chosen),
                               "diffusers:" + chosen.key())
        clip = None
        if modules.get("clip") is not None:
            clip = clip_socket(modules["clip"], model_path, embedding_directories(_folders(ctx)))
        vae = vae_socket(modules["vae"], model_path) if modules.get("vae") is not None else None
        return model_socket(modules["unet"], model_path), clip, vae


NODES: list[type] = [DiffusersLoader]
