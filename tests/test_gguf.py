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

from diffusion.assemble import load_unet_module  # noqa: E402
from diffusion.gguf_loading import load_gguf_unet  # noqa: E402
from diffusion.gguf_quants import QUANT_SIZES, dequantize  # noqa: E402
from diffusion.weight_cast import weight_bytes  # noqa: E402
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
