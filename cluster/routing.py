"""Which pending prompt an idle worker takes: model affinity first, then the least-loaded worker.

Pure and Ray-free, so the policy is tested on its own. A prompt's models are the model files
named by its literal inputs (loader nodes' `ckpt_name`, `lora_name`, `vae_name`, ... and any
custom loader whose input holds a model file name), read off the file extension so custom
loaders count too. The policy, for the pending prompts in queue order:

1. A prompt whose models an idle worker already holds goes to that worker (the least loaded of
   them, when several do).
2. A prompt whose models no worker holds (or that names none) goes to the least-loaded idle
   worker: fewest models held, then fewest prompts run.
3. A prompt whose models only busy workers hold waits for them, for at most `affinity_wait_s`
   from the first time it was passed over; then an idle worker takes it (loading a model costs
   seconds, an idle worker while a backlog waits costs more).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".pt2", ".onnx")
DEFAULT_AFFINITY_WAIT_S = 10.0


def prompt_models(prompt: Mapping[str, Any]) -> frozenset[str]:
    """The model file names a prompt's literal inputs refer to."""
    names: set[str] = set()
    for node in prompt.values():
        inputs = node.get("inputs", {}) if isinstance(node, Mapping) else {}
        for value in inputs.values() if isinstance(inputs, Mapping) else ():
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS):
                names.add(value)
    return frozenset(names)


@dataclass(frozen=True)
class WorkerView:
    """What routing needs to know of one worker."""

    id: str
    idle: bool
    models: frozenset[str] = frozenset()
    prompts_run: int = 0

    def load(self) -> tuple[int, int]:
        return len(self.models), self.prompts_run


@dataclass(frozen=True)
class PendingView:
    """What routing needs to know of one pending prompt (in queue order)."""

    prompt_id: str
    models: frozenset[str] = frozenset()


@dataclass
class Router:
    """Applies the policy above; remembers since when each prompt has waited for a busy worker."""

    affinity_wait_s: float = DEFAULT_AFFINITY_WAIT_S
    passed_over: dict[str, float] = field(default_factory=dict)

    def choose(self, workers: Sequence[WorkerView], pending: Iterable[PendingView],
               now: float) -> tuple[str, str] | None:
        """(worker id, prompt id) of the next placement, or None when nothing should start now."""
        idle = [w for w in workers if w.idle]
        if not idle:
            return None
        busy_models = [w.models for w in workers if not w.idle]
        seen: set[str] = set()
        for item in pending:
            seen.add(item.prompt_id)
            placed = self._place(item, idle, busy_models, now)
            if placed is not None:
                self.passed_over.pop(item.prompt_id, None)
                return placed, item.prompt_id
        for stale in set(self.passed_over) - seen:
            del self.passed_over[stale]
        return None

    def _place(self, item: PendingView, idle: list[WorkerView], busy_models: list[frozenset[str]],
               now: float) -> str | None:
        if item.models:
            holders = [w for w in idle if item.models <= w.models]
            if holders:
                return min(holders, key=WorkerView.load).id
            if any(item.models <= held for held in busy_models):
                since = self.passed_over.setdefault(item.prompt_id, now)
                if now - since < self.affinity_wait_s:
                    return None
        return min(idle, key=WorkerView.load).id
