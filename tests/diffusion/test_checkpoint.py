"""Reading model files, splitting checkpoints, detecting families and file kinds (diffusion/files/checkpoint.py,
diffusion/families.py, diffusion/files/loading.py), through real files written by the tiny-checkpoint fixtures."""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.files.checkpoint import (
    CheckpointError,
    read_metadata,
    read_state_dict,
    split_components,
)
from diffusion.families import (
    detect_checkpoint,
    detect_file_kind,
    unet_config_from_state_dict,
    vae_config_from_state_dict,
)
from diffusion.files.loading import load_checkpoint, load_unet_file, load_vae_file
from diffusion.networks.unet import UNetConfig, UNetModel
from diffusion.networks.vae import AutoencoderKL, VAEConfig
from tests.fixtures.tiny_checkpoints import (
    tiny_checkpoint_state_dict,
    tiny_unet_config,
    write_tiny_checkpoint,
    write_tiny_text_encoder,
    write_tiny_unet,
    write_tiny_vae,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fp16 tiny checkpoint per family, written once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    families = ("sd15", "sd15_inpaint", "sd21", "sd21_v")
    return {fam: write_tiny_checkpoint(root / f"{fam}.safetensors", fam) for fam in families}


# --- reading -------------------------------------------------------------------------------------------------


def test_safetensors_cast_while_reading(tmp_path: Path) -> None:
    src = {"a": torch.randn(3, 5).half(), "b": torch.randn(7).bfloat16(), "ids": torch.arange(4)[None],
           "scalar": torch.tensor(0.5, dtype=torch.float16)}
    path = tmp_path / "t.safetensors"
    save_file(src, str(path), metadata={"modelspec.prediction_type": "v"})
    same = read_state_dict(path)
    assert {k: v.dtype for k, v in same.items()} == {k: v.dtype for k, v in src.items()}
    assert all(torch.equal(same[k], src[k]) for k in src)
    as32 = read_state_dict(path, dtype=torch.float32)
    assert as32["a"].dtype == torch.float32 and as32["ids"].dtype == torch.int64
    assert torch.equal(as32["a"], src["a"].float()) and as32["scalar"].shape == ()
    per_key = read_state_dict(path, dtype=lambda k: torch.bfloat16 if k == "a" else None)
    assert per_key["a"].dtype == torch.bfloat16 and per_key["b"].dtype == torch.bfloat16
    assert read_metadata(path) == {"modelspec.prediction_type": "v"}


def test_ckpt_with_state_dict_wrapper_and_legacy_format(tmp_path: Path) -> None:
    sd = {"x.weight": torch.randn(4, 4), "y": torch.arange(3)}
    zip_path, legacy_path = tmp_path / "m.ckpt", tmp_path / "m.pt"
    torch.save({"state_dict": sd, "global_step": 7, "epoch": 1}, zip_path)
    torch.save(sd, legacy_path, _use_new_zipfile_serialization=False)
    for path in (zip_path, legacy_path):
        out = read_state_dict(path, dtype=torch.float16)
        assert set(out) == set(sd) and out["x.weight"].dtype == torch.float16
        assert torch.equal(out["x.weight"], sd["x.weight"].half()) and out["y"].dtype == torch.int64
    assert read_metadata(zip_path) == {}


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_lightning_callback_state_is_read_without_lightning(tmp_path: Path) -> None:
    # SD1 training checkpoints pickle PyTorch Lightning's ModelCheckpoint; simulate its module only while saving.
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.best = 1.0

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", module.__name__]
    for name in names[:-1]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[module.__name__] = module
    try:
        torch.save({"state_dict": {"w": torch.ones(2)}, "callbacks": {"cb": ModelCheckpoint()}}, tmp_path / "l.ckpt")
    finally:
        for name in names:
            del sys.modules[name]
    assert torch.equal(read_state_dict(tmp_path / "l.ckpt")["w"], torch.ones(2))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model file type"):
        read_state_dict(tmp_path / "model.onnx")


# --- splitting and detection ---------------------------------------------------------------------------------


def test_split_components_strips_prefixes_and_sorts_extras() -> None:
    sd = tiny_checkpoint_state_dict("sd15", torch.float16)
    sd["something.else"] = torch.zeros(1)
    parts = split_components(sd)
    assert "input_blocks.0.0.weight" in parts.unet and "decoder.conv_in.weight" in parts.vae
    assert "transformer.text_model.final_layer_norm.weight" in parts.text_encoder
    assert {"betas", "alphas_cumprod", "model_ema.decay"} <= set(parts.extras)
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in parts.extras
    assert list(parts.unknown) == ["something.else"]
    assert parts.report().unknown == ["something.else"]
    sd2 = split_components(tiny_checkpoint_state_dict("sd21", torch.float16))
    assert "model.transformer.resblocks.0.attn.in_proj_weight" in sd2.text_encoder


@pytest.mark.parametrize("family", ["sd15", "sd15_inpaint", "sd21", "sd21_v"])
def test_tiny_checkpoint_loads_with_every_key_consumed(tiny_files: dict[str, Path], family: str) -> None:
    path = tiny_files[family]
    loaded = load_checkpoint(path, dtype=torch.float32)
    info = loaded.info
    assert info.unet == tiny_unet_config(family) and info.vae == VAEConfig.tiny()
    assert info.family == ("sd2" if family.startswith("sd21") else "sd1")
    assert info.inpaint == (family == "sd15_inpaint")
    assert info.prediction == ("v" if family == "sd21_v" else "eps")
    assert loaded.report.unknown == [] and loaded.report.missing == []
    assert loaded.text_encoder is not None and loaded.vae is not None
    raw = read_state_dict(path)
    used = {f"model.diffusion_model.{k}" for k in loaded.unet.state_dict()}
    used |= {f"first_stage_model.{k}" for k in loaded.vae.model.state_dict()}
    leftover = set(raw) - used - set(loaded.report.ignored)
    assert all(k.startswith("cond_stage_model.") for k in leftover)
    for name, p in loaded.unet.named_parameters():
        assert torch.equal(p, raw[f"model.diffusion_model.{name}"].float()), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_precision_is_kept_without_fp32_copies(tiny_files: dict[str, Path], dtype: torch.dtype) -> None:
    loaded = load_checkpoint(tiny_files["sd15"], dtype=dtype, load_text_encoder=False)
    assert {p.dtype for p in loaded.unet.parameters()} == {dtype}
    assert {p.dtype for p in loaded.vae.model.parameters()} == {dtype}
    assert not any(p.requires_grad for p in loaded.unet.parameters())
    if dtype == torch.float16:
        return  # CPU half-precision convolutions are slow; fp16 runs are for GPUs
    out = loaded.unet(torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 77, 128))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_prediction_from_metadata_and_override(tmp_path: Path) -> None:
    path = write_tiny_checkpoint(tmp_path / "m.safetensors", "sd21", metadata={"modelspec.prediction_type": "v"})
    assert load_checkpoint(path, load_text_encoder=False).info.prediction == "v"
    assert load_checkpoint(path, prediction="eps", load_text_encoder=False).info.prediction == "eps"


def test_ckpt_checkpoint_loads_like_safetensors(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    a = load_checkpoint(write_tiny_checkpoint(tmp_path / "m.ckpt", "sd15"), load_text_encoder=False)
    b = load_checkpoint(tiny_files["sd15"], load_text_encoder=False)
    assert a.info == b.info
    assert all(torch.equal(x, y) for x, y in zip(a.unet.parameters(), b.unet.parameters()))


def test_unknown_layout_error_says_what_was_found(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"backbone.layer1.weight": torch.zeros(2, 2), "head.fc.bias": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="backbone.layer1"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="unknown model layout"):
        detect_file_kind(read_state_dict(path))


def test_truncated_unet_is_reported() -> None:
    sd = tiny_checkpoint_state_dict("sd15", torch.float16)
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(CheckpointError, match="out.2.weight"):
        detect_checkpoint(sd)


@pytest.mark.parametrize("prefixed", [False, True])
def test_component_files(tmp_path: Path, prefixed: bool) -> None:
    unet_path = write_tiny_unet(tmp_path / "u.safetensors", "sd21", prefixed=prefixed)
    vae_path = write_tiny_vae(tmp_path / "v.safetensors", prefixed=prefixed)
    te_path = write_tiny_text_encoder(tmp_path / "t.safetensors", "sd15")
    assert detect_file_kind(read_state_dict(vae_path)) == "vae"
    assert detect_file_kind(read_state_dict(te_path)) == "text_encoder"
    assert detect_file_kind(read_state_dict(unet_path)) == ("checkpoint" if prefixed else "unet")
    unet, family, prediction = load_unet_file(unet_path, dtype=torch.bfloat16)
    assert unet.config == tiny_unet_config("sd21") and prediction == "eps" and family == "sd2"
    assert next(unet.parameters()).dtype == torch.bfloat16
    vae = load_vae_file(vae_path)
    assert vae.model.config == VAEConfig.tiny()
    with pytest.raises(CheckpointError, match="not a UNet"):
        load_unet_file(vae_path)


def test_vae_file_with_training_leftovers_and_checkpoint_vae(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    from tests.fixtures.tiny_checkpoints import tiny_vae_state_dict

    sd = tiny_vae_state_dict()
    sd["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)
    save_file(sd, str(tmp_path / "vae.safetensors"))
    assert load_vae_file(tmp_path / "vae.safetensors").model.config == VAEConfig.tiny()
    assert load_vae_file(tiny_files["sd15"]).model.config == VAEConfig.tiny()


# --- the real key lists (shapes only, on meta) -----------------------------------------------------------------


def _meta_state_dict(name: str) -> tuple[str, dict[str, torch.Tensor]]:
    path = SHARED / "reference" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    spec = json.loads(path.read_text())
    dtypes = {"F16": torch.float16, "F32": torch.float32, "I64": torch.int64, "I32": torch.int32}
    return spec["family"], {
        k: torch.empty(shape, dtype=dtypes[dt], device="meta") for k, (shape, dt) in spec["tensors"].items()
    }


@pytest.mark.parametrize(("name", "expected"), [("sd15_keys.json", UNetConfig.sd1()), ("sd21_keys.json", UNetConfig.sd2())])
def test_reference_key_lists_map_onto_the_networks(name: str, expected: UNetConfig) -> None:
    _, sd = _meta_state_dict(name)
    parts = split_components(sd)
    assert parts.unknown == {}
    assert set(parts.extras) <= set(parts.report().ignored)
    assert unet_config_from_state_dict(parts.unet, "sd2" if "sd21" in name else "sd1") == expected
    assert vae_config_from_state_dict(parts.vae) == VAEConfig.sd()
    assert detect_file_kind(sd) == "checkpoint"
    with torch.device("meta"):
        unet, vae = UNetModel(expected), AutoencoderKL(VAEConfig.sd())
    for module, tensors in ((unet, parts.unet), (vae, parts.vae)):
        expected_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert expected_shapes == {k: tuple(v.shape) for k, v in tensors.items()}


def test_unet_heads_rule_follows_context_width_not_text_tower_layout() -> None:
    # An SD2 checkpoint whose text tower was re-saved in the HF layout is still an SD2 UNet (64-channel heads).
    _, sd21 = _meta_state_dict("sd21_keys.json")
    _, sd15 = _meta_state_dict("sd15_keys.json")
    mixed = {k: v for k, v in sd21.items() if not k.startswith("cond_stage_model.")}
    mixed.update({k: v for k, v in sd15.items() if k.startswith("cond_stage_model.")})
    info = detect_checkpoint(mixed, {"modelspec.prediction_type": "v"})
    assert info.unet == UNetConfig.sd2() and info.family == "sd2" and info.text_encoder == "sd1"
    assert info.prediction == "v" and info.name == "sd2-v"
