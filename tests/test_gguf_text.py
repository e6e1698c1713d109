"""GGUF text encoders (the ComfyUI-GGUF pack's CLIPLoaderGGUF / DualCLIPLoaderGGUF / TripleCLIPLoaderGGUF): a tiny
T5-XXL-shaped encoder written with gguf's writer in llama.cpp's naming (`token_embd`, `enc.blk.N.attn_q`, ...;
Q8_0 / Q4_0 / Q5_K matmul weights from gguf.quants.quantize, rows that are not whole blocks in F16, norms F32 or
F16, a whole T5's decoder tensors that must be ignored) loads with its matmul weights still packed and encodes as
the same weights dequantised and loaded unquantised; the nodes run in the real executor, mixing .gguf and
.safetensors towers; bad files fail naming the node, the input and the reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from diffusion.files.gguf_text import load_gguf_t5  # noqa: E402
from diffusion.networks.weight_cast import weight_bytes  # noqa: E402
from diffusion.text.t5 import build_t5  # noqa: E402
from executor.memory import MemoryPolicy  # noqa: E402
from tests.fixtures.tiny_sdxl import tiny_clip_g_hf, tiny_clip_l_hf, write  # noqa: E402
from tests.fixtures.tiny_t5 import tiny_t5_state_dict, write_tiny_t5_tokenizer  # noqa: E402
from tests.nodes.sd_env import SDEnv  # noqa: E402

# The ordinary T5 names (below `encoder.block.N.`) → llama.cpp's, as its convert script writes them.
_LLAMA_PARTS = {
    "layer.0.SelfAttention.q": "attn_q", "layer.0.SelfAttention.k": "attn_k", "layer.0.SelfAttention.v": "attn_v",
    "layer.0.SelfAttention.o": "attn_o", "layer.0.layer_norm": "attn_norm",
    "layer.0.SelfAttention.relative_attention_bias": "attn_rel_b", "layer.1.DenseReluDense.wi_0": "ffn_gate",
    "layer.1.DenseReluDense.wi_1": "ffn_up", "layer.1.DenseReluDense.wo": "ffn_down",
    "layer.1.layer_norm": "ffn_norm",
}


def llama_name(key: str) -> str:
    if key == "shared.weight":
        return "token_embd.weight"
    if key == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    _, _, block, rest = key.split(".", 3)
    part, leaf = rest.rsplit(".", 1)
    return f"enc.blk.{block}.{_LLAMA_PARTS[part]}.{leaf}"


def _k_blocks(shape: tuple[int, ...], qtype: "gguf.GGMLQuantizationType", rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks (gguf-py cannot quantise to K types) with small finite fp16 scales `d` and `dmin`:
    what the file holds is then exactly what its dequantised reference holds."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert qtype == gguf.GGMLQuantizationType.Q5_K  # d, dmin: the block's first two fp16 values
    raw = rng.integers(0, 256, size=(shape[0], shape[-1] // block, size), dtype=np.uint8)
    scales = rng.uniform(-1e-3, 1e-3, size=(shape[0], shape[-1] // block, 2)).astype(np.float16)
    raw[..., :4] = scales.view(np.uint8)
    return raw.reshape(shape[0], -1)


def write_gguf_t5(path: Path, qtype: str, arch: str = "t5encoder", norms: str = "F32",
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny T5 as a GGUF file; returns the tensors it holds, dequantised to fp32, under the ordinary names."""
    q = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[q][0]
    writer = gguf.GGUFWriter(str(path), arch=arch)
    held: dict[str, torch.Tensor] = {}
    rng = np.random.default_rng(seed)
    for key, value in tiny_t5_state_dict(seed, torch.float32).items():
        array = value.numpy()
        if value.dim() == 2 and value.shape[-1] % block == 0 and "relative_attention_bias" not in key:
            packed = _k_blocks(array.shape, q, rng) if qtype.endswith("_K") else gguf.quants.quantize(array, q)
            writer.add_tensor(llama_name(key), packed, raw_dtype=q)
            held[key] = torch.from_numpy(gguf.quants.dequantize(packed, q).reshape(array.shape).copy())
        elif value.dim() == 2 or (value.dim() == 1 and norms == "F16"):
            writer.add_tensor(llama_name(key), array.astype(np.float16))
            held[key] = torch.from_numpy(array.astype(np.float16).astype(np.float32))
        else:
            writer.add_tensor(llama_name(key), array)
            held[key] = value.clone()
    writer.add_tensor("dec.output_norm.weight", np.ones(4096, dtype=np.float32))  # a whole T5's decoder
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def _tokens() -> torch.Tensor:
    return torch.tensor([[5, 9, 17, 3, 1, 0, 0], [12, 4, 40, 63, 22, 8, 1]])


@pytest.mark.parametrize("qtype, norms", [("Q8_0", "F32"), ("Q4_0", "F16"), ("Q5_K", "F32")])
def test_gguf_t5_matches_its_dequantised_weights(tmp_path: Path, qtype: str, norms: str) -> None:
    held = write_gguf_t5(tmp_path / "t5.gguf", qtype, norms=norms)
    tower = load_gguf_t5(tmp_path / "t5.gguf", torch.float32)
    reference = build_t5(held, torch.float32)
    q = tower.transformer.encoder.block[0].layer[0].SelfAttention.q
    assert q.weight.dtype == torch.uint8 and q.weight_qtype == int(gguf.GGMLQuantizationType[qtype])
    assert tower.transformer.shared.weight.dtype == torch.float32  # looked up, so dequantised at load
    assert weight_bytes(tower, matmul_only=True) < 0.4 * weight_bytes(reference, matmul_only=True)
    with torch.no_grad():
        out, want = tower(_tokens()), reference(_tokens())
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(tower(_tokens(), layer_idx=0), reference(_tokens(), layer_idx=0), atol=1e-4,
                                   rtol=1e-4)
    assert out.abs().max() > 0.1 and q.weight.dtype == torch.uint8  # still packed after computing


def test_gguf_t5_half_storage_keeps_blocks_packed(tmp_path: Path) -> None:
    held = write_gguf_t5(tmp_path / "t5.gguf", "Q8_0", arch="t5")
    tower = load_gguf_t5(tmp_path / "t5.gguf", torch.float16)
    assert tower.transformer.shared.weight.dtype == torch.float16
    assert tower.transformer.encoder.block[1].layer[1].DenseReluDense.wi_0.weight.dtype == torch.uint8
    with torch.no_grad():
        rel = (tower(_tokens()) - build_t5(held, torch.float32)(_tokens())).abs().max()
    assert rel < 0.05


@pytest.fixture
def env(tmp_path: Path) -> SDEnv:
    # fp32 text-encoder storage (--fp32-text-enc) so the dequantised file is compared unrounded; the CPU default
    # stores it in fp16, as ComfyUI does.
    env = SDEnv(tmp_path, policy=MemoryPolicy(text_enc_weight_dtype="fp32"))
    folder = tmp_path / "models" / "text_encoders"
    write(tiny_clip_l_hf(), folder / "clip_l.safetensors")
    write(tiny_clip_g_hf(), folder / "clip_g.safetensors")
    held = write_gguf_t5(folder / "t5xxl-Q8_0.gguf", "Q8_0")
    write({k: v.contiguous() for k, v in held.items()}, folder / "t5xxl-dequantised.safetensors")
    write_tiny_t5_tokenizer(folder / "t5_tokenizer" / "tokenizer.json")
    return env


def _encode(loader: str, inputs: dict[str, str], text: str = "a photo of a cat") -> dict:
    return {"1": {"class_type": loader, "inputs": inputs},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 0]}}}


def test_node_declarations(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    files = ["clip_g.safetensors", "clip_l.safetensors", "t5xxl-Q8_0.gguf", "t5xxl-dequantised.safetensors"]
    single = info["CLIPLoaderGGUF"]
    assert list(single["input"]["required"]) == ["clip_name", "type"]
    assert single["input"]["required"]["clip_name"][0] == files
    assert single["input"]["required"]["type"][0] == info["CLIPLoader"]["input"]["required"]["type"][0]
    dual = info["DualCLIPLoaderGGUF"]["input"]["required"]
    assert list(dual) == ["clip_name1", "clip_name2", "type"] and dual["clip_name2"][0] == files
    assert dual["type"][0] == info["DualCLIPLoader"]["input"]["required"]["type"][0]
    assert list(info["TripleCLIPLoaderGGUF"]["input"]["required"]) == ["clip_name1", "clip_name2", "clip_name3"]
    for name, title in (("CLIPLoaderGGUF", "CLIPLoader (GGUF)"), ("DualCLIPLoaderGGUF", "DualCLIPLoader (GGUF)"),
                        ("TripleCLIPLoaderGGUF", "TripleCLIPLoader (GGUF)")):
        assert info[name]["category"] == "bootleg" and info[name]["display_name"] == title
        assert info[name]["output"] == ["CLIP"]
    assert info["UnetLoaderGGUF"]["input"]["required"]["unet_name"][0] == []  # text encoders are not UNets


def test_loaders_match_the_dequantised_file(env: SDEnv) -> None:
    gguf_t5, ref_t5 = "t5xxl-Q8_0.gguf", "t5xxl-dequantised.safetensors"
    cases = [
        (_encode("CLIPLoaderGGUF", {"clip_name": gguf_t5, "type": "sd3"}),
         _encode("CLIPLoader", {"clip_name": ref_t5, "type": "sd3"})),
        (_encode("DualCLIPLoaderGGUF", {"clip_name1": "clip_l.safetensors", "clip_name2": gguf_t5, "type": "sd3"}),
         _encode("DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": ref_t5, "type": "sd3"})),
        (_encode("TripleCLIPLoaderGGUF", {"clip_name1": gguf_t5, "clip_name2": "clip_l.safetensors",
                                          "clip_name3": "clip_g.safetensors"}),
         _encode("TripleCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors",
                                      "clip_name3": ref_t5})),
    ]
    for ours, stock in cases:
        cond, want = env.value(ours, "2"), env.value(stock, "2")
        assert cond[0][0].shape == want[0][0].shape and cond[0][0][0, -1].abs().max() > 0
        torch.testing.assert_close(cond[0][0], want[0][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cond[0][1]["pooled_output"], want[0][1]["pooled_output"], atol=1e-4, rtol=1e-4)
    # What the memory manager counts for the GGUF CLIP is the packed size.
    packed, plain = env.value(cases[0][0], "1"), env.value(cases[0][1], "1")
    assert packed.handle.nbytes() < 0.6 * plain.handle.nbytes()
    # CLIPLoaderGGUF takes ordinary files as CLIPLoader does (type stable_diffusion: a CLIP-L tower).
    sd1 = env.value(_encode("CLIPLoaderGGUF", {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}), "2")
    stock = env.value(_encode("CLIPLoader", {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}), "2")
    assert torch.equal(sd1[0][0], stock[0][0])


def _error(env: SDEnv, prompt: dict) -> dict:
    result = env.run({**prompt, "grab": {"class_type": "Grab", "inputs": {"value": ["1", 0]}}})
    assert result.status == "error"
    return result.error


def test_bad_files_name_node_input_and_reason(env: SDEnv, tmp_path: Path) -> None:
    from tests.test_gguf import write_gguf_unet

    folder = tmp_path / "models" / "text_encoders"
    write_gguf_unet(folder / "unet-Q8_0.gguf", gguf.GGMLQuantizationType.Q8_0)
    error = _error(env, _encode("CLIPLoaderGGUF", {"clip_name": "unet-Q8_0.gguf", "type": "sd3"}))
    assert error["node_type"] == "CLIPLoaderGGUF"
    assert "CLIPLoaderGGUF: clip_name 'unet-Q8_0.gguf'" in error["exception_message"]
    assert "a diffusion model (GGUF architecture 'sd1'), not a text encoder" in error["exception_message"]
    write_gguf_t5(folder / "llm.gguf", "Q8_0", arch="llama")
    error = _error(env, _encode("DualCLIPLoaderGGUF", {"clip_name1": "clip_l.safetensors", "clip_name2": "llm.gguf",
                                                       "type": "sd3"}))
    assert "DualCLIPLoaderGGUF: clip_name2 'llm.gguf'" in error["exception_message"]
    assert "GGUF architecture 'llama' is not a text encoder Loom builds from GGUF" in error["exception_message"]
    (folder / "broken.gguf").write_bytes(b"GGUF but not really")
    error = _error(env, _encode("CLIPLoaderGGUF", {"clip_name": "broken.gguf", "type": "sd3"}))
    assert "clip_name 'broken.gguf'" in error["exception_message"] and "not a readable GGUF file" in \
        error["exception_message"]
    error = _error(env, _encode("CLIPLoaderGGUF", {"clip_name": "t5xxl-Q8_0.gguf", "type": "stable_diffusion"}))
    assert "clip_name 't5xxl-Q8_0.gguf' is a T5 text encoder, but type stable_diffusion takes CLIP files only" in \
        error["exception_message"]
    error = _error(env, _encode("DualCLIPLoaderGGUF", {"clip_name1": "clip_l.safetensors",
                                                       "clip_name2": "t5xxl-Q8_0.gguf", "type": "flux"}))
    assert "DualCLIPLoaderGGUF: type 'flux' is not supported by Loom yet" in error["exception_message"]
