"""The memory policy against a fake byte-budget device: LRU eviction, budgets, partial loading, patches, clones."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from diffusion.patcher import ModelHandle, WeightPatch
from executor.devices import FakeDevice
from executor.memory import MemoryPolicy, ModelManager

GIB = 1024 ** 3


class MetaBlob(nn.Module):
    """A model of `gib` GiB in `parts` Linear layers, made of meta tensors (no real memory)."""

    def __init__(self, gib: float, parts: int = 1) -> None:
        super().__init__()
        n = int(gib * GIB) // 4 // parts
        self.layers = nn.ModuleList(nn.Linear(1024, n // 1024, bias=False, device="meta") for _ in range(parts))


class SmallNet(nn.Module):
    """A real small network using every streamable layer type."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.lin1 = nn.Linear(8 * 4 * 4, 32)
        self.ln = nn.LayerNorm(32)
        self.lin2 = nn.Linear(32, 8)
        self.pos = nn.Parameter(torch.randn(8, generator=g))  # a non-leaf tensor: always resident
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.to(dtype)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.norm(self.conv(x)))
        h = self.ln(self.lin1(h.flatten(1)))
        return self.lin2(h) + self.emb(tokens).mean(1) + self.pos


def inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 4, 4, generator=g).to(dtype), torch.tensor([[1, 2, 3], [4, 5, 6]])


def lora_like(shape: tuple[int, int], seed: int, strength: float = 0.7) -> WeightPatch:
    """A rank-2 LoRA-like delta (up @ down) for a 2-D weight."""
    g = torch.Generator().manual_seed(seed)
    up, down = torch.randn(shape[0], 2, generator=g), torch.randn(2, shape[1], generator=g)
    return WeightPatch(compute_delta=lambda w: up @ down, strength=strength, key_hint=f"lora{seed}",
                       ident=("lora", seed))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu", k
        assert v.dtype == snap[k].dtype, k
        assert torch.equal(v.view(torch.uint8) if v.dtype.is_floating_point else v,
                           snap[k].view(torch.uint8) if v.dtype.is_floating_point else snap[k]), k


def fake_manager(budget: float, **flags: object) -> tuple[ModelManager, FakeDevice]:
    device = FakeDevice(int(budget * GIB))
    return ModelManager(MemoryPolicy(reserve_vram=0.0, **flags), device=device), device


def loaded_names(mm: ModelManager) -> set[str]:
    return {m["name"] for m in mm.loaded_models() if m["device_bytes"] > 0}


def test_lru_eviction_three_models_budget_never_exceeded() -> None:
    mm, dev = fake_manager(4)
    a, b, c = (ModelHandle(MetaBlob(2), name=n) for n in "abc")
    steps = [(a, {"a"}), (b, {"a", "b"}), (c, {"b", "c"}), (b, {"b", "c"}), (a, {"a", "b"}), (c, {"a", "c"})]
    for handle, expected in steps:
        with mm.use([handle]):
            assert dev.used <= dev.budget
            assert mm.is_loaded(handle)
        assert loaded_names(mm) == expected
        assert dev.used == sum(m["device_bytes"] for m in mm.loaded_models())
    assert dev.peak <= dev.budget


def test_models_in_use_are_not_evicted_and_working_memory_evicts() -> None:
    mm, dev = fake_manager(4)
    a, b, c = (ModelHandle(MetaBlob(2), name=n) for n in "abc")
    with mm.use([a, b]):
        assert loaded_names(mm) == {"a", "b"}
        with mm.use([c]):  # no room and nothing evictable: c runs partially (streamed)
            assert {"a", "b"} <= {m["name"] for m in mm.loaded_models()}
            assert dev.used <= dev.budget
    with mm.use([a], working_memory=int(1.5 * GIB)):
        assert dev.free_memory() >= 1.5 * GIB
        assert mm.is_loaded(a)
    assert dev.peak <= dev.budget


def test_partial_loading_engaged_when_model_exceeds_budget() -> None:
    mm, dev = fake_manager(4)
    big = ModelHandle(MetaBlob(5, parts=5), name="big")
    with mm.use([big]):
        (info,) = mm.loaded_models()
        assert info["partial"] and info["streamed_units"] == 2
        assert info["device_bytes"] == 3 * GIB
    assert dev.peak <= dev.budget


def test_partial_output_equals_full_output() -> None:
    x, tok = inputs()
    net = SmallNet()
    with torch.no_grad():
        ref = net(x, tok)
    size = ModelHandle(net).nbytes()
    for budget_frac, flags in [(0.95, {}), (0.9, {}), (1.5, {"lowvram": True}), (10.0, {"novram": True})]:
        dev = FakeDevice(int(size * budget_frac))
        mm = ModelManager(MemoryPolicy(reserve_vram=0.0, **flags), device=dev)
        handle = ModelHandle(net, name="net")
        with mm.use([handle]), torch.no_grad():
            (info,) = mm.loaded_models()
            assert info["partial"], (budget_frac, flags)
            out = net(x, tok)
            assert dev.used == info["device_bytes"]  # streamed copies dropped after each layer
        assert torch.equal(out, ref)
        assert dev.peak <= dev.budget
        mm.unload_all()
        assert dev.used == 0


def test_patches_applied_on_load_and_removed_bitwise_on_eviction() -> None:
    net = SmallNet(torch.float16)
    budget = ModelHandle(net).nbytes() + 4096
    mm, dev = fake_manager(budget / GIB)
    snap = snapshot(net)
    base = ModelHandle(net, name="net")
    patched = base.clone()
    applied = patched.add_patches({"lin1.weight": lora_like((32, 128), 3), "nope.weight": lora_like((1, 1), 4)})
    assert applied == ["lin1.weight"] and patched.unknown_keys(["nope.weight"]) == ["nope.weight"]
    expected = patched.patched_copy_of("lin1.weight")
    assert expected.dtype == torch.float16 and not torch.equal(expected, snap["lin1.weight"])
    with mm.use([patched]):
        assert torch.equal(net.lin1.weight.detach(), expected)
    assert base.patches == {}
    # Evict it by loading a model that needs the whole budget.
    other = ModelHandle(MetaBlob((budget - 1024) / GIB), name="other")
    with mm.use([other]):
        assert loaded_names(mm) == {"other"}
    assert_bitwise(net, snap)
    assert dev.peak <= dev.budget


@pytest.mark.parametrize("budget_frac", [None, 0.9])
def test_two_clones_alternate_and_base_restored(budget_frac: float | None) -> None:
    net = SmallNet()
    budget = 1.0 if budget_frac is None else ModelHandle(net).nbytes() * budget_frac / GIB
    mm, dev = fake_manager(budget)
    snap = snapshot(net)
    x, tok = inputs()
    h1, h2 = ModelHandle(net, name="net").clone(), ModelHandle(net, name="net").clone()
    h1.add_patches({"lin2.weight": lora_like((8, 32), 10)})
    h2.add_patches({"lin2.weight": lora_like((8, 32), 11, strength=-0.5), "conv.weight": WeightPatch(
        compute_delta=lambda w: torch.ones_like(w), strength=0.1, strength_model=0.5)})
    expect = {}
    for h in (h1, h2):
        with mm.use([h]), torch.no_grad():
            expect[id(h)] = net(x, tok)
        mm.unload_all()
        assert_bitwise(net, snap)
    assert not torch.equal(expect[id(h1)], expect[id(h2)])
    for i in range(6):
        h = (h1, h2)[i % 2]
        with mm.use([h]), torch.no_grad():
            assert mm.is_loaded(h) and not mm.is_loaded((h2, h1)[i % 2])
            assert mm.loaded_models()[0]["partial"] == (budget_frac is not None)
            assert torch.equal(net(x, tok), expect[id(h)])
    with pytest.raises(ValueError):
        with mm.use([h1, h2]):
            pass
    mm.unload_all()
    assert_bitwise(net, snap)
    assert dev.used == 0


def test_clone_isolation_and_patch_key() -> None:
    net = SmallNet()
    a = ModelHandle(net, name="net")
    a.set_transformer_option("patches", {"attn1": [len]})
    b = a.clone()
    b.options["transformer_options"]["patches"]["attn1"].append(abs)
    b.add_wrapper("sampler_post_cfg_function", min)
    b.set_option("sampler_cfg_function", max)
    b.add_object_patch("lin2.forward", lambda t: t)
    assert a.options == {"transformer_options": {"patches": {"attn1": [len]}}}
    assert a.object_patches == {} and b.is_clone_of(a) and a.is_clone_of(b)
    assert a.patch_key() != b.patch_key()
    c = a.clone()
    assert c.patch_key() == a.patch_key() and hash(c.patch_key()) == hash(a.patch_key())
    c.add_patches({"lin2.weight": lora_like((8, 32), 5)})
    assert c.patch_key() != a.patch_key() and a.patches == {}
    assert ModelHandle(net).nbytes() == sum(p.numel() * 4 for p in net.parameters())


def test_object_patches_applied_while_loaded_only() -> None:
    mm, _ = fake_manager(1)
    net = SmallNet()
    x, tok = inputs()
    with torch.no_grad():
        ref = net(x, tok)
    h = ModelHandle(net).clone()
    h.add_object_patch("ln", nn.Identity())
    with mm.use([h]), torch.no_grad():
        assert isinstance(net.ln, nn.Identity)
        assert not torch.equal(net(x, tok), ref)
    mm.unload_all()
    assert isinstance(net.ln, nn.LayerNorm)
    with torch.no_grad():
        assert torch.equal(net(x, tok), ref)


def test_highvram_never_offloads() -> None:
    mm, dev = fake_manager(4, highvram=True)
    a, b, c = (ModelHandle(MetaBlob(2), name=n) for n in "abc")
    for h in (a, b):
        with mm.use([h]):
            pass
    with pytest.raises(torch.OutOfMemoryError):
        with mm.use([c]):
            pass
    assert loaded_names(mm) == {"a", "b"}
    assert dev.used <= dev.budget


def test_free_from_another_thread_waits_for_models_in_use() -> None:
    mm, dev = fake_manager(4)
    a, b = ModelHandle(MetaBlob(1), name="a"), ModelHandle(MetaBlob(1), name="b")
    with mm.use([b]):
        pass
    with mm.use([a]):
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(mm.free(unload_models=True, free_memory=True)))
        t.start()
        t.join()
        assert result == {"unloaded": 1, "pending": True}
        assert loaded_names(mm) == {"a"}
    assert loaded_names(mm) == set() and dev.used == 0


def test_retry_on_oom_frees_then_falls_back() -> None:
    mm, dev = fake_manager(4)
    a = ModelHandle(MetaBlob(2), name="a")
    with mm.use([a]):
        pass
    calls = []

    def flaky() -> str:
        calls.append(dev.used)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("first try")
        return "ok"

    assert mm.retry_on_oom(flaky) == "ok"
    assert calls == [2 * GIB, 0]

    def always() -> str:
        raise torch.OutOfMemoryError("never fits")

    assert mm.retry_on_oom(always, fallback=lambda: "tiled") == "tiled"
    with pytest.raises(torch.OutOfMemoryError):
        mm.retry_on_oom(always)


def test_streaming_survives_exception_in_forward() -> None:
    dev = FakeDevice(10 ** 9)
    mm = ModelManager(MemoryPolicy(novram=True, reserve_vram=0.0), device=dev)
    net = SmallNet()
    with mm.use([ModelHandle(net)]), torch.no_grad():
        with pytest.raises(RuntimeError):
            net.lin1(torch.zeros(1, 3))  # wrong shape: fails inside the streamed layer
        resident = mm.loaded_models()[0]["device_bytes"]
        assert dev.used == resident
    mm.unload_all()
    assert dev.used == 0


def test_dropped_model_is_forgotten() -> None:
    mm, dev = fake_manager(4)
    h = ModelHandle(MetaBlob(2), name="gone")
    with mm.use([h]):
        pass
    assert dev.used == 2 * GIB
    del h
    import gc
    gc.collect()
    assert mm.loaded_models() == [] and dev.used == 0


def test_wrappers_with_model_or_handle_are_accepted() -> None:
    mm, _ = fake_manager(1)

    class VAELike:
        def __init__(self) -> None:
            self.model = SmallNet()

    class CLIPLike:
        def __init__(self) -> None:
            self.model = SmallNet()
            self.handle = ModelHandle(self.model, kind="text_encoder")

    vae, clip = VAELike(), CLIPLike()
    with mm.use([vae, clip]):
        assert mm.handle_for(vae).model is vae.model and mm.handle_for(clip) is clip.handle
        assert mm.is_loaded(vae) and mm.is_loaded(clip)
    with pytest.raises(TypeError):
        mm.handle_for(42)
    del vae
    import gc
    gc.collect()
    assert [m["kind"] for m in mm.loaded_models()] == ["text_encoder"]


def test_stats() -> None:
    mm, _ = fake_manager(4)
    stats = mm.stats()
    for key in ("name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free",
                "ram_total", "ram_free"):
        assert key in stats
    assert stats["vram_total"] == 4 * GIB and stats["ram_total"] > 0


def test_out_of_memory_while_placing_leaves_a_true_record() -> None:
    """A model whose unstreamable part cannot fit fails cleanly: nothing stays counted on the device."""

    class Unstreamable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.empty(2 ** 28, device="meta"))  # 1 GiB on a custom (non-leaf-type) module
            self.inner = nn.Linear(1024, 1024, device="meta")

    mm, dev = fake_manager(0.5)
    h = ModelHandle(Unstreamable(), name="u")
    with pytest.raises(torch.OutOfMemoryError):
        with mm.use([h]):
            pass
    assert dev.used == 0 and mm.loaded_models() == []
    small = ModelHandle(MetaBlob(0.25), name="small")
    with mm.use([small]):
        assert loaded_names(mm) == {"small"}


def test_oom_during_place_evicts_and_streams_more() -> None:
    """When the device has less than it reported (another process took memory), loading frees and streams."""
    mm, dev = fake_manager(4)
    a = ModelHandle(MetaBlob(2), name="a")
    with mm.use([a]):
        pass
    real_free = dev.free_memory
    dev.free_memory = lambda: real_free() + 2 * GIB  # lies: says 4 GiB free with a still loaded
    b = ModelHandle(MetaBlob(3, parts=6), name="b")
    with mm.use([b]):
        assert not mm.is_loaded(a) and mm.loaded_models()[0]["partial"]
    assert dev.used <= dev.budget


def test_failing_patch_leaves_base_weights_intact() -> None:
    mm, _ = fake_manager(1)
    net = SmallNet()
    snap = snapshot(net)
    bad = ModelHandle(net).clone()
    bad.add_patches({"lin2.weight": lora_like((8, 32), 1),
                     "lin1.weight": WeightPatch(compute_delta=lambda w: torch.ones(3), strength=1.0)})
    for _ in range(2):
        with pytest.raises(ValueError):
            with mm.use([bad]):
                pass
    mm.unload_all()
    assert_bitwise(net, snap)
    good = ModelHandle(net).clone()
    good.add_patches({"lin2.weight": lora_like((8, 32), 1)})
    expected = good.patched_copy_of("lin2.weight")
    with mm.use([good]):
        assert torch.equal(net.lin2.weight.detach(), expected)
    mm.unload_all()
    assert_bitwise(net, snap)


def test_module_object_patch_goes_to_the_device_with_the_model() -> None:
    """A replacement submodule with its own tensors (like a new `model_sampling`) is placed and returned too."""
    net = SmallNet()
    budget = ModelHandle(net).nbytes() + 4096
    mm, dev = fake_manager(budget / GIB)
    replacement = nn.LayerNorm(32)
    with torch.no_grad():
        replacement.weight.fill_(2.0)
    h = ModelHandle(net).clone()
    h.add_object_patch("ln", replacement)
    x, tok = inputs()
    with mm.use([h]), torch.no_grad():
        assert net.ln is replacement
        extra = 2 * 32 * 4  # the replacement's weight and bias; the replaced LayerNorm stays placed too
        assert dev.used == (budget - 4096) + extra == mm.loaded_models()[0]["device_bytes"]
        net(x, tok)
    mm.unload_all()
    assert dev.used == 0 and isinstance(net.ln, nn.LayerNorm) and net.ln is not replacement
    assert torch.equal(replacement.weight, torch.full((32,), 2.0))
