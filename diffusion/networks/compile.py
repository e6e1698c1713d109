"""`--compile`: torch.compile of the diffusion network, applied in place when the memory manager loads a UNet.

Owns the compile policy: which module of a MODEL is compiled (the denoising network itself, `diffusion_model`, not
the thin parameterisation wrapper around it), that it is compiled at most once, and that it is compiled in place
with `nn.Module.compile` so the module object, its state-dict keys, its weight patches and the manager's records of
it stay as they are. Compilation is lazy: nothing is traced until the first call, then TorchDynamo keeps one graph
per input shape (`dynamic=False`: a 256×256 and a 512×512 latent each get their own specialised graph, held in
Dynamo's per-code cache, up to `torch._dynamo.config.cache_size_limit` shapes) and Inductor generates the kernels
(C++/OpenMP on the CPU, Triton on CUDA). See Ansel et al. (2024), "PyTorch 2: Faster Machine Learning Through
Dynamic Python Bytecode Transformation and Graph Compilation".

torch._dynamo is imported only when a module is compiled: importing it costs seconds, and start-up must not.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

COMPILED_FLAG = "_loom_compiled"


def compile_target(model: nn.Module) -> nn.Module:
    """The module `--compile` compiles: a MODEL's denoising network (`diffusion_model`) or the module itself."""
    inner = getattr(model, "diffusion_model", None)
    return inner if isinstance(inner, nn.Module) else model


def is_compiled(model: nn.Module) -> bool:
    """True once `compile_model` has compiled this model's network."""
    return bool(getattr(compile_target(model), COMPILED_FLAG, False))


def compile_model(model: nn.Module, *, mode: str | None = None, backend: str = "inductor",
                  options: dict[str, Any] | None = None) -> bool:
    """Compile `model`'s network in place (once); returns True when this call compiled it.

    The compiled module still takes any input: a new shape triggers one more trace (cached per shape), and an input
    Dynamo cannot trace runs eagerly after a graph break, so the output is always the eager network's.
    """
    target = compile_target(model)
    if getattr(target, COMPILED_FLAG, False):
        return False
    target.compile(backend=backend, mode=mode, dynamic=False, options=options)
    setattr(target, COMPILED_FLAG, True)
    log.info("torch.compile: %s (%s) will be compiled on its first call, one graph per input shape",
             type(target).__name__, backend)
    return True
