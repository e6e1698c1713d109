"""The `Runtime`: the long-lived objects of one Loom process, built once from the Config.

`build_runtime(config)` makes the folders, the node registry (built-ins, then custom node
packs), the model manager, the output cache, the interrupt flag and the
executor, and bundles them so that `main.py` can hand one object to the server or the
headless runner. Nothing here is global: tests build their own runtimes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from config import Config
from executor.cache import OutputCache
from executor.memory import MemoryPolicy, ModelManager
from executor.run import Executor
from folders import Folders
from nodes.context import InterruptFlag
from nodes.registry import NodeRegistry, build_builtin_registry

if TYPE_CHECKING:
    from compat import CompatBinding

log = logging.getLogger(__name__)

GIB = 1 << 30
# Without --cache-ram, cached outputs may use a quarter of the RAM, at most this much.
DEFAULT_CACHE_CAP = 4 * GIB


@dataclass
class Runtime:
    """Everything a running Loom shares: handed to `server.app.serve`, the headless runner, the
    compat layer and the cluster, which read its parts as typed attributes (no fallbacks).

    `config`, `folders`, `registry`, `executor`, `interrupt` and `cache` always exist; `models`
    is the model manager, None only in a runtime assembled without one (`assemble_runtime`, for
    graphs that load no model). The rest is filled while starting: custom-node packs, their web
    folders and server hooks, the compat binding, and under `--ray-address` the worker factory.
    """

    config: Config
    folders: Folders
    registry: NodeRegistry
    executor: Executor
    interrupt: InterruptFlag
    cache: OutputCache
    models: ModelManager | None = None
    server_hooks: list[Callable[[Any], None]] = field(default_factory=list)
    web_directories: dict[str, Path] = field(default_factory=dict)
    custom_packs: list[Any] = field(default_factory=list)
    prestartup_runs: list[Any] = field(default_factory=list)
    compat: CompatBinding | None = None  # None when custom nodes are disabled
    # Set by cluster.enable under --ray-address: (queue, sink) -> what runs the queued prompts.
    worker_factory: Callable[[Any, Any], Any] | None = None


def assemble_runtime(registry: NodeRegistry, folders: Folders, *, config: Config | None = None,
                     executor: Executor | None = None, models: ModelManager | None = None) -> Runtime:
    """A Runtime around given parts (tests, tools): the default Config when none is given, and the
    executor's interrupt flag and cache (a new Executor over `registry` and `folders` when none is given)."""
    if executor is None:
        executor = Executor(registry, folders=folders, models=models, interrupt=InterruptFlag())
    return Runtime(config=config if config is not None else Config(), folders=folders, registry=registry,
                   executor=executor, interrupt=executor.interrupt, cache=executor.cache, models=models)


def _total_ram() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def build_cache(config: Config) -> OutputCache:
    """The output cache the flags ask for: `--cache-none`, `--cache-lru N`, `--cache-ram GB`."""
    if config.cache_none:
        return OutputCache(enabled=False)
    lru = config.cache_lru or None
    if config.cache_ram is not None:
        return OutputCache(ram_budget_bytes=int(config.cache_ram * GIB), lru_size=lru)
    total = _total_ram()
    budget = min(DEFAULT_CACHE_CAP, total // 4) if total else DEFAULT_CACHE_CAP
    return OutputCache(ram_budget_bytes=budget, lru_size=lru)


def build_models(config: Config) -> ModelManager:
    """The one model manager (`executor.memory`): device and memory policy from the flags; sets torch's threads."""
    manager = ModelManager(MemoryPolicy.from_config(config))
    manager.configure_threads()
    return manager


def load_custom_nodes(config: Config, registry: NodeRegistry, runtime: Runtime) -> None:
    """Install the ComfyUI compatibility modules, import the custom node packs
    (`nodes/custom_loader.py`), register their nodes after the built-ins and log import times."""
    from compat import install_compat
    from nodes import custom_loader
    from nodes.prestartup import run_prestartup_scripts

    directories = custom_loader.pack_directories(config, runtime.folders)
    if not config.disable_all_custom_nodes:
        runtime.compat = install_compat(runtime)
    runtime.prestartup_runs = run_prestartup_scripts(directories, disabled=config.disabled_custom_nodes,
                                                     disable_all=config.disable_all_custom_nodes)
    packs = custom_loader.load_packs(directories,
                                     disabled=config.disabled_custom_nodes,
                                     disable_all=config.disable_all_custom_nodes)
    custom_loader.register_packs(registry, packs)
    runtime.custom_packs = packs
    runtime.web_directories.update(custom_loader.web_directories(packs))
    if packs:
        log.info("%s", custom_loader.import_times_report(packs))


def build_runtime(config: Config) -> Runtime:
    """Build the process's shared objects from the Config."""
    folders = Folders(config)
    registry = build_builtin_registry()
    models = build_models(config)
    cache = build_cache(config)
    interrupt = InterruptFlag()
    # The worker announces the end of each prompt after storing its history (ComfyUI's order).
    executor = Executor(registry, folders=folders, models=models, cache=cache, interrupt=interrupt,
                        announce_done=False, node_options={"preview_method": config.preview_method})
    runtime = Runtime(config=config, folders=folders, registry=registry, executor=executor, interrupt=interrupt,
                      cache=cache, models=models)
    load_custom_nodes(config, registry, runtime)
    return runtime
