"""Model patches that change how the UNet computes without changing its weights: FreeU, Kohya deep shrink and
hypernetworks, as `transformer_options["patches"]` hooks (see `diffusion/networks/unet.py` and `diffusion/networks/unet_blocks.py`).

- FreeU (Si et al. 2023, "FreeU: Free Lunch in Diffusion U-Net"): on the decoder blocks whose width is 4× or 2× the
  base channels, the backbone features' first half is scaled by b and the skip features' low frequencies by s
  (a Fourier filter); v2 scales the backbone by 1 + (b−1)·(normalised channel-mean map) instead of a constant;
- Kohya deep shrink ("PatchModelAddDownscale", from kohya-ss sd-scripts' `gen_img` "Deep Shrink"): while sigma is in
  a range, the features after input block N are resized down by a factor, and the decoder resizes them back to
  the skip's size, so early steps compose at the resolution the model was trained at;
- hypernetworks (NovelAI / A1111 `.pt` files): small MLPs per context width that add to the keys and values of
  every attention, `k + mlp_k(k)·strength`, `v + mlp_v(v)·strength`.

Each patch is a small callable object; nodes add it to a clone's model options (`ModelHandle.options`). Nothing
here chooses a device: the memory manager moves a hypernetwork's layers with the model (`HypernetworkPatch.to`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

Resize = Callable[[Tensor, int, int, str, str], Tensor]


def fourier_filter(x: Tensor, threshold: int, scale: float) -> Tensor:
    """Scale the centred (2·threshold)² lowest spatial frequencies of `x` by `scale` (FreeU's skip filter)."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    h, w = freq.shape[-2:]
    mask = torch.ones(freq.shape[-2:], device=x.device)
    crow, ccol = h // 2, w // 2
    mask[crow - threshold:crow + threshold, ccol - threshold:ccol + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def _filter_skip(skip: Tensor, scale: float) -> Tensor:
    """The FFT where the device has it, else on the CPU (some backends lack complex FFTs)."""
    try:
        return fourier_filter(skip, 1, scale)
    except (RuntimeError, TypeError):
        return fourier_filter(skip.cpu(), 1, scale).to(skip.device)


@dataclass(frozen=True)
class FreeUPatch:
    """FreeU's `output_block_patch(h, skip, options)`; `version` 1 or 2."""

    model_channels: int
    b1: float
    b2: float
    s1: float
    s2: float
    version: int = 1

    def scales(self, channels: int) -> tuple[float, float] | None:
        table = {self.model_channels * 4: (self.b1, self.s1), self.model_channels * 2: (self.b2, self.s2)}
        return table.get(channels)

    def __call__(self, h: Tensor, skip: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
        scale = self.scales(int(h.shape[1]))
        if scale is None:
            return h, skip
        half = h.shape[1] // 2
        factor: Tensor | float = scale[0]
        if self.version == 2:
            mean = h.mean(1, keepdim=True)
            flat = mean.flatten(1)
            lo = flat.min(dim=-1).values.view(-1, 1, 1, 1)
            hi = flat.max(dim=-1).values.view(-1, 1, 1, 1)
            # A constant map (e.g. a 1×1 feature map) has no range; it is left unscaled instead of dividing by 0.
            span = hi - lo
            norm = torch.where(span > 0, (mean - lo) / torch.where(span > 0, span, 1), 0)
            factor = (scale[0] - 1) * norm + 1
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, _filter_skip(skip, scale[1])


@dataclass(frozen=True)
class DeepShrinkInput:
    """Deep shrink's input-block patch: resize the features after input block `block_number` by
    1/`factor` while `sigma_end ≤ sigma ≤ sigma_start`."""

    block_number: int
    factor: float
    sigma_start: float
    sigma_end: float
    method: str
    resize: Resize

    def __call__(self, h: Tensor, options: dict[str, Any]) -> Tensor:
        if options.get("block", (None, -1))[1] != self.block_number:
            return h
        sigma = float(options["sigmas"][0])
        if self.sigma_end <= sigma <= self.sigma_start:
            h = self.resize(h, round(h.shape[-1] / self.factor), round(h.shape[-2] / self.factor), self.method,
                            "disabled")
        return h


@dataclass(frozen=True)
class DeepShrinkOutput:
    """Deep shrink's output-block patch: bring the decoder features back to the skip's size."""

    method: str
    resize: Resize

    def __call__(self, h: Tensor, skip: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if h.shape[-2:] != skip.shape[-2:]:
            h = self.resize(h, skip.shape[-1], skip.shape[-2], self.method, "disabled")
        return h, skip


# --- hypernetworks --------------------------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.Hardswish,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign, "mish": nn.Mish,
}


class HypernetworkError(ValueError):
    """A hypernetwork file Loom cannot read."""


def _mlp(weights: dict[str, Tensor], options: dict[str, Any]) -> nn.Sequential:
    """One hypernetwork MLP from its state dict (`linear.N.weight/bias`, optionally LayerNorms between), with the
    file's activation after each linear layer but the last (unless `activate_output`). Dropout is a training-time
    layer and has no effect at inference, so it is left out."""
    names = [k[: -len(".weight")] for k in weights if k.endswith(".weight")]
    activation = ACTIVATIONS[options["activation_func"]]
    layers: list[nn.Module] = []
    i = 0
    while i < len(names):
        w, b = weights[names[i] + ".weight"], weights[names[i] + ".bias"]
        linear = nn.Linear(w.shape[1], w.shape[0])
        linear.load_state_dict({"weight": w.float(), "bias": b.float()})
        layers.append(linear)
        # ComfyUI counts LayerNorm entries when deciding which linear is the last one; kept for parity.
        last = i == len(names) - 1
        if options["activation_func"] != "linear" and (not last or options["activate_output"]):
            layers.append(activation())
        if options["is_layer_norm"]:
            i += 1
            ln_w, ln_b = weights[names[i] + ".weight"], weights[names[i] + ".bias"]
            norm = nn.LayerNorm(ln_w.shape[0])
            norm.load_state_dict({"weight": ln_w.float(), "bias": ln_b.float()})
            layers.append(norm)
        i += 1
    return nn.Sequential(*layers).eval().requires_grad_(False)


def read_hypernetwork(path: str | os.PathLike[str]) -> dict[int, nn.ModuleList]:
    """The MLP pairs (key, value) of a hypernetwork `.pt`/`.safetensors` file, by context width."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as err:
        raise HypernetworkError(f"{os.fspath(path)}: not a readable hypernetwork file ({err})") from err
    options = {"activation_func": sd.get("activation_func", "linear"), "is_layer_norm": sd.get("is_layer_norm", False),
               "activate_output": sd.get("activate_output", False)}
    if options["activation_func"] not in ACTIVATIONS:
        raise HypernetworkError(f"{os.fspath(path)}: activation {options['activation_func']!r} is not one of "
                                f"{', '.join(ACTIVATIONS)}")
    out: dict[int, nn.ModuleList] = {}
    for key, value in sd.items():
        try:
            dim = int(key)
        except (TypeError, ValueError):
            continue
        out[dim] = nn.ModuleList([_mlp(dict(value[0]), options), _mlp(dict(value[1]), options)])
    if not out:
        raise HypernetworkError(f"{os.fspath(path)} holds no hypernetwork layers (integer context-width keys)")
    return out


@dataclass(eq=False)
class HypernetworkPatch:
    """The attn1/attn2 patch `(x, context, value, options) -> (x, k_input, v_input)` adding the hypernetwork's
    MLP outputs to the key and value inputs of attentions whose context width it has layers for.

    Its layers are weights of their own: the memory manager moves them with the model (`to`), and a call casts the
    activations to the layers' dtype and back."""

    layers: dict[int, nn.ModuleList]
    strength: float

    def to(self, device: torch.device | str) -> "HypernetworkPatch":
        for mlps in self.layers.values():
            mlps.to(device)
        return self

    def __call__(self, x: Tensor, context: Tensor | None, value: Tensor | None,
                 options: dict[str, Any]) -> tuple[Tensor, Tensor | None, Tensor | None]:
        k = x if context is None else context
        v = k if value is None else value
        layers = self.layers.get(int(k.shape[-1]))
        if layers is None:
            return x, context, value
        return x, k + self._run(layers[0], k) * self.strength, v + self._run(layers[1], v) * self.strength

    @staticmethod
    def _run(mlp: nn.Module, t: Tensor) -> Tensor:
        weight = next(mlp.parameters(), None)
        if weight is None:
            return mlp(t)
        return mlp(t.to(device=weight.device, dtype=weight.dtype)).to(device=t.device, dtype=t.dtype)
