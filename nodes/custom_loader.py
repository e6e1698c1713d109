"""The custom node loader: finds node packs in folders, imports each into its own namespace,
and returns what each declares — it registers nothing itself and keeps nothing global.

A pack is a package (a folder with `__init__.py`) or a single `.py` module in one of the
custom-node folders. Each is imported as `loom_custom_nodes.<name>` (its folder as a package,
so relative imports and sibling modules work) and may declare nodes in any of three styles:

- Loom's typed API: `NODES = [NodeSubclass, ...]` (`nodes.spec.Node`);
- ComfyUI's classic API: `NODE_CLASS_MAPPINGS` (classic classes, or Loom/schema classes),
  `NODE_DISPLAY_NAME_MAPPINGS`;
- ComfyUI's schema API: `comfy_entrypoint()` returning a `ComfyExtension` (`nodes/comfy_api/`).

`WEB_DIRECTORY` (relative to the pack) names a folder of editor scripts. A pack that fails to
import is returned with state "failed" and its traceback; a node whose declaration is malformed
is left out and its error kept in `node_errors`. A failure on a ComfyUI name the compatibility layer lacks
(a module, or a name in one) is also named in `missing` and in a last line of the error. ComfyUI packs import
`folder_paths`, `comfy.*` and `server`: `compat.install_compat(runtime)` must run before `load_packs` for those.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from nodes.classic import adapt_classic, is_classic
from nodes.comfy_api.adapt import adapt_schema_node, is_schema_node
from nodes.comfy_api.extension import node_classes
from nodes.spec import Node, NodeSpec, SpecError

if TYPE_CHECKING:
    from config import Config
    from folders import Folders

log = logging.getLogger(__name__)

NAMESPACE = "loom_custom_nodes"
State = Literal["ok", "failed", "disabled"]
# Modules of ComfyUI itself that Loom's compatibility layer does not provide (for the hint).
_COMFY_MODULES = ("comfy", "comfy_extras", "comfy_execution", "comfy_api", "execution", "latent_preview",
                  "folder_paths", "node_helpers", "server")


@dataclass
class LoadedPack:
    """One pack: where it is, whether it loaded, how long that took, and what it declares.

    `nodes` maps class types to the declared classes, `specs` holds their declarations
    (registered by `register_packs`), `display_names` the NODE_DISPLAY_NAME_MAPPINGS,
    `collisions` the class types another pack (or a built-in) had already declared.
    """

    name: str
    path: Path
    state: State = "ok"
    seconds: float = 0.0
    error: str | None = None
    missing: str | None = None  # the ComfyUI name the import failed on (see `missed_name`)
    module_name: str | None = None
    nodes: dict[str, Any] = field(default_factory=dict)
    display_names: dict[str, str] = field(default_factory=dict)
    specs: list[NodeSpec] = field(default_factory=list)
    node_errors: dict[str, str] = field(default_factory=dict)
    web_directory: Path | None = None
    api_styles: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The pack as `GET /loom/custom_nodes` lists it."""
        return {"name": self.name, "path": str(self.path), "state": self.state,
                "import_seconds": round(self.seconds, 4), "error": self.error, "missing": self.missing,
                "api": list(self.api_styles),
                "nodes": list(self.registered) or [s.class_type for s in self.specs
                                                   if s.class_type not in self.collisions],
                "node_errors": dict(self.node_errors), "collisions": list(self.collisions),
                "web_directory": f"/extensions/{self.name}" if self.web_directory else None}


# ---- finding packs ----------------------------------------------------------------------------

def pack_directories(config: Config, folders: Folders) -> list[Path]:
    """The folders searched for packs: the `custom_nodes` folder kind (base folder and
    extra_model_paths additions), then each `--custom-nodes-directory`; duplicates dropped."""
    found = [Path(p) for p in folders.folder_paths("custom_nodes")]
    found += [Path(p) for p in config.custom_nodes_directories]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def find_packs(directories: Iterable[Path]) -> list[tuple[str, Path]]:
    """(name, path) of every pack in `directories`, sorted by name within each folder.

    As in ComfyUI: `.py` files and folders with `__init__.py`; `__pycache__`, hidden entries
    and names ending in `.disabled` are skipped.
    """
    packs: list[tuple[str, Path]] = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            if entry.name.startswith((".", "__")) or entry.name.endswith(".disabled"):
                continue
            if entry.is_dir() and (entry / "__init__.py").is_file():
                packs.append((entry.name, entry))
            elif entry.is_file() and entry.suffix == ".py":
                packs.append((entry.stem, entry))
    return packs


# ---- importing --------------------------------------------------------------------------------

def _namespace() -> types.ModuleType:
    module = sys.modules.get(NAMESPACE)
    if module is None:
        module = types.ModuleType(NAMESPACE, "The packages of Loom's loaded custom node packs.")
        module.__path__ = []
        sys.modules[NAMESPACE] = module
    return module


def _module_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name)
    if not base or base[0].isdigit():
        base = "_" + base
    candidate, index = base, 1
    while candidate in taken:
        index += 1
        candidate = f"{base}_{index}"
    taken.add(candidate)
    return f"{NAMESPACE}.{candidate}"


def _forget(module_name: str) -> None:
    """Drop `module_name` and its submodules from sys.modules (a fresh import next time)."""
    if module_name not in sys.modules:
        return  # submodules are never left without their package (a failed import forgets both)
    for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
        del sys.modules[key]


def import_pack(module_name: str, path: Path) -> types.ModuleType:
    """Import the pack at `path` as `module_name`; a folder becomes a package."""
    _namespace()
    _forget(module_name)
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(module_name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget(module_name)
        raise
    return module


_FROM_IMPORT = re.compile(r"cannot import name '([^']+)' from '([^']+)'")
_ATTRIBUTE = re.compile(r"module '([^']+)' has no attribute '([^']+)'")


def missed_name(error: BaseException) -> str | None:
    """The ComfyUI name a pack's import failed on, when it is one of ComfyUI's modules or a name in one:
    a missing module (`comfy.sd`), a name imported from one (`comfy.samplers.Foo`), or an attribute read off one
    (`comfy.model_management.bar`)."""
    if isinstance(error, ModuleNotFoundError):
        name = getattr(error, "name", None) or ""
    elif isinstance(error, ImportError) and (found := _FROM_IMPORT.search(str(error))):
        name = f"{found.group(2)}.{found.group(1)}"
    elif isinstance(error, AttributeError) and (found := _ATTRIBUTE.search(str(error))):
        name = f"{found.group(1)}.{found.group(2)}"
    else:
        return None
    return name if name and name.split(".")[0] in _COMFY_MODULES else None


def _hint(error: BaseException) -> str:
    """A line for import errors on ComfyUI names that Loom does not provide."""
    missing = missed_name(error)
    if missing is None:
        return ""
    kind = "module" if isinstance(error, ModuleNotFoundError) else "name"
    return (f"\nLoom's ComfyUI compatibility layer does not provide the {kind} '{missing}' "
            "(see docs/custom-nodes.md for what it covers).")


# ---- collecting nodes -------------------------------------------------------------------------

def _spec_for(cls: Any, class_type: str | None, pack: LoadedPack, display: str | None) -> NodeSpec:
    """The declaration of one node class of any style; `class_type` None takes the class's own."""
    module = f"custom_nodes.{pack.name}"
    if is_schema_node(cls):
        spec = adapt_schema_node(cls, python_module=module)
        style = "schema"
    elif isinstance(cls, type) and issubclass(cls, Node):
        spec = cls.spec(python_module=module)
        style = "loom"
    elif is_classic(cls):
        if class_type is None:
            raise SpecError(f"classic node class {cls.__name__} must be listed in NODE_CLASS_MAPPINGS")
        return _classic(cls, class_type, pack, display, module)
    else:
        raise SpecError(f"{cls!r} is not a node class (Loom Node, ComfyUI classic class or io.ComfyNode)")
    if style not in pack.api_styles:
        pack.api_styles.append(style)
    replace: dict[str, Any] = {}
    if class_type is not None and class_type != spec.class_type:
        replace["class_type"] = class_type
    if display is not None:
        replace["display_name"] = display
    if replace:
        spec = dataclasses.replace(spec, **replace)
    return spec


def _classic(cls: type, class_type: str, pack: LoadedPack, display: str | None, module: str) -> NodeSpec:
    if "classic" not in pack.api_styles:
        pack.api_styles.append("classic")
    return adapt_classic(cls, class_type, display_name=display, python_module=module)


def _add(pack: LoadedPack, cls: Any, class_type: str | None, label: str) -> None:
    display = pack.display_names.get(class_type) if class_type is not None else None
    try:
        spec = _spec_for(cls, class_type, pack, display)
    except SpecError as error:
        pack.node_errors[class_type or label] = str(error)
        log.warning("custom node %s of pack %s left out: %s", class_type or label, pack.name, error)
        return
    pack.nodes[spec.class_type] = cls
    pack.specs.append(spec)


def collect_nodes(pack: LoadedPack, module: types.ModuleType) -> None:
    """Fill `pack` from the module's NODE_CLASS_MAPPINGS, NODES, comfy_entrypoint and WEB_DIRECTORY."""
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None) or {}
    names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    pack.display_names = {str(k): str(v) for k, v in dict(names).items()}
    for class_type, cls in dict(mappings).items():
        _add(pack, cls, str(class_type), str(class_type))
    for cls in list(getattr(module, "NODES", None) or ()):
        _add(pack, cls, None, getattr(cls, "__name__", repr(cls)))
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if callable(entrypoint):
        for cls in node_classes(entrypoint):
            _add(pack, cls, None, getattr(cls, "__name__", repr(cls)))
    web = getattr(module, "WEB_DIRECTORY", None)
    if isinstance(web, str) and web:
        root = pack.path if pack.path.is_dir() else pack.path.parent
        folder = (root / web).resolve()
        if folder.is_dir():
            pack.web_directory = folder
        else:
            log.warning("pack %s: WEB_DIRECTORY %s is not a folder", pack.name, folder)


def load_pack(name: str, path: Path, module_name: str) -> LoadedPack:
    """Import one pack and collect its nodes; failures are caught and reported in the result."""
    pack = LoadedPack(name=name, path=path, module_name=module_name)
    started = time.perf_counter()
    try:
        module = import_pack(module_name, path)
        collect_nodes(pack, module)
    except (Exception, SystemExit) as error:  # third-party code: any failure is this pack's alone
        pack.state = "failed"
        pack.error = traceback.format_exc() + _hint(error)
        pack.missing = missed_name(error)
        pack.nodes, pack.specs = {}, []
        log.warning("cannot import custom node pack %s (%s):\n%s", name, path, pack.error)
    pack.seconds = time.perf_counter() - started
    return pack


def load_packs(directories: Iterable[Path], *, disabled: Sequence[str] = (), disable_all: bool = False) -> list[LoadedPack]:
    """Import every pack in `directories` (in order); disabled ones are listed, not imported.

    `disabled` holds pack names (a folder name, or a module file's name with or without `.py`).
    A second pack of an already-seen name is reported as failed rather than imported.
    """
    off = {d.removesuffix(".py") for d in disabled}
    taken: set[str] = set()
    seen: dict[str, Path] = {}
    packs: list[LoadedPack] = []
    for name, path in find_packs(directories):
        if disable_all or name in off:
            packs.append(LoadedPack(name=name, path=path, state="disabled"))
        elif name in seen:
            packs.append(LoadedPack(name=name, path=path, state="failed",
                                    error=f"a pack named {name} was already loaded from {seen[name]}"))
        else:
            seen[name] = path
            packs.append(load_pack(name, path, _module_name(name, taken)))
    return packs


# ---- registering and reporting ----------------------------------------------------------------

def register_packs(registry: Any, packs: Iterable[LoadedPack]) -> None:
    """Register the loaded packs' nodes (after the built-ins, so a built-in keeps its name);
    each pack records what it registered and which of its class types collided."""
    for pack in packs:
        if pack.state != "ok":
            continue
        for spec in pack.specs:
            if registry.register(spec, pack=pack.name) is None:  # the registry logs the collision
                pack.collisions.append(spec.class_type)
            else:
                pack.registered.append(spec.class_type)


def web_directories(packs: Iterable[LoadedPack]) -> dict[str, Path]:
    """{pack name: web folder} of the loaded packs that declare one (served under /extensions/)."""
    return {p.name: p.web_directory for p in packs if p.state == "ok" and p.web_directory is not None}


def import_times_report(packs: Sequence[LoadedPack]) -> str:
    """The start-up summary (ComfyUI's "Import times for custom nodes"), slowest first."""
    if not packs:
        return "No custom node packs found."
    lines = ["Import times for custom nodes:"]
    for pack in sorted(packs, key=lambda p: -p.seconds):
        note = {"failed": " (IMPORT FAILED)", "disabled": " (DISABLED)"}.get(pack.state, "")
        if pack.missing:
            note = f" (IMPORT FAILED: Loom lacks {pack.missing})"
        extra = f", {len(pack.collisions)} name collision(s)" if pack.collisions else ""
        lines.append(f"  {pack.seconds:7.3f} seconds{note}: {pack.path}{extra}")
    return "\n".join(lines)
