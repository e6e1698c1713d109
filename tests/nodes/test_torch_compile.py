"""TorchCompileModel through the real executor on the tiny SD1.5 checkpoint: the network is compiled on load, a
seed change reuses the compiled graphs (Dynamo's compile counter does not move), the output matches eager, and a
backend that is not offered is refused naming the node and input."""
from __future__ import annotations

import pytest
import torch

from diffusion.networks.compile import is_compiled
from tests.nodes.sd_env import SDEnv, txt2img


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("torch_compile"))


def _prompt(seed: int, backend: str | None) -> dict:
    prompt = txt2img(seed=seed, steps=2, size=32)
    if backend is not None:
        prompt["c"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["4", 0], "backend": backend}}
        prompt["3"]["inputs"]["model"] = ["c", 0]
    return prompt


def test_seed_change_does_not_recompile(env: SDEnv) -> None:
    from torch._dynamo.utils import counters

    eager = env.value(_prompt(1, None), "3")["samples"]
    first = env.value(_prompt(1, "eager"), "3")["samples"]
    compiled_graphs = counters["stats"]["unique_graphs"]
    assert compiled_graphs > 0
    model = env.value(_prompt(1, "eager"), "c")
    assert is_compiled(model.model)
    env.value(_prompt(2, "eager"), "3")
    assert counters["stats"]["unique_graphs"] == compiled_graphs
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-4)


def test_unknown_backend_is_refused(env: SDEnv) -> None:
    result = env.run(_prompt(1, "no_such_backend"))
    text = str(result)
    assert "backend" in text and "no_such_backend" in text
