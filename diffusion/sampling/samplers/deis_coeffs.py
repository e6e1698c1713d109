"""DEIS multistep coefficients (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
Integrator", arXiv:2204.13902), following the PyTorch port in zju-pi/diff-sampler (gits-main/solver_utils.py)
that ComfyUI uses.

"tab": the sigmas are mapped to the time of a VP SDE whose endpoints match EDM's (sigma 0.002 at
t = 1e-3, sigma 80 at t = 1); the coefficient of each past derivative is the integral over the step of
the exponential-integrator weight times that point's Lagrange basis polynomial, by a Riemann sum of N points.
"rhoab": Adams–Bashforth in sigma itself with closed-form Lagrange integrals.
"""
from __future__ import annotations

import math

import torch


def _vp_time(sigmas: torch.Tensor, epsilon_s: float = 1e-3, sigma_min: float = 0.002, sigma_max: float = 80.0):
    """Map EDM sigmas to VP time t with beta(t) linear; returns (t, beta_0, beta_1)."""
    log_min, log_max = math.log(sigma_min ** 2 + 1), math.log(sigma_max ** 2 + 1)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    beta_min = log_max - 0.5 * beta_d
    s = sigmas.detach().cpu().float()
    t = ((beta_min ** 2 + 2 * beta_d * (s ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _lagrange(nodes: torch.Tensor, j: int, taus: torch.Tensor) -> torch.Tensor:
    poly = torch.ones_like(taus)
    for k in range(nodes.shape[0]):
        if k != j:
            poly = poly * (taus - nodes[k]) / (nodes[j] - nodes[k])
    return poly


def _tab(sigmas: torch.Tensor, max_order: int, n: int) -> list[list[torch.Tensor]]:
    t_steps, beta_0, beta_1 = _vp_time(sigmas)
    coeffs: list[list[torch.Tensor]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(float(t_cur), float(t_next), n)
        dtau = (t_next - t_cur) / n
        log_alpha_slope = -(taus * (beta_1 - beta_0) + beta_0)  # d/dtau of log alpha(tau)
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        weight = -0.5 * log_alpha_slope / torch.sqrt(alpha * (1 - alpha))
        nodes = t_steps[[i - k for k in range(order)]]
        coeffs.append([torch.sum(weight * _lagrange(nodes, j, taus)) * dtau for j in range(order)])
    return coeffs


def _integral_2(a, b, start, end, c):
    """Integral over [start, end] of (x-a)(x-b) / ((c-a)(c-b))."""
    val = (end ** 3 - start ** 3) / 3 - (end ** 2 - start ** 2) * (a + b) / 2 + (end - start) * a * b
    return val / ((c - a) * (c - b))


def _integral_3(a, b, c, start, end, d):
    """Integral over [start, end] of (x-a)(x-b)(x-c) / ((d-a)(d-b)(d-c))."""
    val = (end ** 4 - start ** 4) / 4 - (end ** 3 - start ** 3) * (a + b + c) / 3 \
        + (end ** 2 - start ** 2) * (a * b + a * c + b * c) / 2 - (end - start) * a * b * c
    return val / ((d - a) * (d - b) * (d - c))


def _rhoab(t_steps: torch.Tensor, max_order: int) -> list[list[torch.Tensor]]:
    coeffs: list[list[torch.Tensor]] = []
    for i in range(len(t_steps) - 1):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        order = min(i, max_order)
        if order == 0:
            coeffs.append([])
            continue
        p = t_steps[[i - k for k in range(order + 1)]]
        if order == 1:
            coeffs.append([((t_next - p[1]) ** 2 - (t_cur - p[1]) ** 2) / (2 * (t_cur - p[1])),
                           (t_next - t_cur) ** 2 / (2 * (p[1] - t_cur))])
        elif order == 2:
            coeffs.append([_integral_2(p[1], p[2], t_cur, t_next, t_cur),
                           _integral_2(t_cur, p[2], t_cur, t_next, p[1]),
                           _integral_2(t_cur, p[1], t_cur, t_next, p[2])])
        else:
            coeffs.append([_integral_3(p[1], p[2], p[3], t_cur, t_next, t_cur),
                           _integral_3(t_cur, p[2], p[3], t_cur, t_next, p[1]),
                           _integral_3(t_cur, p[1], p[3], t_cur, t_next, p[2]),
                           _integral_3(t_cur, p[1], p[2], t_cur, t_next, p[3])])
    return coeffs


def deis_coefficients(sigmas: torch.Tensor, max_order: int, n: int = 10000, deis_mode: str = "tab"):
    """Per-step coefficient lists (newest derivative first) for DEIS of order <= max_order."""
    if deis_mode == "tab":
        return _tab(sigmas, max_order, n)
    if deis_mode == "rhoab":
        return _rhoab(sigmas, max_order)
    raise ValueError(f"unknown deis_mode {deis_mode!r}; choose 'tab' or 'rhoab'")
