"""Guidance nodes: each hook against its defining property, computed independently, and each node through the real
executor on the tiny SD1.5 checkpoint (neutral settings give the plain image, others change it)."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from diffusion.sampling.guidance_patches import (CFGNormPatch, EpsilonScalingPatch, FreScaPatch, cfg_zero_star, mahiro,
                                        optimized_scale, tangential_damping)
from tests.nodes.sd_env import SDEnv, txt2img

STEPS = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("guidance"))


def ksampled(env: SDEnv, patch: dict[str, Any] | None = None, cfg: float = 5.0, negative: str = "blurry",
             extra: dict[str, Any] | None = None) -> torch.Tensor:
    prompt = txt2img(steps=STEPS, cfg=cfg, negative=negative)
    del prompt["8"], prompt["9"]
    if patch is not None:
        prompt["p"] = patch
        prompt["3"]["inputs"]["model"] = ["p", 0]
    prompt.update(extra or {})
    return env.value(prompt, "3")["samples"]


def patched(env: SDEnv, class_type: str, **inputs: Any) -> torch.Tensor:
    return ksampled(env, {"class_type": class_type, "inputs": {"model": ["4", 0], **inputs}})


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_cfg_zero_star_mixes_with_the_projected_uncond() -> None:
    x, c, u = rand(2, 4, 3, 3), rand(2, 4, 3, 3, seed=1), rand(2, 4, 3, 3, seed=2)
    s = 4.0
    out = cfg_zero_star({"input": x, "cond_denoised": c, "uncond_denoised": u, "cond_scale": s,
                         "denoised": u + (c - u) * s})
    for i in range(2):
        nc, nu = (x[i] - c[i]).flatten(), (x[i] - u[i]).flatten()
        alpha = float(nc @ nu / (nu @ nu))
        torch.testing.assert_close(out[i], alpha * u[i] + s * (c[i] - alpha * u[i]), rtol=1e-5, atol=1e-5)
    same = optimized_scale(x - u, x - u)
    torch.testing.assert_close(same, torch.ones_like(same))


def test_cfg_norm_caps_the_norm_at_the_conds() -> None:
    c, result = rand(1, 4, 3, 3), 3 * rand(1, 4, 3, 3, seed=1)
    out = CFGNormPatch(1.0)({"cond_denoised": c, "denoised": result})
    cn, rn = c.norm(dim=1), result.norm(dim=1)
    torch.testing.assert_close(out.norm(dim=1), torch.minimum(cn, rn), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(CFGNormPatch(0.5)({"cond_denoised": c, "denoised": result}), out * 0.5)


def test_tangential_damping_keeps_the_shared_direction() -> None:
    cond = rand(1, 4, 4, 4)
    parallel = 0.7 * cond
    torch.testing.assert_close(tangential_damping(cond, parallel), parallel, rtol=1e-4, atol=1e-5)
    uncond = rand(1, 4, 4, 4, seed=3)
    damped = tangential_damping(cond, uncond).flatten()
    matrix = torch.stack([uncond.flatten(), cond.flatten()])
    v1 = torch.linalg.svd(matrix.double(), full_matrices=False)[2][0]
    torch.testing.assert_close(damped.double(), (uncond.flatten().double() @ v1) * v1, rtol=1e-4, atol=1e-5)


def test_mahiro_formula() -> None:
    c, u = rand(1, 4, 3, 3), rand(1, 4, 3, 3, seed=1)
    s = 3.0
    result = u + (c - u) * s
    out = mahiro({"cond_scale": s, "cond_denoised": c, "uncond_denoised": u, "denoised": result})
    leap, u_leap = c * s, u * s
    merge = (leap + result) / 2
    a = (u_leap.abs().sqrt() * u_leap.sign())
    b = (merge.abs().sqrt() * merge.sign())
    cos = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)).mean()
    w = 2 * (cos + 1)
    torch.testing.assert_close(out, (w * result + (4 - w) * leap) / 4, rtol=1e-5, atol=1e-5)


def test_fresca_scales_frequencies_apart() -> None:
    cond, uncond = rand(1, 2, 8, 8), rand(1, 2, 8, 8, seed=1)
    out = FreScaPatch(1.0, 1.0, 2)({"conds_out": [cond, uncond]})
    torch.testing.assert_close(out[0], cond, rtol=1e-5, atol=1e-5)
    doubled = FreScaPatch(2.0, 2.0, 2)({"conds_out": [cond, uncond]})[0]
    torch.testing.assert_close(doubled - uncond, 2 * (cond - uncond), rtol=1e-4, atol=1e-5)
    low_only = FreScaPatch(1.0, 0.0, 4)({"conds_out": [cond, uncond]})[0]  # cutoff 4 of 8 keeps every frequency
    torch.testing.assert_close(low_only, cond, rtol=1e-4, atol=1e-5)
    high_cut = FreScaPatch(1.0, 0.0, 1)({"conds_out": [cond, uncond]})[0] - uncond
    spectrum = torch.fft.fftshift(torch.fft.fft2(high_cut), dim=(-2, -1))
    # the kept centre is frequencies {-1, 0} on each axis; keeping the real part mirrors it onto +1
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[3:6, 3:6] = False
    assert spectrum[..., outside].abs().max() < 1e-4


def test_epsilon_scaling_divides_the_noise() -> None:
    x, d = rand(1, 4, 2, 2), rand(1, 4, 2, 2, seed=1)
    out = EpsilonScalingPatch(1.25)({"input": x, "denoised": d})
    torch.testing.assert_close(x - out, (x - d) / 1.25)


def test_perp_neg_guider_with_the_empty_negative_is_plain_cfg(env: SDEnv) -> None:
    prompt = txt2img(steps=STEPS)
    for key in ("3", "8", "9"):
        del prompt[key]
    prompt.update({
        "e": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "s": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sig": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": STEPS,
                                                           "denoise": 1.0}},
        "z": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "g": {"class_type": "PerpNegGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                        "negative": ["e", 0], "empty_conditioning": ["e", 0],
                                                        "cfg": 5.0, "neg_scale": 1.0}},
        "cfg": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["e", 0],
                                                      "cfg": 5.0}},
        "a": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["z", 0], "guider": ["g", 0],
                                                                "sampler": ["s", 0], "sigmas": ["sig", 0],
                                                                "latent_image": ["5", 0]}},
    })
    perp = env.value(prompt, "a")["samples"]
    prompt["a"]["inputs"]["guider"] = ["cfg", 0]
    plain = env.value(prompt, "a")["samples"]
    torch.testing.assert_close(perp, plain, rtol=1e-4, atol=1e-4)
    # neg_scale 0 ignores the negative entirely: CFG against the empty prompt again
    prompt["a"]["inputs"]["guider"] = ["g", 0]
    prompt["g"]["inputs"].update(negative=["7", 0], neg_scale=0.0)
    torch.testing.assert_close(env.value(prompt, "a")["samples"], plain, rtol=1e-4, atol=1e-4)
    prompt["g"]["inputs"]["neg_scale"] = 1.0
    assert (env.value(prompt, "a")["samples"] - plain).abs().max() > 1e-4


def test_perp_neg_patch_with_negative_as_empty_is_plain_cfg(env: SDEnv) -> None:
    base = ksampled(env)
    extra = {"e": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}}}
    same = ksampled(env, {"class_type": "PerpNeg", "inputs": {"model": ["4", 0], "empty_conditioning": ["e", 0],
                                                              "neg_scale": 1.0}}, extra=extra)
    torch.testing.assert_close(same, base, rtol=1e-4, atol=1e-4)
    extra["e"]["inputs"]["text"] = ""
    other = ksampled(env, {"class_type": "PerpNeg", "inputs": {"model": ["4", 0], "empty_conditioning": ["e", 0],
                                                               "neg_scale": 1.0}}, extra=extra)
    assert (other - base).abs().max() > 1e-4


def test_apg_at_eta_1_without_clip_or_momentum_is_cfg_one_higher(env: SDEnv) -> None:
    # ComfyUI's APG hands CFG the cond u + g' + (c − u)/s, so with g' = g the mix is u + (s + 1)·g
    apg = patched(env, "APG", eta=1.0, norm_threshold=0.0, momentum=0.0)
    torch.testing.assert_close(apg, ksampled(env, cfg=6.0), rtol=1e-4, atol=1e-4)
    assert (patched(env, "APG", eta=0.0, norm_threshold=5.0, momentum=0.5) - apg).abs().max() > 1e-4


def test_guidance_nodes_run_and_neutral_settings_are_plain(env: SDEnv) -> None:
    base = ksampled(env)
    torch.testing.assert_close(patched(env, "FreSca", scale_low=1.0, scale_high=1.0, freq_cutoff=20), base,
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(patched(env, "Epsilon Scaling", scaling_factor=1.0), base, rtol=1e-4, atol=1e-4)
    for class_type, inputs in (("CFGZeroStar", {}), ("CFGNorm", {"strength": 1.0}), ("TCFG", {}), ("Mahiro", {}),
                               ("FreSca", {"scale_low": 1.0, "scale_high": 1.25, "freq_cutoff": 1}),
                               ("Epsilon Scaling", {"scaling_factor": 1.005})):
        out = patched(env, class_type, **inputs)
        assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-5, class_type


def test_latent_apply_operation_cfg(env: SDEnv) -> None:
    base = ksampled(env)
    op = {"o": {"class_type": "LatentOperationSharpen", "inputs": {"sharpen_radius": 1, "sigma": 1.0,
                                                                   "alpha": 0.0}}}
    node = {"class_type": "LatentApplyOperationCFG", "inputs": {"model": ["4", 0], "operation": ["o", 0]}}
    torch.testing.assert_close(ksampled(env, node, extra=op), base, rtol=1e-4, atol=1e-4)
    op["o"] = {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 0.5}}
    changed = ksampled(env, node, extra=op)
    assert (changed - base).abs().max() > 1e-4
    # only steps inside [end, start] are changed: a window over the first step alone gives a third result
    node["inputs"].update(start_percent=0.0, end_percent=0.3)
    first = ksampled(env, node, extra=op)
    assert (first - base).abs().max() > 1e-4 and (first - changed).abs().max() > 1e-4


def test_object_info(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    assert info["Epsilon Scaling"]["input"]["required"]["scaling_factor"][1]["default"] == 1.005
    assert info["PerpNeg"]["display_name"] == "Perp-Neg (DEPRECATED by PerpNegGuider)"
    assert info["PerpNeg"]["deprecated"] is True
    assert info["PerpNegGuider"]["input_order"]["required"] == ["model", "positive", "negative",
                                                                "empty_conditioning", "cfg", "neg_scale"]
    assert info["PerpNegGuider"]["output"] == ["GUIDER"]
    assert info["APG"]["display_name"] == "Adaptive Projected Guidance"
    assert info["APG"]["input_order"]["required"] == ["model", "eta", "norm_threshold", "momentum"]
    for name in ("CFGZeroStar", "CFGNorm", "TCFG", "Mahiro"):
        assert info[name]["output_name"] == ["patched_model"], name
    assert info["CFGZeroStar"]["category"] == "advanced/guidance"
    assert info["FreSca"]["input"]["required"]["freq_cutoff"][1] == {
        "default": 20, "min": 1, "max": 100, "step": 1, "tooltip": info["FreSca"]["input"]["required"][
            "freq_cutoff"][1]["tooltip"]}
