"""Benchmark: what T5-XXL adds to SD3 text encoding on this machine's CPU — seconds per T5-XXL block and for the
whole 24-block encoder (extrapolated), and the weights' resident size, for fp16 and float8_e4m3fn storage.

    python bench/sd3_t5.py [--layers 2] [--runs 3] [--tokens 77]

A full-size T5-XXL file (4.7 B parameters, 9.5 GB in fp16) cannot be built cheaply here, so the encoder is built in
memory with T5-XXL's real block shape (width 4096, 64 heads of 64, gated feed-forward 10240, vocabulary 32128) and
`--layers` blocks of random weights, through `diffusion.text.t5.build_t5` (the same module and per-layer upcasting as a
loaded file). The figure per block is (time with N blocks − time with 1 block) / (N − 1), so the embedding and the
final norm are not counted per block; the full-encoder figure is time(1 block) + 23 × per block. Without T5, SD3's
text encode is the two CLIP towers alone (bench/sdxl.py measures those). Medians of `--runs` after one warm-up call.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusion.text.t5 import T5Config, build_t5  # noqa: E402

XXL_BLOCKS = 24


def xxl_state_dict(layers: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random T5-XXL-shaped tensors with `layers` blocks, in the file layout (linear weights in `dtype`)."""
    config = T5Config(vocab_size=32128, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=layers)
    gen = torch.Generator().manual_seed(0)
    sd = {"shared.weight": torch.randn(config.vocab_size, config.d_model, generator=gen).half(),
          "encoder.final_layer_norm.weight": torch.ones(config.d_model),
          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": torch.randn(32, 64, generator=gen)}
    shapes = {"layer.0.SelfAttention.q": (4096, 4096), "layer.0.SelfAttention.k": (4096, 4096),
              "layer.0.SelfAttention.v": (4096, 4096), "layer.0.SelfAttention.o": (4096, 4096),
              "layer.1.DenseReluDense.wi_0": (10240, 4096), "layer.1.DenseReluDense.wi_1": (10240, 4096),
              "layer.1.DenseReluDense.wo": (4096, 10240)}
    for i in range(layers):
        for name, shape in shapes.items():
            sd[f"encoder.block.{i}.{name}.weight"] = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
        sd[f"encoder.block.{i}.layer.0.layer_norm.weight"] = torch.ones(4096)
        sd[f"encoder.block.{i}.layer.1.layer_norm.weight"] = torch.ones(4096)
    return sd


def encode_seconds(layers: int, dtype: torch.dtype, tokens: int, runs: int) -> tuple[float, int]:
    tower = build_t5(xxl_state_dict(layers, dtype), torch.float32)
    size = sum(t.numel() * t.element_size() for t in tower.transformer.encoder.block.state_dict().values())
    ids = torch.randint(0, 32128, (1, tokens))
    tower(ids)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        tower(ids)
        times.append(time.perf_counter() - start)
    return statistics.median(times), size // layers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=77)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {args.tokens} tokens, medians of {args.runs}\n")
    print("| storage | s / T5-XXL block | s / 24-block encoder (est.) | MB / block |")
    print("| --- | --- | --- | --- |")
    for name, dtype in (("fp16", torch.float16), ("fp8_e4m3fn", torch.float8_e4m3fn)):
        one, size = encode_seconds(1, dtype, args.tokens, args.runs)
        many, _ = encode_seconds(args.layers, dtype, args.tokens, args.runs)
        per_block = (many - one) / max(1, args.layers - 1)
        print(f"| {name} | {per_block:.3f} | {one + (XXL_BLOCKS - 1) * per_block:.2f} | {size / 2 ** 20:.0f} |")


if __name__ == "__main__":
    main()
