"""The speed options of issue 9 on the CPU: bf16 end to end, channels-last, `--compile`, threads, and a start-up and
a first prompt that import neither open_clip nor torchvision nor torch._dynamo.

Real parts throughout: tiny random-weight checkpoints written as fp16 safetensors files in the real key layout,
loaded by `diffusion.files.loading`, run by the real networks; the server is a real `python main.py` subprocess.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion.files.assemble import model_socket
from diffusion.networks.compile import compile_model, is_compiled
from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.files.loading import LoadedCheckpoint, load_checkpoint
from executor.devices import cpu_threads
from executor.memory import MemoryPolicy, ModelManager
from tests.fixtures.tiny_checkpoints import TINY_WIDTH, write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD1.5 checkpoint with fp16 weights, as most real files store them."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("speed") / "tiny.safetensors", dtype=torch.float16)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    sigma = torch.tensor([14.6, 3.0])
    context = torch.randn(2, 77, TINY_WIDTH, generator=gen)
    return x, sigma, context


def _denoise(model: DiffusionModel, seed: int = 0) -> torch.Tensor:
    x, sigma, context = _inputs(seed)
    with torch.inference_mode():
        return model.apply_model(x, sigma, c_crossattn=context)


def _load(path: Path, dtype: torch.dtype) -> LoadedCheckpoint:
    return load_checkpoint(path, dtype=dtype, text_encoder_dtype=torch.float32)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def test_bf16_unet_and_vae_match_fp32(tiny_file: Path) -> None:
    """fp16 file weights are read straight into bf16 networks; their output is finite and close to fp32's."""
    ref, low = _load(tiny_file, torch.float32), _load(tiny_file, torch.bfloat16)
    assert {p.dtype for p in low.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in low.vae.model.parameters()} == {torch.bfloat16}
    out32, out16 = _denoise(DiffusionModel(ref.unet)), _denoise(DiffusionModel(low.unet))
    assert out16.dtype == torch.float32 and torch.isfinite(out16).all()
    # bf16 keeps 8 mantissa bits (relative step 2^-8 ≈ 0.4%); a few dozen layers accumulate to a few percent.
    assert _relative_error(out16, out32) < 0.05
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    img32, img16 = ref.vae.decode(latent), low.vae.decode(latent)
    assert torch.isfinite(img16).all() and _relative_error(img16, img32) < 0.05


def test_bf16_hot_path_has_no_fp32_upcasts(tiny_file: Path) -> None:
    """Every convolution and linear layer of the bf16 UNet and VAE receives bf16 activations (norms may upcast
    inside, but what the matrix units see is bf16)."""
    low = _load(tiny_file, torch.bfloat16)
    seen: list[tuple[str, torch.dtype]] = []

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            seen.append((name, args[0].dtype))
        return hook

    handles = []
    for root in (low.unet, low.vae.model):
        for name, module in root.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                handles.append(module.register_forward_pre_hook(record(name)))
    try:
        _denoise(DiffusionModel(low.unet))
        low.vae.decode(torch.randn(1, 4, 8, 8))
    finally:
        for h in handles:
            h.remove()
    assert len(seen) > 20
    assert [n for n, dt in seen if dt != torch.bfloat16] == []


def _eps(unet: nn.Module) -> torch.Tensor:
    x, _, context = _inputs()
    with torch.inference_mode():
        return unet(x, torch.tensor([999.0, 500.0]), context=context)


def test_channels_last_matches_contiguous(tiny_file: Path) -> None:
    """The UNet's prediction is the same with channels-last weights as with contiguous ones (fp32, within 1e-5 of
    its largest value: the two layouts sum the convolutions in different orders)."""
    ckpt = _load(tiny_file, torch.float32)
    contiguous = _eps(ckpt.unet)
    ckpt.unet.to(memory_format=torch.channels_last)
    assert any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in ckpt.unet.parameters())
    assert _relative_error(_eps(ckpt.unet), contiguous) < 1e-5


def test_manager_compiles_the_unet_only_with_the_flag(tiny_file: Path) -> None:
    """`--compile` reaches the policy from the Config; the manager compiles a UNet (once) when it loads it, and
    leaves it eager without the flag."""
    import config

    assert MemoryPolicy.from_config(config.parse_args(["--compile"], {})).compile is True
    for flag in (False, True):
        handle = model_socket(DiffusionModel(_load(tiny_file, torch.float32).unet))
        manager = ModelManager(MemoryPolicy(cpu=True, compile=flag))
        with manager.use([handle]):
            pass
        assert is_compiled(handle.model) is flag
    assert compile_model(handle.model) is False  # already compiled: not again


def test_configure_threads_uses_every_usable_core() -> None:
    before = torch.get_num_threads()
    try:
        assert ModelManager(MemoryPolicy(cpu=True)).configure_threads() == cpu_threads()
        assert torch.get_num_threads() == cpu_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_compiled_unet_matches_eager(tiny_file: Path) -> None:
    """torch.compile (Inductor, C++ on the CPU) of the tiny UNet gives the eager output, and a second shape works."""
    model = DiffusionModel(_load(tiny_file, torch.float32).unet)
    eager = _denoise(model)
    assert compile_model(model) is True
    compiled = _denoise(model)
    assert torch.allclose(compiled, eager, atol=1e-4, rtol=1e-4)
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        assert model.apply_model(x, torch.tensor([5.0, 1.0]), c_crossattn=_inputs()[2]).shape == x.shape


def test_startup_imports_no_open_clip() -> None:
    """Building the runtime (what `python main.py` does before serving) imports no open_clip, torchvision or
    torch._dynamo: they cost seconds and are needed only when a text tower is built or a model compiled."""
    code = ("import runtime, config, sys; runtime.build_runtime(config.parse_args([], {})); import server.app; "
            "heavy = [m for m in ('open_clip', 'torchvision', 'torch._dynamo') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


def test_first_prompt_imports_no_open_clip(tmp_path: Path) -> None:
    """Nor does a whole txt2img prompt (checkpoint load, CLIP tokenize and encode, sampling, decode, save): Loom's
    CLIP tower and BPE tokenizer are its own, and nothing runs a torch._refs decomposition on the meta device
    (whose first use imports torch._dynamo) while the models are built."""
    code = ("import sys; from pathlib import Path; from tests.nodes.sd_env import SDEnv, txt2img; "
            f"env = SDEnv(Path({str(tmp_path)!r})); env.ok(txt2img()); "
            "assert list((env.base / 'output').glob('t2i_*.png')); "
            "heavy = [m for m in ('open_clip', 'torchvision', 'torch._dynamo') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


@pytest.mark.slow
def test_server_answers_its_first_request(tmp_path: Path) -> None:
    """`python main.py` starts and answers GET /system_stats. How fast is measured by `bench/pipeline.py --phases
    startup` (figures in bench/RESULTS.md), not asserted here: CPU time inflates on a shared machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "main.py", "--port", str(port), "--base-directory", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=1) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None, "main.py exited before answering"
                assert time.perf_counter() - t0 < 60, "no answer within 60 s"
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
