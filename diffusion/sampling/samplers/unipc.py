"""UniPC, the unified predictor-corrector multistep solver (Zhao et al. 2023, arXiv:2302.04867), in data
prediction with the B(h) = h ("bh1") or B(h) = e^h - 1 ("bh2") variants, as ComfyUI's uni_pc/uni_pc_bh2.

ComfyUI runs UniPC on the VP view of the variance-exploding sigmas: x_vp = x / sqrt(1+sigma²),
alpha = 1/sqrt(1+sigma²), sigma_vp = sigma/sqrt(1+sigma²), lambda = -log(sigma); a final sigma of 0 is
replaced by 0.001 and the last step skips the corrector. The data prediction at x_vp is the denoiser
at x_vp·sqrt(1+sigma²), so the solver needs only the denoiser.
"""
from __future__ import annotations

import torch

from diffusion.sampling.samplers.common import Callback, Denoiser, setup


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * torch.log(1 / (sigma * sigma + 1)))


def _sigma_vp(sigma: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1.0 - torch.exp(2.0 * 0.5 * torch.log(1 / (sigma * sigma + 1))))


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    log_mean = 0.5 * torch.log(1 / (sigma * sigma + 1))
    return log_mean - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean))


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v[(...,) + (None,) * (x.ndim - 1)]


def _data_prediction(model, x_vp, sigma_vec, extra_args):
    """x0 from the denoiser, evaluated at the variance-exploding point of x_vp."""
    s = _bcast(sigma_vec, x_vp)
    return model(x_vp * ((s ** 2 + 1.0) ** 0.5), sigma_vec, **extra_args)


def _coefficients(rks: torch.Tensor, hh: torch.Tensor, order: int, variant: str):
    """The linear system R·rho = b of UniPC-p (Zhao et al. 2023, Algorithm 2/3 with B(h))."""
    h_phi_k = torch.expm1(hh) / hh - 1
    factorial = 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(b, device=rks.device), b_h


def _uni_pc_update(model, x, preds, ts, t, order, variant, extra_args, use_corrector):
    """One UniPC step from ts[-1] to t using the stored predictions; returns (x_t, prediction at x_t or None)."""
    t_prev, m_prev = ts[-1], preds[-1]
    lambda_prev, lambda_t = _lambda(t_prev), _lambda(t)
    h = lambda_t - lambda_prev
    rks, d1s = [], []
    for i in range(1, order):
        rk = ((_lambda(ts[-(i + 1)]) - lambda_prev) / h)[0]
        rks.append(rk)
        d1s.append((preds[-(i + 1)] - m_prev) / rk)
    rks.append(1.0)
    rks_t = torch.tensor(rks, device=x.device)
    hh = -h[0]
    R, b, b_h = _coefficients(rks_t, hh, order, variant)
    d1 = torch.stack(d1s, dim=1) if d1s else None
    alpha_t = _alpha(t)
    x_base = _bcast(_sigma_vp(t) / _sigma_vp(t_prev), x) * x - _bcast(alpha_t * torch.expm1(hh), x) * m_prev
    pred_res = 0
    if d1 is not None:
        rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        pred_res = torch.einsum("k,bk...->b...", rhos_p, d1)
    x_t = x_base - _bcast(alpha_t * b_h, x) * pred_res
    if not use_corrector:
        return x_t, None
    rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(R, b)
    model_t = _data_prediction(model, x_t, t, extra_args)
    corr_res = torch.einsum("k,bk...->b...", rhos_c[:-1], d1) if d1 is not None else 0
    x_t = x_base - _bcast(alpha_t * b_h, x) * (corr_res + rhos_c[-1] * (model_t - m_prev))
    return x_t, model_t


@torch.no_grad()
def sample_uni_pc(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                  callback: Callback = None, disable=None, variant="bh1") -> torch.Tensor:
    """UniPC multistep, order min(3, steps-1), lower orders at the start and end (ComfyUI sample_unipc)."""
    extra_args, _ = setup(x, extra_args)
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    steps = len(timesteps) - 1
    order = min(3, len(timesteps) - 2)
    batch = x.shape[0]
    preds: list[torch.Tensor] = []
    ts: list[torch.Tensor] = []
    for step_index in range(steps):
        if step_index == 0:
            vec_t = timesteps[0].expand(batch)
            preds, ts = [_data_prediction(model, x, vec_t, extra_args)], [vec_t]
        elif step_index < order:
            vec_t = timesteps[step_index].expand(batch)
            x, model_x = _uni_pc_update(model, x, preds, ts, vec_t, step_index, variant, extra_args, True)
            preds.append(model_x)
            ts.append(vec_t)
        else:
            last = step_index + (2 if step_index == steps - 1 else 1)
            for step in range(step_index, last):
                vec_t = timesteps[step].expand(batch)
                step_order = min(order, steps + 1 - step)
                x, model_x = _uni_pc_update(model, x, preds, ts, vec_t, step_order, variant, extra_args, step != steps)
                preds, ts = preds[1:] + [preds[-1]], ts[1:] + [vec_t]
                if step < steps:
                    preds[-1] = model_x
        if callback is not None:
            callback({"x": x, "i": step_index, "sigma": timesteps[step_index], "sigma_hat": timesteps[step_index],
                      "denoised": preds[-1]})
    return x / _alpha(timesteps[-1])


@torch.no_grad()
def sample_uni_pc_bh2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                      callback: Callback = None, disable=None) -> torch.Tensor:
    """UniPC with B(h) = e^h - 1 (UniPC-bh2)."""
    return sample_uni_pc(model, x, sigmas, extra_args=extra_args, callback=callback, variant="bh2")
