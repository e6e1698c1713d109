"""GGUF files (the ComfyUI-GGUF pack's format): Loom's torch dequantisers against gguf-py's numpy reference for
every supported type; a tiny UNet written with gguf's writer (Q8_0/Q5_1/Q4_0 from gguf.quants.quantize, the
tensors whose rows are not whole blocks in F16, as the pack's converter does) loads with its weights still packed and
computes within quantisation error of the unquantised network; UnetLoaderGGUF samples through the executor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from diffusion.files.assemble import load_unet_module  # noqa: E402
from diffusion.files.gguf_loading import load_gguf_unet  # noqa: E402
from diffusion.files.gguf_quants import QUANT_SIZES, dequantize  # noqa: E402
from diffusion.networks.weight_cast import weight_bytes  # noqa: E402
from tests.fixtures.tiny_checkpoints import tiny_unet_state_dict, write_tiny_unet  # noqa: E402
from tests.nodes.sd_env import SDEnv, txt2img  # noqa: E402

_FP16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
                "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


@pytest.mark.parametrize("qtype", sorted(QUANT_SIZES))
def test_dequantisers_match_gguf_reference(qtype: int) -> None:
    name, block, size = QUANT_SIZES[qtype]
    rng = np.random.default_rng(qtype)
    raw = rng.integers(0, 256, size=(7, size), dtype=np.uint8)  # any bytes are codes; scales made finite below
    for offset in _FP16_FIELDS[name]:
        raw[:, offset:offset + 2] = rng.uniform(-2, 2, 7).astype(np.float16).view(np.uint8).reshape(7, 2)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(qtype)).reshape(-1)
    got = dequantize(torch.from_numpy(raw), qtype, (7, block), torch.float32).reshape(-1).numpy()
    np.testing.assert_array_equal(got, ref)


def write_gguf_unet(path: Path, qtype: "gguf.GGMLQuantizationType", seed: int = 7) -> dict[str, torch.Tensor]:
    """The tiny SD1.5 UNet as a GGUF file (arch sd1); returns its unquantised fp32 tensors."""
    sd = {k: v.float() for k, v in tiny_unet_state_dict("sd15", seed=seed).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="sd1")
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for key, value in sd.items():
        array = value.numpy()
        if value.dim() >= 2 and value.shape[-1] % block == 0:
            writer.add_tensor(key, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        elif value.dim() >= 2:
            writer.add_tensor(key, array.astype(np.float16))
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sd


@pytest.mark.parametrize("name, tolerance", [("Q8_0", 0.02), ("Q5_1", 0.1), ("Q4_0", 0.3)])
def test_gguf_unet_within_quantisation_error(tmp_path: Path, name: str, tolerance: float) -> None:
    qtype = gguf.GGMLQuantizationType[name]
    write_gguf_unet(tmp_path / "u.gguf", qtype)
    net, family, prediction = load_gguf_unet(tmp_path / "u.gguf", torch.float32)
    assert (family, prediction) == ("sd1", "eps")
    q = net.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    assert q.weight.dtype == torch.uint8 and q.weight_qtype == int(qtype)
    full = load_unet_module(write_tiny_unet(tmp_path / "u.safetensors", seed=7), torch.float32).diffusion_model
    assert weight_bytes(net) < weight_bytes(full) * 0.55
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([700.0, 300.0])
    c = torch.randn(2, 5, full.config.context_dim, generator=gen)
    with torch.no_grad():
        out, ref = net(x, t, c), full(x, t, c)
    rel = (out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()
    assert 0 < rel < tolerance


def test_unet_loader_gguf_through_the_executor(tmp_path: Path) -> None:
    env = SDEnv(tmp_path)
    write_gguf_unet(tmp_path / "models" / "unet" / "tiny-Q8_0.gguf", gguf.GGMLQuantizationType.Q8_0)
    prompt = txt2img()
    prompt["30"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "tiny-Q8_0.gguf"}}
    prompt["3"]["inputs"]["model"] = ["30", 0]
    image = env.value(prompt, "8")
    assert image.shape[-1] == 3 and torch.isfinite(image).all()
    bad = dict(prompt)
    (tmp_path / "models" / "unet" / "broken.gguf").write_bytes(b"not a gguf file")
    bad["30"] = {"class_type": "UnetLoaderGGUFAdvanced", "inputs": {"unet_name": "broken.gguf",
                 "dequant_dtype": "default", "patch_dtype": "default", "patch_on_device": False}}
    result = env.run(bad)
    assert result.status == "error" and "broken.gguf" in result.error["exception_message"]


def _write_gguf(path: Path, sd: dict[str, torch.Tensor], arch: str, qtype: "gguf.GGMLQuantizationType") -> None:
    writer = gguf.GGUFWriter(str(path), arch=arch)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for key, value in sd.items():
        array = value.float().numpy()
        if value.dim() >= 2 and value.shape[-1] % block == 0:
            writer.add_tensor(key, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_mmdit_within_quantisation_error(tmp_path: Path) -> None:
    from diffusion.files.mmdit_loading import build_mmdit
    from tests.fixtures.tiny_sd3 import TINY_SD3, tiny_sd3_state_dict
    from tests.fixtures.tiny_sdxl import G_WIDTH, L_WIDTH

    prefix = "model.diffusion_model."
    sd = {k: v.float() for k, v in tiny_sd3_state_dict().items() if k.startswith(prefix)}
    _write_gguf(tmp_path / "m.gguf", sd, "sd3", gguf.GGMLQuantizationType.Q8_0)  # prefixed keys, as some files
    net, family, prediction = load_gguf_unet(tmp_path / "m.gguf", torch.float32)
    assert (family, prediction) == ("sd3", "flow")
    assert net.joint_blocks[0].x_block.attn.qkv.weight.dtype == torch.uint8
    ref = build_mmdit({k[len(prefix):]: v for k, v in sd.items()})
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 16, 8, 8, generator=gen), torch.tensor([600.0])
    ctx, y = torch.randn(1, 5, TINY_SD3.context_dim, generator=gen), torch.randn(1, L_WIDTH + G_WIDTH, generator=gen)
    with torch.no_grad():
        out, want = net(x, t, context=ctx, y=y), ref(x, t, context=ctx, y=y)
    assert 0 < ((out - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()) < 0.02


def test_lora_on_packed_weights_applies_per_call_and_comes_off(tmp_path: Path) -> None:
    from diffusion.files.assemble import load_gguf_unet_module, model_socket
    from diffusion.patcher import WeightPatch
    from executor.memory import MemoryPolicy, ModelManager

    write_gguf_unet(tmp_path / "u.gguf", gguf.GGMLQuantizationType.Q4_0)
    base = model_socket(load_gguf_unet_module(tmp_path / "u.gguf", torch.float32))
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    layer = base.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    packed = layer.weight.detach().clone()
    dequantised = dequantize(packed, layer.weight_qtype, layer.weight_shape, torch.float32)
    lora = base.clone()
    lora.add_patches({key: WeightPatch(lambda w: torch.full_like(w, 0.01), strength=2.0)})
    x = torch.randn(3, layer.in_features)
    mm = ModelManager(MemoryPolicy(cpu=True))
    with torch.no_grad():
        with mm.use([lora]):
            torch.testing.assert_close(layer(x), x @ (dequantised + 0.02).T)
        mm.unload_all()
        torch.testing.assert_close(layer(x), x @ dequantised.T)
    assert torch.equal(layer.weight, packed) and layer.weight.dtype == torch.uint8
