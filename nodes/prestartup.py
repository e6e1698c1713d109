"""Packs' `prestartup_script.py`: run once, before any pack is imported and before the server starts, as ComfyUI
does (packs use it to patch the environment, fetch nothing here, or register paths).

Each pack folder's script runs in a module of its own; a script that fails is logged with its traceback and the
pack still loads. The time each took is logged, as ComfyUI prints it.
"""
from __future__ import annotations

import importlib.util
import logging
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
SCRIPT = "prestartup_script.py"


@dataclass
class PrestartupRun:
    """One pack's prestartup script: where, how long, and the error if it failed."""

    pack: str
    path: Path
    seconds: float
    error: str | None = None


def _run(pack: str, path: Path) -> PrestartupRun:
    started = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location(f"loom_prestartup_{pack}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (Exception, SystemExit):  # third-party code: its failure is its pack's alone
        error = traceback.format_exc()
        log.warning("prestartup script of custom node pack %s failed:\n%s", pack, error)
        return PrestartupRun(pack, path, time.perf_counter() - started, error)
    return PrestartupRun(pack, path, time.perf_counter() - started)


def run_prestartup_scripts(directories: Iterable[Path], *, disabled: Sequence[str] = (),
                           disable_all: bool = False) -> list[PrestartupRun]:
    """Run the prestartup script of every enabled pack folder in `directories` (sorted by name)."""
    if disable_all:
        return []
    off = {d.removesuffix(".py") for d in disabled}
    runs: list[PrestartupRun] = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            script = entry / SCRIPT
            if entry.name.startswith((".", "__")) or entry.name.endswith(".disabled") or entry.name in off:
                continue
            if entry.is_dir() and script.is_file():
                runs.append(_run(entry.name, script))
    if runs:
        lines = [f"{r.seconds:8.3f} s{' (PRESTARTUP FAILED)' if r.error else ''}: {r.path.parent}" for r in runs]
        log.info("Prestartup times for custom node packs:\n%s", "\n".join(lines))
    return runs
