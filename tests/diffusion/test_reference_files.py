"""The full-size reference checkpoints of ../shared/reference (slow): built by the shared script, checked against
their published sha256, loaded through the real loader with every key consumed and every parameter filled, and the
UNet and VAE compared with diffusers' models holding the same weights (converted by diffusers' own functions).

The built files are cached under <repo>/.cache/reference (git-ignored; CI rebuilds them).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.files.checkpoint import read_state_dict, split_components
from diffusion.families import V_PREDICTION_STD_THRESHOLD
from diffusion.files.loading import load_checkpoint
from diffusion.networks.unet import UNetConfig, build_unet, count_parameters
from diffusion.networks.vae import VAEConfig, build_vae
from tests.fixtures.diffusers_oracle import diffusers_unet, diffusers_vae
from tests.fixtures.reference import reference_checkpoint

TEXT_ENCODER_PARAMETERS = {"sd15": 123_060_480}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def reference_files(shared_dir: Path) -> dict[str, Path]:
    """The SD1.5 and SD2.1 reference checkpoints, built once and verified (tests/fixtures/reference.py); the SDXL and
    SD3 ones are built by their parity tests."""
    return {family: reference_checkpoint(shared_dir, family) for family in ("sd15", "sd21")}


@pytest.mark.parametrize("family", ["sd15", "sd21"])
def test_reference_checkpoint_loads_completely(reference_files: dict[str, Path], family: str) -> None:
    path = reference_files[family]
    loaded = load_checkpoint(path, dtype=torch.float32, text_encoder_dtype=torch.float16)
    info = loaded.info
    full = UNetConfig.sd2() if family == "sd21" else UNetConfig.sd1()
    assert info.unet == full and info.vae == VAEConfig.sd() and not info.inpaint
    assert info.family == ("sd2" if family == "sd21" else "sd1")
    assert loaded.report.unknown == [] and loaded.report.missing == []
    raw = read_state_dict(path)
    consumed = {f"model.diffusion_model.{k}" for k in loaded.unet.state_dict()}
    consumed |= {f"first_stage_model.{k}" for k in loaded.vae.model.state_dict()}
    te_keys = {k for k in raw if k.startswith("cond_stage_model.")}
    assert set(raw) - consumed - te_keys == set(loaded.report.ignored) - te_keys
    assert all(not k.startswith(("model.", "first_stage_model.")) for k in loaded.report.ignored)
    for module in (loaded.unet, loaded.vae.model, loaded.text_encoder):
        assert all(not p.is_meta for p in module.parameters())
    assert count_parameters(loaded.text_encoder) >= TEXT_ENCODER_PARAMETERS.get(family, 0)
    for name, p in loaded.unet.named_parameters():
        assert torch.equal(p, raw[f"model.diffusion_model.{name}"].float()), name
    if family == "sd21":  # random weights: ComfyUI's heuristic decides, as it would on this file
        bias = raw["model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"].float()
        assert info.prediction == ("v" if bias.std(correction=0).item() > V_PREDICTION_STD_THRESHOLD else "eps")
    del raw
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g)
    context = torch.randn(1, 77, full.context_dim, generator=g)
    with torch.no_grad():
        out = loaded.unet(x, torch.tensor([500.0]), context)
    assert out.shape == x.shape and torch.isfinite(out).all()
    image = loaded.vae.decode(torch.randn(1, 4, 8, 8, generator=g))
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


@pytest.mark.parametrize("family", ["sd15", "sd21"])
def test_reference_unet_and_vae_match_diffusers(reference_files: dict[str, Path], family: str) -> None:
    config = UNetConfig.sd2() if family == "sd21" else UNetConfig.sd1()
    tensors = read_state_dict(
        reference_files[family], dtype=torch.float32,
    )
    checkpoint = {k: v for k, v in tensors.items() if k.startswith(("model.diffusion_model.", "first_stage_model."))}
    del tensors
    parts = split_components(checkpoint)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([999.0, 40.0])
    context = torch.randn(2, 77, config.context_dim, generator=g)
    with torch.no_grad():
        ours = build_unet(config, parts.unet)(x, t, context)
        ref = diffusers_unet(checkpoint, config)(x, t, encoder_hidden_states=context).sample
    assert (ours - ref).abs().max().item() <= 1e-4
    z = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        ours_img = build_vae(VAEConfig.sd(), parts.vae).decode(z)
        ref_img = diffusers_vae(checkpoint, VAEConfig.sd(), config).decode(z).sample
    assert (ours_img - ref_img).abs().max().item() <= 1e-4
