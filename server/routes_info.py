"""Read-only information routes: /object_info, /object_info/{class}, /embeddings, /models,
/models/{folder}, /system_stats, /extensions, /features, /i18n, /global_subgraphs,
/workflow_templates.

Everything is derived from the runtime's registry, folders and model manager at request time
(files added to a folder appear without a restart). torch is only imported when
/system_stats is first asked for, so start-up stays fast.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.http import json_response
from server.keys import EXTENSION_DIRS, RUNTIME, SETTINGS, WEB_ROOT, WORKER

if TYPE_CHECKING:
    from runtime import Runtime

LOOM_VERSION = "0.1.0"
FEATURES: dict[str, Any] = {"supports_preview_metadata": False}


async def get_object_info(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return json_response(runtime.registry.object_info(runtime.folders))


async def get_object_info_node(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    name = request.match_info["node_class"]
    spec = runtime.registry.get(name)
    if spec is None:
        return json_response({})
    return json_response({name: spec.object_info(runtime.folders)})


def _list(runtime: Runtime, kind: str) -> list[str] | None:
    folders = runtime.folders
    if not folders.has_kind(kind):
        return None
    try:
        return folders.list_files(kind)
    except (KeyError, ValueError, FileNotFoundError):
        return None


async def get_embeddings(request: web.Request) -> web.Response:
    """Embedding names without their suffix (what `embedding:NAME` in a prompt refers to)."""
    names = _list(request.app[RUNTIME], "embeddings") or []
    return json_response([os.path.splitext(n)[0] for n in names])


async def get_models(request: web.Request) -> web.Response:
    return json_response(list(request.app[RUNTIME].folders.kinds()))


async def get_models_folder(request: web.Request) -> web.Response:
    names = _list(request.app[RUNTIME], request.match_info["folder"])
    if names is None:
        return json_response({"error": {"type": "not_found", "message": "unknown model folder"}}, status=404)
    return json_response(names)


def _ram() -> tuple[int, int]:
    """Total and available RAM in bytes, from /proc/meminfo (0, 0 where it cannot be read)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(fields["MemTotal"].split()[0]) * 1024, int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def _devices(models: Any) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    if models is not None and hasattr(models, "stats"):
        stats = dict(models.stats())
        ram = (stats.pop("ram_total", None), stats.pop("ram_free", None))
        keys = ("name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free")
        device = {k: stats.get(k) for k in keys}
        return [device], ram if None not in ram else None
    import torch
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return [{"name": torch.cuda.get_device_name(0), "type": "cuda", "index": 0, "vram_total": total,
                 "vram_free": free, "torch_vram_total": torch.cuda.memory_reserved(0),
                 "torch_vram_free": torch.cuda.memory_reserved(0) - torch.cuda.memory_allocated(0)}], None
    total, free = _ram()
    return [{"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
             "torch_vram_total": 0, "torch_vram_free": 0}], None


async def get_system_stats(request: web.Request) -> web.Response:
    """RAM, device memory, versions and the command line (Config.argv, secrets already redacted),
    in ComfyUI's shape."""
    devices, ram = _devices(request.app[RUNTIME].models)
    ram_total, ram_free = ram or _ram()
    import torch
    system = {"os": sys.platform if os.name != "nt" else "nt", "ram_total": ram_total, "ram_free": ram_free,
              "comfyui_version": LOOM_VERSION, "loom_version": LOOM_VERSION,
              "required_frontend_version": None, "installed_templates_version": None,
              "python_version": sys.version, "pytorch_version": torch.__version__, "embedded_python": False,
              "argv": list(request.app[RUNTIME].config.argv), "platform": platform.platform()}
    stats: dict[str, Any] = {"system": system, "devices": devices}
    cluster_info = getattr(request.app[WORKER], "cluster_info", None)
    if cluster_info is not None:  # --ray-address: the workers (GET /loom/cluster's list)
        stats["workers"] = cluster_info()["workers"]
    return json_response(stats)


async def get_extensions(request: web.Request) -> web.Response:
    """The front-end's own `extensions/**/*.js` (ComfyUI's frontend ships its core extensions
    there) and the JavaScript files of custom node packs' web directories, as URLs."""
    files: list[str] = []
    web_root = request.app.get(WEB_ROOT)
    if web_root is not None and (Path(web_root) / "extensions").is_dir():
        own = sorted((Path(web_root) / "extensions").rglob("*.js"))
        files += [f"/{path.relative_to(web_root).as_posix()}" for path in own]
    for name, directory in sorted(request.app[EXTENSION_DIRS].items()):
        root = Path(directory)
        for path in sorted(root.rglob("*.js")):
            files.append(f"/extensions/{name}/{path.relative_to(root).as_posix()}")
    return json_response(files)


async def get_features(request: web.Request) -> web.Response:
    return json_response({**FEATURES, "max_upload_size": request.app[SETTINGS].max_upload_bytes})


async def get_i18n(request: web.Request) -> web.Response:
    """Translations of custom node packs (none yet: the frontend falls back to its own)."""
    return json_response({})


async def get_global_subgraphs(request: web.Request) -> web.Response:
    """Subgraph blueprints shipped by node packs (none): ComfyUI's frontend asks on load."""
    return json_response({})


async def get_workflow_templates(request: web.Request) -> web.Response:
    """Example workflows shipped by node packs, by pack (none yet)."""
    return json_response({})


ROUTES = [
    ("GET", "/object_info", get_object_info),
    ("GET", "/object_info/{node_class}", get_object_info_node),
    ("GET", "/embeddings", get_embeddings),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_models_folder),
    ("GET", "/system_stats", get_system_stats),
    ("GET", "/extensions", get_extensions),
    ("GET", "/features", get_features),
    ("GET", "/i18n", get_i18n),
    ("GET", "/global_subgraphs", get_global_subgraphs),
    ("GET", "/workflow_templates", get_workflow_templates),
]
