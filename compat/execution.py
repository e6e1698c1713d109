"""ComfyUI's `execution` module for custom node packs: the names packs import from it, as read-only views of
Loom's executor state (loaded by `compat.install_compat` as the module `execution`).

- `ExecutionResult`, `DuplicateNodeError`, `MAXIMUM_HISTORY_SIZE`, `SENSITIVE_EXTRA_DATA_KEYS`;
- `PromptQueue`: the class of `PromptServer.instance.prompt_queue` (`compat/prompt_queue.py`);
- `validate_prompt(prompt_id, prompt, partial_execution_list=None)` -> `(valid, error, outputs, node_errors)`
  with Loom's validator and this runtime's registry (the one-argument form `validate_prompt(prompt)` of older
  ComfyUI also works);
- `get_input_data(inputs, class_def, unique_id, outputs=None, dynprompt=None, extra_data={})` ->
  `(input_data_all, missing_keys, hidden_inputs)`: each input as a list of values (ComfyUI's list mapping), links
  read from `outputs` (node id -> that node's output lists), hidden inputs filled from the prompt.

Running prompts (ComfyUI's PromptExecutor, IsChangedCache) is the executor's and is not exposed.
"""
from __future__ import annotations

import enum
from typing import Any, Mapping

from compat.prompt_queue import ComfyPromptQueue as PromptQueue
from executor.queue import SENSITIVE_EXTRA_KEYS
from executor.validate import validate_prompt as _validate_prompt

BINDING: Any  # set by compat.install_compat before this module runs

__all__ = ["DuplicateNodeError", "ExecutionResult", "MAXIMUM_HISTORY_SIZE", "PromptQueue",
           "SENSITIVE_EXTRA_DATA_KEYS", "get_input_data", "validate_prompt"]
MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = tuple(sorted(SENSITIVE_EXTRA_KEYS))


class ExecutionResult(enum.Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


class DuplicateNodeError(Exception):
    """A node id used twice in a graph expansion."""


def validate_prompt(prompt_id: Any, prompt: Mapping[str, Any] | None = None,
                    partial_execution_list: list[str] | None = None) -> tuple[bool, Any, list[str], dict[str, Any]]:
    """ComfyUI's validate_prompt over Loom's validator: `(valid, error, output node ids, node_errors)`."""
    if prompt is None and isinstance(prompt_id, Mapping):
        prompt = prompt_id  # ComfyUI before 0.3.4x: validate_prompt(prompt)
    registry = getattr(BINDING, "registry", None)
    if registry is None:
        raise RuntimeError("execution.validate_prompt needs a runtime with a node registry")
    result = _validate_prompt(dict(prompt or {}), registry, BINDING.current_folders(), partial_execution_list)
    return result.ok, result.error, list(result.outputs), result.node_errors


def _hidden_value(kind: str, unique_id: str, dynprompt: Any, extra_data: Mapping[str, Any]) -> Any:
    if kind == "PROMPT":
        return dynprompt.get_original_prompt() if dynprompt is not None else None
    if kind == "DYNPROMPT":
        return dynprompt
    if kind == "EXTRA_PNGINFO":
        return extra_data.get("extra_pnginfo")
    if kind == "UNIQUE_ID":
        return unique_id
    if kind == "AUTH_TOKEN_COMFY_ORG":
        return extra_data.get("auth_token_comfy_org")
    if kind == "API_KEY_COMFY_ORG":
        return extra_data.get("api_key_comfy_org")
    return None


def _is_link(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], int)


def get_input_data(inputs: Mapping[str, Any], class_def: Any, unique_id: str, outputs: Any = None,
                   dynprompt: Any = None, extra_data: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, list[Any]], dict[str, bool], dict[str, Any]]:
    """A node's inputs as ComfyUI's executor hands them to `_map_node_over_list` (see the module docstring)."""
    extra_data = extra_data or {}
    declared = class_def.INPUT_TYPES()
    valid = {name for section in ("required", "optional") for name in (declared.get(section) or {})}
    data: dict[str, list[Any]] = {}
    missing: dict[str, bool] = {}
    for name, value in inputs.items():
        if _is_link(value):
            if name not in valid:
                continue
            source = outputs.get(value[0]) if outputs is not None else None
            if source is None:
                missing[name] = True
                continue
            data[name] = source[value[1]]
        elif name in valid:
            data[name] = [value]
    hidden: dict[str, Any] = {}
    for name, kind in (declared.get("hidden") or {}).items():
        kind = kind[0] if isinstance(kind, (list, tuple)) else kind
        value = _hidden_value(str(kind), unique_id, dynprompt, extra_data)
        data[name] = [value]
        hidden[str(kind)] = value
    return data, missing, hidden
