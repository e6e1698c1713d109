"""Shared set-up of the custom-node tests: the test packs, a real runtime that loads them, and a
helper that validates and runs an API prompt through the runtime's executor, collecting events."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from config import parse_args
from executor.validate import validate_prompt
from folders import Folders
from nodes.registry import build_builtin_registry
from runtime import Runtime, assemble_runtime, build_runtime

HERE = Path(__file__).resolve().parent
PACKS = HERE / "packs"
REPO = HERE.parents[1]
EXAMPLE_PACKS = REPO / "custom_nodes"


def make_runtime(base: Path, *flags: str, packs: Path | None = PACKS) -> Runtime:
    """`runtime.build_runtime` on folders under `base`, loading the packs in `packs` too."""
    args = ["--base-directory", str(base), "--cpu", *flags]
    if packs is not None:
        args += ["--custom-nodes-directory", str(packs)]
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return build_runtime(parse_args(args, {}))


def bare_runtime(base: Path) -> Runtime:
    """A runtime of the built-in nodes without custom packs or a model manager (what
    `compat.install_compat` reads), without building a whole one."""
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return assemble_runtime(build_builtin_registry(), Folders.for_base(base))


def run_prompt(runtime: Runtime, prompt: dict[str, Any], prompt_id: str = "p1",
               extra_data: dict[str, Any] | None = None) -> tuple[Any, list[Any]]:
    """Validate and execute `prompt`; returns (ExecutionResult, events)."""
    checked = validate_prompt(prompt, runtime.registry, runtime.folders)
    assert checked.ok, checked.response()
    events: list[Any] = []
    result = runtime.executor.execute(checked.prompt, prompt_id, extra_data=extra_data or {},
                                      outputs_to_execute=checked.outputs, emit=events.append)
    return result, events


def event_types(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if getattr(e, "type", None) == kind]
