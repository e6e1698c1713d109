"""Randomness for sampling: the initial latent noise and the noise samplers SDE/ancestral steps draw from.

Owns the seeding contract of DESIGN.md (same seed -> same image as ComfyUI):
- `prepare_noise`: `torch.randn` of the latent's shape on the CPU from a generator seeded with the seed;
  for `batch_index` latents one draw per index 0..max(index) in order, keeping the requested ones.
- `default_noise_sampler`: ancestral noise from a generator on the latent's device seeded with the seed,
  as ComfyUI at the reference commit (0.3.64) does. On the CPU its first draw therefore repeats the
  initial noise (ComfyUI issue #9819); later ComfyUI (PR #11528) seeds the CPU generator with seed+1.
  `CPU_ANCESTRAL_SEED_OFFSET` selects the behaviour; 0 keeps parity with the reference outputs.
- `BrownianTreeNoiseSampler`: SDE noise from a torchsde BrownianTree seeded with the seed, normalised
  to unit variance per interval (k-diffusion's sampler of the same name), optionally kept on the CPU.
A noise sampler is a callable `(sigma, sigma_next) -> Tensor` shaped like the latent.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torchsde

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Added to the seed of the ancestral generator when it lives on the CPU: 0 = ComfyUI 0.3.64, 1 = later ComfyUI.
CPU_ANCESTRAL_SEED_OFFSET = 0


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: list[int] | None = None) -> torch.Tensor:
    """Unit-variance initial noise shaped like `latent`, drawn on the CPU from `seed` (ComfyUI prepare_noise)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    if batch_index is None:
        return torch.randn(latent.size(), dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu")
    unique, inverse = np.unique(np.asarray(batch_index), return_inverse=True)
    draws = []
    for i in range(int(unique[-1]) + 1):
        noise = torch.randn([1] + list(latent.size())[1:], dtype=latent.dtype, layout=latent.layout,
                            generator=generator, device="cpu")
        if i in unique:
            draws.append(noise)
    return torch.cat([draws[int(i)] for i in np.ravel(inverse)], dim=0)


def default_noise_sampler(x: torch.Tensor, seed: int | None = None,
                          cpu_seed_offset: int = CPU_ANCESTRAL_SEED_OFFSET) -> NoiseSampler:
    """Gaussian noise like x from a generator on x's device seeded with seed (+cpu_seed_offset on the CPU);
    unseeded (global RNG) when seed is None."""
    generator = None
    if seed is not None:
        if x.device == torch.device("cpu"):
            seed = seed + cpu_seed_offset
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(seed))

    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)
    return sample


class BatchedBrownianTree:
    """torchsde.BrownianTree over [t0, t1] with one tree per seed (a list of seeds = one per batch item)."""

    def __init__(self, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, seed: int | list[int] | None = None,
                 cpu: bool = True):
        self.cpu_tree = cpu
        self.sign = 1
        if t0 > t1:
            t0, t1, self.sign = t1, t0, -1
        w0 = torch.zeros_like(x)
        self.batched = isinstance(seed, (tuple, list))
        if seed is None:
            seeds: tuple[int, ...] = (int(torch.randint(0, 2 ** 63 - 1, ()).item()),)
        elif self.batched:
            if len(seed) != x.shape[0]:
                raise ValueError("a list of seeds for the Brownian tree needs one seed per batch item")
            seeds, w0 = tuple(seed), w0[0]
        else:
            seeds = (int(seed),)
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.trees = tuple(torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seeds)

    def __call__(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        sign = 1
        if t0 > t1:
            t0, t1, sign = t1, t0, -1
        device, dtype = t0.device, t0.dtype
        if self.cpu_tree:
            t0, t1 = t0.detach().cpu().float(), t1.detach().cpu().float()
        w = torch.stack([tree(t0, t1) for tree in self.trees]).to(device=device, dtype=dtype) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler:
    """Noise from a Brownian tree: W(t1) - W(t0) divided by sqrt(|t1 - t0|), with t = transform(sigma).

    Successive calls over adjacent intervals give correlated-correctly increments, so SDE samplers stay
    consistent when steps change (k-diffusion; Kidger et al. 2021 for the tree)."""

    def __init__(self, x: torch.Tensor, sigma_min: torch.Tensor, sigma_max: torch.Tensor,
                 seed: int | list[int] | None = None, transform: Callable[[torch.Tensor], torch.Tensor] = lambda s: s,
                 cpu: bool = False):
        self.transform = transform
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        self.tree = BatchedBrownianTree(x, t0, t1, seed, cpu=cpu)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        return self.tree(t0, t1) / (t1 - t0).abs().sqrt()


def brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, seed: int | None, cpu: bool) -> NoiseSampler:
    """The Brownian tree noise sampler ComfyUI's SDE samplers build: over [min positive sigma, max sigma]."""
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seed, cpu=cpu)


class RandomNoise:
    """The NOISE socket value of RandomNoise: `generate_noise(latent)` = prepare_noise with the latent's
    batch_index; `seed` is also what seeds the samplers' extra noise."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generate_noise(self, latent: dict) -> torch.Tensor:
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


class DisableNoise:
    """The NOISE socket value of DisableNoise: all zeros (the latent is sampled as it is)."""

    seed = 0

    def generate_noise(self, latent: dict) -> torch.Tensor:
        samples = latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu")
