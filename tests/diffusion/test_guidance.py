"""Guidance and conditioning combination (ComfyUI calc_cond_batch semantics) on an analytic model whose
prediction depends on its context, so every weighting rule is visible in the output."""
from __future__ import annotations

import pytest
import torch

from diffusion.sampling.conditioning import calc_cond_batch, convert_cond, resolve_areas_and_masks
from diffusion.sampling.guidance import (BasicGuider, CFGGuider, DualCFGGuider, cfg_function, rescale_cfg, rescale_cfg_patch,
                                sampling_function)
from diffusion.sampling.model_sampling import ModelSampling


class ContextModel:
    """denoised = 0.5·x + mean(context) per sample; records the batch size of every call."""

    def __init__(self):
        self.batches: list[int] = []
        self.model_sampling = ModelSampling()

    def apply_model(self, x, sigma, c_crossattn=None, c_concat=None, control=None, transformer_options=None, **_):
        self.batches.append(x.shape[0])
        return 0.5 * x + c_crossattn.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def cond(value: float, tokens: int = 77, **options):
    return [torch.full((1, tokens, 8), value), options]


X = torch.ones(1, 4, 16, 16)
SIGMA = torch.tensor([1.0])


def test_cfg_mixes_denoised_predictions_in_one_batched_call():
    m = ContextModel()
    out = sampling_function(m.apply_model, X, SIGMA, convert_cond([cond(1.0)]), convert_cond([cond(3.0)]), 7.0)
    # cond pred 0.5+3, uncond 0.5+1: uncond + (cond - uncond)·7
    torch.testing.assert_close(out, torch.full_like(X, 1.5 + 2.0 * 7.0))
    assert m.batches == [2]


def test_cfg_one_skips_uncond_unless_disabled():
    m = ContextModel()
    sampling_function(m.apply_model, X, SIGMA, convert_cond([cond(1.0)]), convert_cond([cond(3.0)]), 1.0)
    assert m.batches == [1]
    sampling_function(m.apply_model, X, SIGMA, convert_cond([cond(1.0)]), convert_cond([cond(3.0)]), 1.0,
                      {"disable_cfg1_optimization": True})
    assert m.batches == [1, 2]


def test_max_batch_splits_the_calls():
    m = ContextModel()
    out = sampling_function(m.apply_model, X, SIGMA, convert_cond([cond(1.0)]), convert_cond([cond(3.0)]), 2.0,
                            {"max_batch": 1})
    assert m.batches == [1, 1]
    torch.testing.assert_close(out, torch.full_like(X, 1.5 + 2.0 * 2.0))


def test_token_lengths_padded_to_lcm_when_batched():
    m = ContextModel()
    calls = []

    def apply(x, sigma, c_crossattn=None, **kw):
        calls.append(c_crossattn.shape)
        return m.apply_model(x, sigma, c_crossattn=c_crossattn)
    out = sampling_function(apply, X, SIGMA, convert_cond([cond(1.0, tokens=77)]),
                            convert_cond([cond(3.0, tokens=154)]), 2.0)
    assert calls == [torch.Size([2, 154, 8])]
    torch.testing.assert_close(out, torch.full_like(X, 1.5 + 2.0 * 2.0))
    calls.clear()
    sampling_function(apply, X, SIGMA, convert_cond([cond(1.0, tokens=77)]), convert_cond([cond(3.0, tokens=77 * 5)]), 2.0)
    assert len(calls) == 2  # ratio 5 > 4: not padded, run separately


def test_strength_and_multiple_conds_average_by_weight():
    m = ContextModel()
    conds = convert_cond([cond(2.0, strength=1.0), cond(6.0, strength=3.0)])
    out = calc_cond_batch(m.apply_model, [conds], X, SIGMA)[0]
    # (1·(0.5+2) + 3·3·(0.5+6)) / (1 + 3) with strength multiplying the output and the weight
    expected = (1.0 * 2.5 + 3.0 * 6.5) / 4.0
    torch.testing.assert_close(out, torch.full_like(X, expected))


def test_area_with_feathered_edges():
    m = ContextModel()
    conds = convert_cond([cond(0.0), cond(4.0, area=(8, 8, 8, 0), strength=1.0)])
    resolve_areas_and_masks(conds, 16, 16, torch.device("cpu"))
    out = calc_cond_batch(m.apply_model, [conds], X, SIGMA)[0]
    # Outside the area only the global cond (0.5); deep inside, both average to (0.5 + 4.5)/2 weighted by the ramp.
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.5)
    # rows 8..15, cols 0..7: top edge (y=8 != 0) ramps over min(8, 8//4)=2 rows, right edge (x+w=8<16) too.
    w_top = 0.5  # first ramp row weight (1/2)
    assert float(out[0, 0, 8, 0]) == pytest.approx((0.5 + w_top * 4.5) / (1 + w_top))
    assert float(out[0, 0, 12, 2]) == pytest.approx((0.5 + 4.5) / 2)


def test_percentage_area_and_mask():
    conds = convert_cond([cond(1.0, area=("percentage", 0.5, 0.25, 0.5, 0.0))])
    resolve_areas_and_masks(conds, 16, 16, torch.device("cpu"))
    assert conds[0]["area"] == (8, 4, 8, 0)
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1.0
    m = ContextModel()
    conds = convert_cond([cond(0.0), cond(4.0, mask=mask, mask_strength=0.5)])
    resolve_areas_and_masks(conds, 16, 16, torch.device("cpu"))
    out = calc_cond_batch(m.apply_model, [conds], X, SIGMA)[0]
    assert float(out[0, 0, 0, 0]) == pytest.approx((0.5 + 0.5 * 4.5) / 1.5)
    assert float(out[0, 0, 15, 0]) == pytest.approx(0.5)


def test_timestep_range_by_percent():
    m = ContextModel()
    ms = m.model_sampling
    guider = CFGGuider(m)
    guider.set_conds([cond(2.0, start_percent=0.0, end_percent=0.5), cond(6.0, start_percent=0.5, end_percent=1.0)],
                     [cond(0.0)])
    guider.set_cfg(1.0)
    guider.prepare(X, None, None)
    early = guider(X, torch.tensor([ms.percent_to_sigma(0.2)]))
    late = guider(X, torch.tensor([ms.percent_to_sigma(0.8)]))
    torch.testing.assert_close(early, torch.full_like(X, 2.5))
    torch.testing.assert_close(late, torch.full_like(X, 6.5))


def test_cfg_hooks_receive_comfyui_arguments():
    seen = {}

    def cfg_fn(args):
        seen.update(args)
        return args["cond"]  # noise form: x - cond_pred

    def post(args):
        return args["denoised"] * 2
    out = cfg_function(None, torch.full_like(X, 3.0), torch.full_like(X, 1.0), 5.0, X, SIGMA,
                       {"sampler_cfg_function": cfg_fn, "sampler_post_cfg_function": [post]})
    torch.testing.assert_close(out, torch.full_like(X, 6.0))
    torch.testing.assert_close(seen["uncond"], X - 1.0)
    assert seen["cond_scale"] == 5.0


def test_rescale_cfg_limits_to_plain_cfg_and_matches_std():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8) * 3
    cond_pred, uncond_pred = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([2.0, 2.0])
    args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": 7.5, "input": x, "sigma": sigma}
    plain = uncond_pred + 7.5 * (cond_pred - uncond_pred)
    torch.testing.assert_close(x - rescale_cfg(args, 0.0), plain, rtol=1e-4, atol=1e-4)
    # multiplier 1: the v-space result has the conditional v's standard deviation (Lin et al. 2023, eq. 15).
    out = x - rescale_cfg(args, 1.0)
    s = sigma.view(-1, 1, 1, 1)
    to_v = lambda d: (x / (s ** 2 + 1) - d) * (s ** 2 + 1) ** 0.5 / s  # noqa: E731
    torch.testing.assert_close(to_v(out).std(dim=(1, 2, 3)), to_v(cond_pred).std(dim=(1, 2, 3)), rtol=1e-4, atol=1e-4)
    assert callable(rescale_cfg_patch(0.7))


def test_basic_and_dual_cfg_guiders():
    m = ContextModel()
    basic = BasicGuider(m)
    basic.set_conds([cond(3.0)])
    basic.prepare(X, None, None)
    torch.testing.assert_close(basic(X, SIGMA), torch.full_like(X, 3.5))
    dual = DualCFGGuider(m)
    dual.set_conds([cond(5.0)], [cond(3.0)], [cond(1.0)])
    dual.set_cfg(2.0, 4.0)
    dual.prepare(X, None, None)
    # negative 1.5, middle 3.5, positive 5.5: (1.5 + (3.5-1.5)·4) + (5.5-3.5)·2
    torch.testing.assert_close(dual(X, SIGMA), torch.full_like(X, 9.5 + 4.0))


class AddControl:
    """A ControlNet-like object following conditioning.Control: its residual shifts the prediction."""

    def __init__(self, shift: float):
        self.shift, self.calls = shift, []

    def get_control(self, x, sigma, cond, batch_chunks, transformer_options=None):
        self.calls.append((x.shape[0], batch_chunks, tuple(transformer_options["cond_or_uncond"])))
        return {"shift": self.shift}


def test_control_objects_reach_the_model_and_apply_to_uncond():
    seen = []

    def apply(x, sigma, c_crossattn=None, control=None, **_):
        seen.append(control)
        shift = control["shift"] if control else 0.0
        return 0.5 * x + c_crossattn.mean(dim=(1, 2)).view(-1, 1, 1, 1) + shift
    m = ContextModel()
    m.apply_model = apply
    control = AddControl(10.0)
    guider = CFGGuider(m)
    guider.set_conds([cond(3.0, control=control, control_apply_to_uncond=True)], [cond(1.0)])
    guider.set_cfg(2.0)
    guider.prepare(X, None, None)
    out = guider(X, SIGMA)
    # The negative cond got the same control, so both share one batched call with the residual.
    assert control.calls == [(2, 2, (1, 0))]
    torch.testing.assert_close(out, torch.full_like(X, 11.5 + 2.0 * 2.0))


def test_model_function_wrapper_sees_the_batch():
    m = ContextModel()
    seen = {}

    def wrapper(apply_model, args):
        seen.update(args)
        return apply_model(args["input"], args["timestep"], **args["c"]) * 2
    out = sampling_function(m.apply_model, X, SIGMA, convert_cond([cond(1.0)]), convert_cond([cond(3.0)]), 1.5,
                            {"model_function_wrapper": wrapper})
    assert seen["cond_or_uncond"] == [1, 0] and seen["cond_scale"] == 1.5
    torch.testing.assert_close(out, torch.full_like(X, 2 * 1.5 + 2 * 2.0 * 1.5))
