"""Partial loading and streaming on Loom's real networks (tiny configs): outputs equal the fully loaded ones."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.patcher import ModelHandle, WeightPatch
from executor.devices import FakeDevice
from executor.memory import MemoryPolicy, ModelManager
from executor.memory_load import module_units


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def partial_budget(model: nn.Module) -> int:
    """A budget that holds the unstreamable units, two of the largest streamable ones, and about half the rest."""
    units = module_units(model)
    forced = sum(u.nbytes for u in units if not u.streamable)
    largest = max(u.nbytes for u in units if u.streamable)
    total = sum(u.nbytes for u in units)
    return max(forced + 2 * largest, forced + (total - forced) // 2)


def run_everywhere(model: nn.Module, call) -> None:
    """`call()` fully loaded, partially loaded and fully streamed gives the same tensor, bitwise."""
    with torch.no_grad():
        ref = call()
    for flags, budget in [({}, partial_budget(model)), ({"novram": True}, 10 ** 10), ({}, 10 ** 10)]:
        dev = FakeDevice(budget)
        mm = ModelManager(MemoryPolicy(reserve_vram=0.0, **flags), device=dev)
        handle = ModelHandle(model)
        with mm.use([handle]), torch.no_grad():
            info = mm.loaded_models()[0]
            assert info["partial"] == (budget < 10 ** 10 or "novram" in flags)
            out = call()
        assert torch.equal(out, ref), flags
        assert dev.peak <= dev.budget
        mm.unload_all()
        assert dev.used == 0


def test_unet_streams() -> None:
    from diffusion.networks.unet import UNetConfig, build_unet

    unet = randomize(build_unet(UNetConfig.tiny()))
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, 128, generator=g)
    run_everywhere(unet, lambda: unet(x, torch.tensor([500.0]), ctx))


def test_vae_streams() -> None:
    from diffusion.networks.vae import VAE, VAEConfig, build_vae

    vae = VAE(randomize(build_vae(VAEConfig.tiny()), 2))
    latent = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    run_everywhere(vae.model, lambda: vae.decode(latent))


def test_multihead_attention_children_stay_resident() -> None:
    layer = randomize(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True))
    units = {u.path: u.streamable for u in module_units(layer)}
    assert units["self_attn"] is False and units["self_attn.out_proj"] is False
    assert units["linear1"] is True and units["norm1"] is True
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(4))
    layer.eval()
    run_everywhere(layer, lambda: layer(x))


def test_inference_mode_load_then_patch_outside() -> None:
    """Weights moved while in inference mode can still be patched and restored outside it."""
    layer = randomize(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    base = layer[0].weight.detach().clone()
    mm = ModelManager(MemoryPolicy(reserve_vram=0.0), device=FakeDevice(10 ** 6))
    with torch.inference_mode(), mm.use([ModelHandle(layer)]):
        pass
    h = ModelHandle(layer).clone()
    h.add_patches({"0.weight": WeightPatch(compute_delta=lambda w: torch.ones_like(w), strength=1.0)})
    with mm.use([h]):
        assert torch.equal(layer[0].weight, base + 1)
    mm.unload_all()
    assert torch.equal(layer[0].weight, base)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_patch_restore_bitwise(dtype: torch.dtype) -> None:
    layer = randomize(nn.Linear(16, 16)).to(dtype)
    base = layer.weight.detach().clone()
    h = ModelHandle(layer).clone()
    h.add_patches({"weight": WeightPatch(compute_delta=lambda w: w.sin(), strength=0.3, strength_model=0.9)})
    mm = ModelManager(MemoryPolicy(reserve_vram=0.0), device=FakeDevice(10 ** 6))
    with mm.use([h]):
        expected = (base.float() * 0.9 + 0.3 * base.float().sin()).to(dtype)
        assert torch.equal(layer.weight, expected)
    mm.unload_all()
    assert torch.equal(layer.weight.view(torch.int16), base.view(torch.int16))


@pytest.mark.slow
def test_sampling_a_tiny_checkpoint_streamed_equals_fully_loaded(tmp_path) -> None:
    """The real text-to-image path (CLIP, 2 euler steps with CFG, VAE decode) gives the same image bitwise whether
    the models are fully placed, partially placed under a small budget, or streamed layer by layer."""
    from diffusion.networks.diffusion_model import DiffusionModel
    from diffusion.files.loading import load_checkpoint
    from diffusion.sampling.sample import sample
    from diffusion.text.text_encoders import CLIP
    from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint

    ckpt = load_checkpoint(write_tiny_checkpoint(tmp_path / "tiny.safetensors", "sd15"))
    unet = ModelHandle(DiffusionModel(ckpt.unet), kind="unet")
    clip = CLIP(ckpt.text_encoder)
    clip.handle = ModelHandle(clip.model, kind="text_encoder")
    vae = ckpt.vae

    def generate(mm: ModelManager, partial: list[str] | None = None) -> torch.Tensor:
        seen = partial if partial is not None else []
        with mm.use([clip]):
            pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red cube"))
            neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
            seen += [m["kind"] for m in mm.loaded_models() if m["partial"]]
        with mm.use([unet]) as device:
            latent = sample(unet.model, noise=None, positive=pos, negative=neg, cfg=7.0, sampler_name="euler",
                            scheduler="normal", steps=2, latent_image=torch.zeros(1, 4, 8, 8), seed=1,
                            device=device, model_options=unet.options)
            seen += [m["kind"] for m in mm.loaded_models() if m["partial"]]
        with mm.use([vae]):
            return vae.decode(latent)

    ref = generate(ModelManager(MemoryPolicy(reserve_vram=0.0), device=FakeDevice(10 ** 10)))
    for flags, budget in [({}, 12 * 1024 ** 2), ({"novram": True}, 10 ** 10), ({"lowvram": True}, 40 * 1024 ** 2)]:
        dev = FakeDevice(budget)
        mm = ModelManager(MemoryPolicy(reserve_vram=0.0, **flags), device=dev)
        partial: list[str] = []
        assert torch.equal(generate(mm, partial), ref), flags
        assert "text_encoder" in partial, (flags, partial)
        assert dev.peak <= dev.budget
