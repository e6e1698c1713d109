"""ModelComputeDtype through the real executor and model manager on the tiny SD1.5 checkpoint (fp32 weights on the
CPU): fp16 makes the UNet's layers compute in fp16 (their outputs are fp16) while the stored weights stay fp32 and
bitwise unchanged (on a GPU, fp32 over fp16 weights), giving an image close to but not equal to the fp32 one;
"default" changes nothing; bf16 follows the manager's CPU rule (fp32 on a CPU without bf16 instructions).
ComputeCast alone: outputs in the compute dtype, weights restored after every call and when the hooks are removed."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from executor.memory_cast import ComputeCast
from tests.nodes.sd_env import SDEnv, txt2img


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("compute_dtype"))


def graph(dtype: str | None) -> dict[str, Any]:
    prompt = txt2img(steps=2)
    if dtype is not None:
        prompt["c"] = {"class_type": "ModelComputeDtype", "inputs": {"model": ["4", 0], "dtype": dtype}}
        prompt["3"]["inputs"]["model"] = ["c", 0]
    return prompt


def watch_outputs(env: SDEnv) -> tuple[list[torch.dtype], Any, dict[str, torch.Tensor]]:
    """Record the output dtype of one UNet conv and one linear layer at every call; also the weights now."""
    module = env.value(graph(None), "4").model
    seen: list[torch.dtype] = []
    layers = [module.diffusion_model.input_blocks[0][0],
              next(m for m in module.diffusion_model.modules() if isinstance(m, nn.Linear))]
    hooks = [layer.register_forward_hook(lambda m, a, out: seen.append(out.dtype)) for layer in layers]
    weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return seen, hooks, weights


def test_other_dtype_computes_in_it_and_leaves_the_weights(env: SDEnv) -> None:
    stored = env.models.dtype_for("unet")  # fp32 on the CPU (fp16 on a GPU: then ask for fp32)
    name, dtype = ("fp16", torch.float16) if stored == torch.float32 else ("fp32", torch.float32)
    reference = env.value(graph(None), "8")
    seen, hooks, before = watch_outputs(env)
    try:
        image = env.value(graph(name), "8")
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and set(seen) == {dtype}
    unet = env.value(graph(None), "4").model
    after = {k: v.detach() for k, v in unet.state_dict().items()}
    assert all(after[k].dtype == before[k].dtype and torch.equal(after[k], before[k]) for k in before)
    assert not torch.equal(image, reference)
    torch.testing.assert_close(image, reference, rtol=0, atol=0.05)


def test_default_changes_nothing(env: SDEnv) -> None:
    torch.testing.assert_close(env.value(graph("default"), "8"), env.value(graph(None), "8"), rtol=0, atol=0)


def test_bf16_follows_the_cpu_rule(env: SDEnv) -> None:
    if env.models.device.type != "cpu":
        pytest.skip("the CPU bf16 rule applies to CPU compute")
    reference = env.value(graph(None), "8")
    env.models.cpu_flags = frozenset()  # a CPU without bf16 units: computed in fp32, so the same image
    try:
        torch.testing.assert_close(env.value(graph("bf16"), "8"), reference, rtol=0, atol=0)
        env.models.cpu_flags = frozenset({"avx512_bf16"})
        seen, hooks, _ = watch_outputs(env)
        try:
            env.value(graph("bf16") | {"5": {"class_type": "EmptyLatentImage",
                                              "inputs": {"width": 32, "height": 32, "batch_size": 2}}}, "8")
        finally:
            for hook in hooks:
                hook.remove()
        assert seen and set(seen) == {torch.bfloat16}
    finally:
        env.models.cpu_flags = None


def test_object_info(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)["ModelComputeDtype"]
    assert info["input"]["required"]["dtype"] == [["default", "fp32", "fp16", "bf16"]]
    assert info["category"] == "advanced/debug/model" and info["output"] == ["MODEL"]


def test_compute_cast_restores_weights() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(5))
    net(torch.randn(1, 3, 6, 6))
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    cast = ComputeCast(net, torch.float16)
    out = net(torch.randn(2, 3, 6, 6))
    assert out.dtype == torch.float16
    assert all(torch.equal(net.state_dict()[k], v) and net.state_dict()[k].dtype == torch.float32
               for k, v in weights.items())
    cast.remove()
    assert net(torch.randn(1, 3, 6, 6)).dtype == torch.float32
