"""config.parse_args: ComfyUI flag names, directories, aliases, the `run` command, warnings."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import REPO_ROOT, Config, Override, parse_args, parse_override


def test_defaults_put_every_folder_under_the_repository() -> None:
    config = parse_args([], {})
    assert config.listen == "127.0.0.1" and config.port == 8188
    assert config.base_directory == REPO_ROOT == Path(__file__).resolve().parents[1]
    for name in ("models", "input", "output", "temp", "user"):
        assert getattr(config, f"{name}_directory") == REPO_ROOT / name
    assert config.command == "serve" and config.workflow is None and config.overrides == ()
    assert config.max_upload_size == 100 and config.max_history == 10000
    assert config.precision is None and config.vram_mode == "auto" and config.preview_method == "auto"
    assert config.warnings == ()


def test_config_is_frozen() -> None:
    config = parse_args([], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_parsing_creates_no_directory(tmp_path: Path) -> None:
    base = tmp_path / "loom"
    parse_args(["--base-directory", str(base)], {})
    assert not base.exists()


def test_base_directory_moves_every_folder_and_single_flags_override(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "out"
    config = parse_args(["--base-directory", str(tmp_path), "--output-directory", str(out)], {})
    assert config.base_directory == tmp_path
    assert config.models_directory == tmp_path / "models"
    assert config.input_directory == tmp_path / "input"
    assert config.temp_directory == tmp_path / "temp"
    assert config.user_directory == tmp_path / "user"
    assert config.output_directory == out


def test_relative_and_home_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_args(["--base-directory", "rel", "--input-directory", "~/pics"], {"HOME": "/home/someone"})
    assert config.base_directory == tmp_path / "rel"
    assert config.input_directory == Path("/home/someone/pics")


def test_environment_supplies_base_directory_and_token(tmp_path: Path) -> None:
    config = parse_args([], {"LOOM_BASE_DIRECTORY": str(tmp_path), "LOOM_AUTH_TOKEN": "s3cret"})
    assert config.base_directory == tmp_path and config.auth_token == "s3cret"
    assert parse_args(["--auth-token", "flag"], {"LOOM_AUTH_TOKEN": "env"}).auth_token == "flag"


def test_listen_bare_means_all_interfaces() -> None:
    assert parse_args(["--listen"], {}).listen == "0.0.0.0"
    assert parse_args(["--listen", "10.0.0.2", "--port", "9000"], {}).listen == "10.0.0.2"
    assert parse_args(["--listen", "run", "wf.json"], {}).command == "run"


def test_server_flags() -> None:
    config = parse_args(["--enable-cors-header", "--max-upload-size", "5", "--max-history", "7", "--front-end",
                         "comfyui", "--dont-print-server", "--verbose", "--auto-launch"], {})
    assert config.enable_cors_header == "*" and config.max_upload_size == 5 and config.max_history == 7
    assert config.front_end == "comfyui" and config.dont_print_server and config.verbose
    assert config.log_level == "DEBUG" and config.auto_launch
    assert parse_args(["--enable-cors-header", "http://a.b"], {}).enable_cors_header == "http://a.b"
    assert not parse_args(["--auto-launch", "--disable-auto-launch"], {}).auto_launch
    assert parse_args(["--verbose", "WARNING"], {}).log_level == "WARNING"


def test_cache_and_memory_flags() -> None:
    config = parse_args(["--cache-ram", "2.5", "--cache-lru", "3", "--lowvram", "--reserve-vram", "1.5",
                         "--precision", "bf16", "--vae-precision", "fp32", "--compile",
                         "--preview-method", "latent2rgb"], {})
    assert config.cache_ram == 2.5 and config.cache_lru == 3 and config.lowvram
    assert config.vram_mode == "lowvram" and config.reserve_vram == 1.5
    assert config.precision == "bf16" and config.vae_precision == "fp32" and config.unet_precision is None
    assert config.compile and config.preview_method == "latent2rgb"
    assert parse_args(["--cache-none"], {}).cache_none
    assert parse_args(["--cpu"], {}).vram_mode == "cpu"
    assert parse_args(["--cache-classic"], {}).cache_classic


def test_vram_modes_are_exclusive() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--lowvram", "--highvram"], {})


@pytest.mark.parametrize("flags, field, value", [
    (["--force-fp16"], "precision", "fp16"),
    (["--force-fp32"], "precision", "fp32"),
    (["--fp16-unet"], "unet_weight_dtype", "fp16"),
    (["--bf16-unet"], "unet_weight_dtype", "bf16"),
    (["--fp8_e4m3fn-unet"], "unet_weight_dtype", "fp8_e4m3fn"),
    (["--fp8_e5m2-unet"], "unet_weight_dtype", "fp8_e5m2"),
    (["--fp32-vae"], "vae_weight_dtype", "fp32"),
    (["--bf16-vae"], "vae_weight_dtype", "bf16"),
    (["--fp16-vae"], "vae_weight_dtype", "fp16"),
    (["--fp16-text-enc"], "text_enc_weight_dtype", "fp16"),
    (["--fp32-text-enc"], "text_enc_weight_dtype", "fp32"),
    (["--fp8_e4m3fn-text-enc"], "text_enc_weight_dtype", "fp8_e4m3fn"),
    (["--fp16-vae", "--vae-precision", "bf16"], "vae_precision", "bf16"),
    (["--fp16-unet"], "unet_precision", None),
])
def test_comfyui_precision_aliases(flags: list[str], field: str, value: str) -> None:
    assert getattr(parse_args(flags, {}), field) == value


def test_extra_model_paths_and_custom_node_flags(tmp_path: Path) -> None:
    config = parse_args(["--extra-model-paths-config", "a.yaml", "b.yaml", "--extra-model-paths-config",
                         str(tmp_path / "c.yaml"), "--custom-nodes-directory", str(tmp_path),
                         "--disable-custom-node", "pack1", "--disable-custom-node", "pack2",
                         "--disable-all-custom-nodes"], {})
    assert [p.name for p in config.extra_model_paths_config] == ["a.yaml", "b.yaml", "c.yaml"]
    assert all(p.is_absolute() for p in config.extra_model_paths_config)
    assert config.custom_nodes_directories == (tmp_path,)
    assert config.disabled_custom_nodes == ("pack1", "pack2") and config.disable_all_custom_nodes


def test_run_command_with_overrides_anywhere(tmp_path: Path) -> None:
    wf = tmp_path / "graph.json"
    config = parse_args(["--cpu", "run", str(wf), "--set", "3.seed=42", "--set", "6.text=a = b", "--port", "1"],
                        {})
    assert config.command == "run" and config.workflow == wf and config.cpu and config.port == 1
    assert config.overrides == (Override("3", "seed", "42"), Override("6", "text", "a = b"))
    assert config.overrides[0].node == "3" and config.overrides[0].value == "42"


@pytest.mark.parametrize("argv", [["run"], ["run", "a.json", "b.json"], ["serve"], ["--set", "1.a=2"],
                                  ["run", "a.json", "--set", "novalue"], ["run", "a.json", "--set", "1=2"],
                                  ["--port", "notanumber"]])
def test_bad_command_lines_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv, {})
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_parse_override_outside_argparse() -> None:
    assert parse_override("12:3.cfg=7.5") == Override("12:3", "cfg", "7.5")
    assert parse_override("My v1.5 Loader.ckpt_name=a=b.safetensors") == Override(
        "My v1.5 Loader", "ckpt_name", "a=b.safetensors")
    with pytest.raises(ValueError, match="NODE.INPUT=VALUE"):
        parse_override("nodot=1")


def test_unknown_and_meaningless_comfyui_flags_are_warnings() -> None:
    config = parse_args(["--use-pytorch-cross-attention", "--preview-size", "256", "--fast", "--no-such-flag"], {})
    text = "\n".join(config.warnings)
    assert "--use-pytorch-cross-attention" in text and "--preview-size" in text and "--fast" in text
    assert "--no-such-flag" in text
    assert isinstance(config, Config)


def test_comfyui_frontend_flags() -> None:
    assert parse_args(["--front-end", "official"], {}).front_end == "comfyui"
    rooted = parse_args(["--front-end-root", "/srv/frontend/dist"], {})
    assert rooted.front_end == "comfyui" and str(rooted.front_end_root) == "/srv/frontend/dist"
    versioned = parse_args(["--front-end-version", "Comfy-Org/ComfyUI_frontend@latest"], {})
    assert versioned.front_end == "comfyui"
    assert any("downloads no frontend" in w for w in versioned.warnings)
    assert parse_args([], {}).front_end == "loom"
