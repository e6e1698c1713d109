"""The family registry (diffusion/families/): detection by priority, configs read off shapes, the per-family
declarations, and the real SDXL/refiner key layouts of ../shared/reference built from `UNetConfig.sdxl*()`."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffusion.files.checkpoint import CheckpointError
from diffusion.families import (
    Evidence,
    ModelFamily,
    detect_checkpoint,
    families,
    family_for,
    get_family,
    read_unet_shapes,
    register,
    unet_config_from_state_dict,
)
from diffusion.families import registry
from diffusion.families import latent_format_for
from diffusion.files.latent_formats import SD15, SDXL
from diffusion.networks.unet import UNetConfig, UNetModel, count_parameters


def meta_state_dict(config: UNetConfig) -> dict[str, torch.Tensor]:
    """A UNet's tensors on `meta` (shapes only: detection never reads values except SD2's heuristic)."""
    with torch.device("meta"):
        return UNetModel(config).state_dict()


# SSD-1B (Segmind's distillation): fewer transformer blocks per level and a middle block without a transformer.
SSD_1B = replace(UNetConfig.sdxl(), depth_in=(0, 0, 2, 2, 4, 4), depth_out=(4, 4, 4, 2, 2, 1, 0, 0, 0),
                 depth_middle=-1, transformer_depth=4)


@pytest.mark.parametrize("config,name", [
    (UNetConfig.sd1(), "sd1"), (UNetConfig.sd1(9), "sd1"), (UNetConfig.sd2(), "sd2"),
    (replace(UNetConfig.sd2(), adm_in_channels=2048), "sd2"),  # SD2.1 unCLIP-H
    (UNetConfig.sdxl(), "sdxl"), (UNetConfig.sdxl(9), "sdxl"), (SSD_1B, "sdxl"),
    (UNetConfig.sdxl_refiner(), "sdxl_refiner"),
])
def test_full_size_unets_detected_and_configs_read_back(config: UNetConfig, name: str) -> None:
    unet = meta_state_dict(config)
    assert family_for(Evidence(read_unet_shapes(unet))).name == name
    assert unet_config_from_state_dict(unet) == config


def test_sdxl_configs_build_the_real_key_layouts(shared_dir: Path) -> None:
    for keys_file, config in (("sdxl_keys.json", UNetConfig.sdxl()), ("sdxl_refiner_keys.json",
                                                                      UNetConfig.sdxl_refiner())):
        tensors = json.loads((shared_dir / "reference" / keys_file).read_text())["tensors"]
        real = {k[len("model.diffusion_model."):]: tuple(v[0]) for k, v in tensors.items()
                if k.startswith("model.diffusion_model.")}
        ours = {k: tuple(v.shape) for k, v in meta_state_dict(config).items()}
        assert ours == real, keys_file


def test_sdxl_unet_parameter_counts() -> None:
    with torch.device("meta"):
        assert count_parameters(UNetModel(UNetConfig.sdxl())) == 2_567_463_684
        assert count_parameters(UNetModel(UNetConfig.sdxl_refiner())) == 2_259_526_660


def test_family_declarations() -> None:
    assert [f.name for f in families()][:4] == ["sdxl_refiner", "sdxl", "sd2", "sd1"]
    assert get_family("sd15") is get_family("sd1") and get_family("SD21").name == "sd2"
    assert get_family("sdxl").text_encoders == ("clip_l", "clip_g")
    assert get_family("sdxl_refiner").text_encoders == ("clip_g",)
    assert get_family("sd2").latent_format is SD15 and latent_format_for("sdxl_refiner") is SDXL
    assert get_family("sdxl").latent_format.scale_factor == 0.13025
    assert get_family("sdxl").adm_channels == 2816 and get_family("sdxl_refiner").adm_channels == 2560
    with pytest.raises(KeyError, match="unknown model family 'sd9'"):
        get_family("sd9")
    with pytest.raises(ValueError, match="known"):
        latent_format_for("sd9")


def test_unknown_unet_names_what_was_found() -> None:
    odd = replace(UNetConfig.sdxl(), context_dim=1280)  # SDXL layout, refiner width, base ADM: no family
    with pytest.raises(CheckpointError, match=r"context width 1280, ADM width 2816.*known families"):
        unet_config_from_state_dict(meta_state_dict(odd))


def test_tiny_widths_follow_the_text_tower_hint() -> None:
    tiny_xl = replace(UNetConfig.sdxl(), model_channels=32, context_dim=96, adm_in_channels=64 + 1536,
                      depth_in=(0, 0, 1, 1, 2, 2), depth_out=(2, 2, 2, 1, 1, 1, 0, 0, 0), depth_middle=2,
                      transformer_depth=2)
    shapes = read_unet_shapes(meta_state_dict(tiny_xl))
    assert family_for(Evidence(shapes)).name == "sdxl"  # UNet-only: the SDXL layout decides
    assert family_for(Evidence(shapes, "sdxl_refiner")).name == "sdxl_refiner"
    tiny_sd2 = UNetConfig.tiny("sd2", context_dim=96)
    assert family_for(Evidence(read_unet_shapes(meta_state_dict(tiny_sd2)), "sd2")).name == "sd2"


def test_a_new_family_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    base = get_family("sd1")
    register(ModelFamily(
        name="wide_sd1", description="a test family", priority=100,
        matches=lambda ev: ev.shapes.context_dim == 4096, unet_config=base.unet_config,
        text_encoders=("clip_l",), latent_format=SDXL, clip_type="stable_diffusion",
    ))
    sd = {"model.diffusion_model." + k: v for k, v in
          meta_state_dict(replace(UNetConfig.sd1(), context_dim=4096)).items()}
    info = detect_checkpoint(sd)
    assert info.family == "wide_sd1" and info.unet.context_dim == 4096 and info.text_encoder is None
    assert latent_format_for("wide_sd1") is SDXL
