"""Training-free step caching (EasyCache, LazyCache): a `model_function_wrapper` that skips model calls.

While sampling is between `start_sigma` and `end_sigma`, each call estimates how much the model's output would
change from the relative change of its input times the last measured output/input change rate; while the running
sum of those estimates stays below `reuse_threshold` the call is skipped and the last output−input difference is
reused (`x + cached_diff`). A computed step resets the sum and re-measures the rate. LazyCache only estimates from
the input change (no rate), which skips more eagerly. State lives in the wrapper per sampling run: a new run is
seen when the timestep rises again (or the batch layout changes) and everything is reset.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

log = logging.getLogger("loom.step_cache")


def _relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """Mean absolute change of `new` against `old`, relative to the mean magnitude of `old`."""
    return float((new - old).abs().mean() / old.abs().mean().clamp_min(1e-8))


@dataclass
class _RunState:
    """What one sampling run has seen so far."""
    key: tuple = ()
    last_sigma: float = float("inf")
    prev_input: torch.Tensor | None = None
    prev_output: torch.Tensor | None = None
    cached_diff: torch.Tensor | None = None
    rate: float | None = None
    accumulated: float = 0.0
    computed: int = 0
    skipped: int = 0
    skipped_sigmas: list[float] | None = field(default_factory=list)


class StepCache:
    """The wrapper the EasyCache/LazyCache nodes install; `runs` keeps (computed, skipped) of finished runs."""

    def __init__(self, reuse_threshold: float, start_sigma: float, end_sigma: float, verbose: bool = False,
                 lazy: bool = False, name: str = "EasyCache") -> None:
        self.reuse_threshold = float(reuse_threshold)
        self.start_sigma, self.end_sigma = float(start_sigma), float(end_sigma)
        self.verbose, self.lazy, self.name = verbose, lazy, name
        self.states: dict[tuple, _RunState] = {}
        self.state = _RunState()
        self.runs: list[tuple[int, int]] = []

    def _begin_run_if_new(self, key: tuple, sigma: float) -> None:
        state = self.states.get(key)
        if state is None or sigma >= state.last_sigma:
            if state is not None:
                self.state = state
                self.finish_run()
            state = self.states[key] = _RunState(key=key)
        self.state = state
        state.last_sigma = sigma

    def finish_run(self) -> None:
        """Record and log the current run's counts (called when the next run starts)."""
        s = self.state
        if (s.computed or s.skipped) and s.skipped_sigmas is not None:
            self.runs.append((s.computed, s.skipped))
            log.info("%s: skipped %d of %d model calls", self.name, s.skipped, s.computed + s.skipped)
            s.skipped_sigmas = None  # logged once

    def in_window(self, sigma: float) -> bool:
        """Whether caching may act at `sigma` (start_percent..end_percent of the schedule)."""
        return self.end_sigma <= sigma <= self.start_sigma

    def _should_skip(self, x: torch.Tensor, sigma: float) -> bool:
        s = self.state
        if self.reuse_threshold <= 0 or not self.in_window(sigma) or s.cached_diff is None:
            return False
        if s.prev_input is None or s.cached_diff.shape != x.shape:
            return False
        change = _relative_change(x, s.prev_input)
        estimate = change if self.lazy or s.rate is None else s.rate * change
        if self.lazy is False and s.rate is None:
            return False
        s.accumulated += estimate
        return s.accumulated < self.reuse_threshold

    def __call__(self, apply_model: Callable[..., torch.Tensor], args: dict[str, Any]) -> torch.Tensor:
        output = self._step(apply_model, args)
        sigmas = args["c"].get("transformer_options", {}).get("sample_sigmas")
        if sigmas is not None:
            positive = sigmas[sigmas > 0]
            if positive.numel() and float(args["timestep"].flatten()[0]) <= float(positive.min()) * (1 + 1e-6):
                self.finish_run()  # the run's last model call: log its counts now
        return output

    def _step(self, apply_model: Callable[..., torch.Tensor], args: dict[str, Any]) -> torch.Tensor:
        x, timestep, c = args["input"], args["timestep"], args["c"]
        sigma = float(timestep.flatten()[0])
        self._begin_run_if_new((tuple(x.shape), tuple(args.get("cond_or_uncond") or ())), sigma)
        s = self.state
        if self._should_skip(x, sigma):
            s.skipped += 1
            s.skipped_sigmas.append(sigma)
            if self.verbose:
                log.info("%s: reused the cached step at sigma %.4f", self.name, sigma)
            return x + s.cached_diff
        output = apply_model(x, timestep, **c)
        if s.prev_input is not None and s.prev_output is not None and s.prev_output.shape == output.shape:
            input_change = _relative_change(x, s.prev_input)
            if input_change > 0:
                s.rate = _relative_change(output, s.prev_output) / input_change
        s.prev_input, s.prev_output = x.detach().clone(), output.detach().clone()
        s.cached_diff = (output - x).detach()
        s.accumulated = 0.0
        s.computed += 1
        return output
