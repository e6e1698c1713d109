"""Weights stored in another dtype than they compute in (diffusion/networks/weight_cast.py, ModelManager.weight_dtype_for):
fp8 UNet storage halves the resident matmul bytes of fp16 and stays close to the fp16-weight output; ComfyUI's
--fp16-unet-style flags store in that dtype and compute in fp32 on a CPU (same numbers as fp32 within storage
rounding) and mean fp16/bf16 arithmetic on a GPU-like device; fp8 checkpoints stay fp8 through the executor."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.files.assemble import Precision, load_checkpoint_modules, load_unet_module
from diffusion.networks.weight_cast import weight_bytes
from executor.devices import FakeDevice
from executor.memory import MemoryPolicy, ModelManager
from executor.run import Executor
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint, write_tiny_unet
from tests.fixtures.tiny_sdxl import tiny_sdxl_state_dict
from tests.fixtures.tiny_sdxl import write as write_sdxl
from tests.nodes.sd_env import SDEnv, txt2img

PREFIX = "model.diffusion_model."


def _inputs(context_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([700.0, 300.0]),
            torch.randn(2, 5, context_dim, generator=gen))


def _run(model: torch.nn.Module) -> torch.Tensor:
    net = model.diffusion_model
    x, t, c = _inputs(net.config.context_dim)
    with torch.no_grad():
        return net(x, t, c)


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_unet_halves_weight_bytes_and_stays_close(tmp_path: Path, fp8: torch.dtype) -> None:
    path = write_tiny_unet(tmp_path / "u.safetensors")
    half = load_unet_module(path, torch.float32, torch.float16)
    quarter = load_unet_module(path, torch.float32, fp8)
    conv = quarter.diffusion_model.input_blocks[0][0]
    assert conv.weight.dtype == fp8 and conv.bias.dtype == torch.float32
    assert weight_bytes(quarter, matmul_only=True) * 2 == weight_bytes(half, matmul_only=True)
    assert weight_bytes(quarter) < 0.56 * weight_bytes(half)
    ref, out = _run(half), _run(quarter)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    rel = (out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()
    assert rel < (0.2 if fp8 == torch.float8_e4m3fn else 0.4)  # random weights: rounding adds up over the layers
    # exactly the network whose fp32 weights were rounded through fp8 up front: the per-layer upcast loses nothing
    rounded = load_unet_module(path, torch.float32)
    with torch.no_grad():
        for name, p in rounded.diffusion_model.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                p.copy_(p.to(fp8).float())
    torch.testing.assert_close(out, _run(rounded), rtol=1e-5, atol=1e-5)


def test_cpu_flags_store_half_and_compute_fp32(tmp_path: Path) -> None:
    mm = ModelManager(MemoryPolicy(cpu=True, unet_weight_dtype="fp16", vae_weight_dtype="bf16",
                                   text_enc_weight_dtype="fp16"))
    assert {mm.dtype_for(k) for k in ("unet", "vae", "text_encoder")} == {torch.float32}
    assert [mm.weight_dtype_for(k) for k in ("unet", "vae", "text_encoder")] == [torch.float16, torch.bfloat16,
                                                                                 torch.float16]
    path = write_tiny_checkpoint(tmp_path / "c.safetensors")  # fp16 values: fp32 and fp16 storage hold the same
    stored = Precision(unet_weights=torch.float16, vae_weights=torch.bfloat16, text_encoder_weights=torch.float16)
    half, full = load_checkpoint_modules(path, stored), load_checkpoint_modules(path, Precision())
    assert half["unet"].diffusion_model.input_blocks[0][0].weight.dtype == torch.float16
    assert half["unet"].diffusion_model.dtype == torch.float32
    assert weight_bytes(half["unet"].diffusion_model) * 2 == weight_bytes(full["unet"].diffusion_model)
    torch.testing.assert_close(_run(half["unet"]), _run(full["unet"]), rtol=1e-5, atol=1e-5)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = half["vae"].decode(latent), full["vae"].decode(latent.to(torch.bfloat16).float())
    assert half["vae"].decoder.conv_in.weight.dtype == torch.bfloat16 and a.dtype == torch.float32
    assert (a - b).abs().max() < 0.05  # bf16-rounded weights, fp32 arithmetic


def test_cpu_text_encoders_are_stored_in_fp16_like_comfyui(tmp_path: Path) -> None:
    """ComfyUI's text_encoder_dtype on a CPU is fp16 (computed in fp32 by its manual cast); --fp32-text-enc keeps
    fp32. The tiny file holds fp16 values, so the fp16-stored tower encodes exactly as an fp32-stored one."""
    cpu = ModelManager(MemoryPolicy(cpu=True))
    assert cpu.dtype_for("text_encoder") == torch.float32 and cpu.weight_dtype_for("text_encoder") == torch.float16
    assert ModelManager(MemoryPolicy(cpu=True, text_enc_weight_dtype="fp32")).weight_dtype_for("text_encoder") \
        == torch.float32
    assert cpu.weight_dtype_for("unet") == torch.float32  # only the text towers
    env = SDEnv(tmp_path / "half")
    full = SDEnv(tmp_path / "full", policy=MemoryPolicy(text_enc_weight_dtype="fp32"))
    prompt = txt2img()
    clip, clip32 = env.value(prompt, "4", 1), full.value(prompt, "4", 1)
    floats = [p for p in clip.handle.model.parameters() if p.is_floating_point()]
    assert floats and {p.dtype for p in floats} == {torch.float16}
    assert {p.dtype for p in clip32.handle.model.parameters() if p.is_floating_point()} == {torch.float32}
    assert weight_bytes(clip.handle.model) * 2 == weight_bytes(clip32.handle.model)
    (cond, extra), = env.value(prompt, "6", 0)
    (cond32, extra32), = full.value(prompt, "6", 0)
    assert cond.dtype == torch.float32
    torch.testing.assert_close(cond, cond32, rtol=0, atol=0)
    torch.testing.assert_close(extra["pooled_output"], extra32["pooled_output"], rtol=0, atol=0)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_text_towers_read_in_their_own_dtype_beside_a_bf16_unet(tmp_path: Path, family: str) -> None:
    """`--precision auto` on a bf16 CPU: the UNet in bf16, the text towers stored in fp16 hold the file's fp16
    values exactly (SDXL's `conditioner.` keys were read in the UNet's bf16 first: rounded, and a whole second
    copy of both towers while they were built)."""
    path = tmp_path / f"{family}.safetensors"
    if family == "sdxl":
        write_sdxl(tiny_sdxl_state_dict(dtype=torch.float16), path)
    else:
        write_tiny_checkpoint(path, family, torch.float16)
    stored = load_file(str(path))
    modules = load_checkpoint_modules(path, Precision(unet=torch.bfloat16, vae=torch.bfloat16,
                                                      text_encoder=torch.float32,
                                                      text_encoder_weights=torch.float16))
    clip = modules["clip"]
    assert {p.dtype for p in clip.parameters() if p.is_floating_point()} == {torch.float16}
    file_values = {t.float().sum().item() for k, t in stored.items()
                   if k.startswith(("cond_stage_model.", "conditioner.")) and t.is_floating_point() and t.dim() == 2
                   and "q_proj" not in k and "k_proj" not in k and "v_proj" not in k}
    tower_values = {p.float().sum().item() for p in clip.parameters() if p.dim() == 2}
    assert file_values and file_values <= tower_values  # every 2-D weight exactly as the file holds it


def test_flags_mean_arithmetic_on_an_accelerator() -> None:
    mm = ModelManager(MemoryPolicy(unet_weight_dtype="bf16", vae_weight_dtype="fp32"), device=FakeDevice(1 << 30))
    assert mm.dtype_for("unet") == torch.bfloat16 and mm.weight_dtype_for("unet") == torch.bfloat16
    assert mm.dtype_for("vae") == torch.float32
    fp8 = ModelManager(MemoryPolicy(cpu=True, unet_weight_dtype="fp8_e5m2"))
    assert fp8.weight_dtype_for("unet") == torch.float8_e5m2 and fp8.dtype_for("unet") == torch.float32
    assert fp8.weight_dtype_for("unet", "fp8_e4m3fn") == torch.float8_e4m3fn  # the loader's choice wins
    assert ModelManager(MemoryPolicy(cpu=True)).weight_dtype_for("unet", file_dtype=torch.float8_e5m2) \
        == torch.float8_e5m2
    with pytest.raises(ValueError, match="weight dtype 'fp4'"):
        fp8.weight_dtype_for("unet", "fp4")


def test_fp8_checkpoint_and_flag_through_the_executor(tmp_path: Path) -> None:
    env = SDEnv(tmp_path)
    ckpt = tmp_path / "models" / "checkpoints"
    name = next(p.name for p in ckpt.iterdir())  # the tiny SD1.5 checkpoint SDEnv wrote
    sd = load_file(str(ckpt / name))
    for key in [k for k in sd if k.startswith(PREFIX) and k.endswith(".weight") and sd[k].ndim >= 2]:
        sd[key] = sd[key].to(torch.float8_e4m3fn)
    save_file(sd, str(ckpt / "fp8.safetensors"))
    prompt = txt2img(ckpt="fp8.safetensors")
    model = env.value(prompt, "4", 0)
    assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch.float8_e4m3fn
    assert model.model.diffusion_model.time_embed[0].weight.dtype == torch.float8_e4m3fn
    # --fp8_e4m3fn-text-enc and --fp8_e5m2-unet on the plain checkpoint
    env.models = ModelManager(MemoryPolicy(cpu=True, unet_weight_dtype="fp8_e5m2",
                                           text_enc_weight_dtype="fp8_e4m3fn"))
    env.executor = Executor(env.registry, folders=env.folders, models=env.models)
    plain = txt2img(ckpt=name)
    model, clip = env.value(plain, "4", 0), env.value(plain, "4", 1)
    assert model.model.diffusion_model.output_blocks[0][0].in_layers[2].weight.dtype == torch.float8_e5m2
    linears = [m for m in clip.handle.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)


def test_comfy_cli_args_reflect_the_weight_flags() -> None:
    import importlib.util
    from types import SimpleNamespace

    from config import parse_args

    # the shim runs with the binding compat.install_compat gives it
    source = Path(__file__).parent.parent / "compat" / "cli_args.py"
    spec = importlib.util.spec_from_file_location("cli_args_view", source)
    module = importlib.util.module_from_spec(spec)
    module.BINDING = SimpleNamespace(config=parse_args(["--fp16-unet", "--fp8_e4m3fn-text-enc", "--bf16-vae"], {}))
    spec.loader.exec_module(module)
    args = module.args
    assert args.fp16_unet and args.fp8_e4m3fn_text_enc and args.bf16_vae
    assert not args.bf16_unet and not args.fp8_e4m3fn_unet and not args.fp16_vae


@pytest.mark.parametrize("prefixed", [False, True])
def test_scaled_fp8_unet_file(tmp_path: Path, prefixed: bool) -> None:
    """ComfyUI "scaled fp8" (per-layer `scale_weight`, the `scaled_fp8` marker): weight = stored · scale."""
    from tests.fixtures.tiny_checkpoints import tiny_unet_state_dict

    sd = {k: v.float() for k, v in tiny_unet_state_dict("sd15", seed=2).items()}
    # fp8 storage reads a file's other tensors through fp16 (they then compute in fp32): the reference does too
    scaled, upcast = dict(sd), {k: v.half().float() for k, v in sd.items()}
    for key in [k for k in sd if k.endswith(".weight") and sd[k].ndim >= 2]:
        scale = sd[key].abs().max() / 448.0
        scaled[key] = (sd[key] / scale).to(torch.float8_e4m3fn)
        scaled[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        upcast[key] = scaled[key].float() * scale
    scaled["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    prefix = PREFIX if prefixed else ""
    save_file({prefix + k: v for k, v in scaled.items()}, str(tmp_path / "s.safetensors"))
    save_file(upcast, str(tmp_path / "ref.safetensors"))
    mm = ModelManager(MemoryPolicy(cpu=True))
    from diffusion.files.checkpoint import stored_fp8_dtype

    stored = mm.weight_dtype_for("unet", file_dtype=stored_fp8_dtype(tmp_path / "s.safetensors", PREFIX))
    model = load_unet_module(tmp_path / "s.safetensors", torch.float32, stored)
    layer = model.diffusion_model.input_blocks[1][1].proj_in
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.scale_weight is not None
    ref = load_unet_module(tmp_path / "ref.safetensors", torch.float32)
    torch.testing.assert_close(_run(model), _run(ref), rtol=1e-5, atol=1e-5)
