"""fp8 MMDiT files: float8_e4m3fn linear weights stay fp8 in memory and are upcast per layer; ComfyUI "scaled fp8"
(per-layer `scale_weight`, the `scaled_fp8` marker) gives weight = stored · scale. Compared with the same network
whose weights were upcast up front; and sampled end to end through the executor."""
from __future__ import annotations

from pathlib import Path

import torch

from diffusion.files.assemble import Precision, load_checkpoint_modules
from tests.fixtures.tiny_sd3 import TINY_SD3, tiny_sd3_state_dict
from tests.fixtures.tiny_sdxl import L_WIDTH, G_WIDTH, write

PREFIX = "model.diffusion_model."


def _fp8_file(tmp_path: Path, scaled: bool) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = {k: v.float() for k, v in tiny_sd3_state_dict().items()}
    upcast = dict(sd)
    for key in [k for k in sd if k.startswith(PREFIX) and k.endswith(".weight") and sd[k].ndim == 2]:
        scale = sd[key].abs().max() / 448.0 if scaled else torch.tensor(1.0)
        stored = (sd[key] / scale).to(torch.float8_e4m3fn)
        sd[key] = stored
        upcast[key] = stored.float() * scale
        if scaled:
            sd[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
    if scaled:
        sd[PREFIX + "scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return write(sd, tmp_path / ("scaled.safetensors" if scaled else "fp8.safetensors")), upcast


def _compare(tmp_path: Path, scaled: bool) -> None:
    path, upcast = _fp8_file(tmp_path, scaled)
    model = load_checkpoint_modules(path, Precision())["unet"].diffusion_model
    qkv = model.joint_blocks[0].x_block.attn.qkv
    assert qkv.weight.dtype == torch.float8_e4m3fn and (qkv.scale_weight is not None) == scaled
    assert model.x_embedder.proj.weight.dtype == torch.float32
    ref_path = write(upcast, tmp_path / "upcast.safetensors")
    ref = load_checkpoint_modules(ref_path, Precision())["unet"].diffusion_model
    torch.manual_seed(0)
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([600.0])
    ctx, y = torch.randn(1, 5, TINY_SD3.context_dim), torch.randn(1, L_WIDTH + G_WIDTH)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, context=ctx, y=y), ref(x, t, context=ctx, y=y), rtol=1e-5, atol=1e-5)


def test_fp8_weights_kept_and_upcast(tmp_path: Path) -> None:
    _compare(tmp_path, scaled=False)


def test_scaled_fp8(tmp_path: Path) -> None:
    _compare(tmp_path, scaled=True)
