"""bf16 only where the CPU computes it natively: the precision decision with injected CPU flags."""
from __future__ import annotations

import logging

import pytest
import torch

from executor.memory import MemoryPolicy, ModelManager

NO_BF16 = frozenset({"avx2", "fma", "sse4_2"})


@pytest.mark.parametrize("flags", [frozenset({"avx512_bf16"}), frozenset({"amx_bf16", "amx_tile"})])
def test_bf16_kept_where_native(flags: frozenset[str]) -> None:
    mm = ModelManager(MemoryPolicy(cpu=True, precision="bf16"))
    mm.cpu_flags = flags
    assert mm.dtype_for("unet") == torch.bfloat16 and mm.dtype_for("vae") == torch.bfloat16
    auto = ModelManager(MemoryPolicy(cpu=True, precision="auto"))
    auto.cpu_flags = flags
    assert auto.dtype_for("unet") == torch.bfloat16 and auto.dtype_for("vae") == torch.bfloat16
    assert auto.dtype_for("text_encoder") == torch.float32


def test_bf16_falls_back_to_fp32_once_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="executor.memory")
    mm = ModelManager(MemoryPolicy(cpu=True, precision="bf16", vae_precision="bf16"))
    mm.cpu_flags = NO_BF16
    assert {mm.dtype_for(k) for k in ("unet", "vae", "text_encoder")} == {torch.float32}
    said = [r for r in caplog.records if "no bf16 instructions" in r.getMessage()]
    assert len(said) == 1
    auto = ModelManager(MemoryPolicy(cpu=True, precision="auto"))
    auto.cpu_flags = NO_BF16
    assert auto.dtype_for("unet") == torch.float32 and auto.dtype_for("vae") == torch.float32


def test_other_precisions_untouched_without_bf16() -> None:
    mm = ModelManager(MemoryPolicy(cpu=True, precision="fp16"))
    mm.cpu_flags = NO_BF16
    assert mm.dtype_for("unet") == torch.float16
