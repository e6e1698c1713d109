"""A handle's `model_compute_dtype` option through the model manager on the fake byte-budget device: whole and
partial (streamed) placements compute in fp16 with the same result, the stored fp32 weights come back bitwise,
streamed copies are still dropped after each layer, and a clone without the option computes in fp32 again."""
from __future__ import annotations

import torch

from diffusion.patcher import ModelHandle
from executor.devices import FakeDevice
from executor.memory import MemoryPolicy, ModelManager
from tests.executor.test_memory import SmallNet, inputs


def fp16_reference(net: SmallNet, x: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    twin = SmallNet(torch.float16)
    twin.load_state_dict(net.state_dict())
    twin.pos.data = net.pos.data.clone()  # the non-leaf parameter keeps its fp32 (only layers are cast)
    with torch.no_grad():
        return twin(x.half(), tok)


def test_compute_dtype_whole_and_streamed() -> None:
    x, tok = inputs()
    net = SmallNet()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        fp32 = net(x, tok)
    expected = fp16_reference(net, x, tok)
    size = ModelHandle(net).nbytes()
    for budget_frac, flags in [(10.0, {}), (0.9, {}), (10.0, {"novram": True})]:
        dev = FakeDevice(int(size * budget_frac))
        mm = ModelManager(MemoryPolicy(reserve_vram=0.0, **flags), device=dev)
        handle = ModelHandle(net, name="net")
        handle.set_option("model_compute_dtype", torch.float16)
        seen: list[torch.dtype] = []
        hook = net.lin1.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
        with mm.use([handle]), torch.no_grad():
            out = net(x, tok)
            assert dev.used == mm.loaded_models()[0]["device_bytes"]
        hook.remove()
        assert seen == [torch.float16]
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert not torch.equal(out, fp32)
        torch.testing.assert_close(out, fp32, rtol=0, atol=2e-2)
        plain = ModelHandle(net, name="net")
        with mm.use([plain]), torch.no_grad():
            assert torch.equal(net(x, tok), fp32)  # the hooks went with the clone that asked for them
        mm.unload_all()
        assert dev.used == 0
        assert all(torch.equal(net.state_dict()[k], v) and net.state_dict()[k].dtype == v.dtype
                   for k, v in weights.items())


def test_a_nested_use_keeps_the_outer_blocks_compute_dtype() -> None:
    x, tok = inputs()
    net = SmallNet()
    mm = ModelManager(MemoryPolicy(reserve_vram=0.0), device=FakeDevice(10 ** 9))
    half = ModelHandle(net, name="net")
    half.set_option("model_compute_dtype", torch.float16)
    seen: list[torch.dtype] = []
    hook = net.lin2.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with mm.use([half]), torch.no_grad():
        with mm.use([ModelHandle(net, name="net")]):  # same weights, no option: the outer block's dtype stays
            net(x, tok)
        net(x, tok)
    with mm.use([ModelHandle(net, name="net")]), torch.no_grad():
        net(x, tok)
    hook.remove()
    assert seen == [torch.float16, torch.float16, torch.float32]
