"""TorchCompileModel (ComfyUI's `comfy_extras/nodes_torch_compile.py` name and `backend` input).

The node only asks for compilation: it returns a clone of the MODEL whose options carry `torch_compile`; the memory
manager compiles the network when it loads it (`diffusion/networks/compile.py`: one graph per input shape and dtype, so a
seed change does not recompile). A backend this platform's torch does not offer is a clear error here.
"""
from __future__ import annotations

from diffusion.patcher import ModelHandle
from nodes.spec import Combo, Input, Node, Output

BACKENDS = ("inductor", "cudagraphs", "eager", "aot_eager")


def available_backends() -> list[str]:
    """The torch.compile backends this torch offers (imports torch._dynamo, which costs seconds)."""
    import torch._dynamo

    return list(torch._dynamo.list_backends(exclude_tags=())) + ["eager"]


class TorchCompileModel(Node):
    """Compiles the diffusion network with torch.compile when it is loaded."""

    CATEGORY = "_for_testing"
    INPUTS = (Input("model", "MODEL"), Combo("backend", BACKENDS))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, backend: str = "inductor") -> tuple[ModelHandle]:
        offered = available_backends()
        if backend not in offered:
            raise ValueError(f"TorchCompileModel: backend '{backend}' is not available with this torch "
                             f"(available: {', '.join(sorted(set(offered)))})")
        if backend == "cudagraphs":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("TorchCompileModel: backend 'cudagraphs' needs a CUDA device; use 'inductor'")
        clone = model.clone()
        clone.options["torch_compile"] = {"backend": backend}
        return (clone,)


NODES = [TorchCompileModel]
