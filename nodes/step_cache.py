"""EasyCache and LazyCache nodes (ComfyUI's `comfy_extras/nodes_easycache.py` names and inputs).

Each returns a clone of the MODEL whose `model_function_wrapper` is a `diffusion.sampling.step_cache.StepCache`; sampling
then skips model calls whose estimated output change is below `reuse_threshold` inside start..end percent.
"""
from __future__ import annotations

from diffusion.files.assemble import model_sampling_of
from diffusion.patcher import ModelHandle
from diffusion.sampling.step_cache import StepCache
from nodes.spec import Boolean, Float, Input, Node, Output


def _inputs() -> tuple:
    return (
        Input("model", "MODEL"),
        Float("reuse_threshold", 0.2, min=0.0, max=3.0, step=0.01),
        Float("start_percent", 0.15, min=0.0, max=1.0, step=0.01),
        Float("end_percent", 0.95, min=0.0, max=1.0, step=0.01),
        Boolean("verbose", False),
    )


class EasyCache(Node):
    """Native cache: reuses the last output−input difference while the estimated output change stays small."""

    CATEGORY = "advanced/debug/model"
    INPUTS = _inputs()
    OUTPUTS = (Output("MODEL"),)
    LAZY = False

    def execute(self, model: ModelHandle, reuse_threshold: float = 0.2, start_percent: float = 0.15,
                end_percent: float = 0.95, verbose: bool = False) -> tuple[ModelHandle]:
        if start_percent > end_percent:
            raise ValueError(f"{type(self).__name__}: start_percent ({start_percent}) is after end_percent "
                             f"({end_percent})")
        sampling = model_sampling_of(model)
        cache = StepCache(reuse_threshold, sampling.percent_to_sigma(start_percent),
                          sampling.percent_to_sigma(end_percent), verbose, lazy=self.LAZY, name=type(self).__name__)
        clone = model.clone()
        clone.add_wrapper("model_function_wrapper", cache)
        return (clone,)


class LazyCache(EasyCache):
    """Lighter variant: estimates the change from the input alone and skips more eagerly."""

    LAZY = True


NODES = [EasyCache, LazyCache]
