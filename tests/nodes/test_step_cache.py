"""EasyCache and LazyCache through the real executor on the tiny SD1.5 checkpoint: threshold 0 gives the uncached
latent exactly, a high threshold skips steps (counted from the log), a window outside the run never skips, and the
wrapper's counting against a toy model."""
from __future__ import annotations

import logging
import re

import pytest
import torch

from diffusion.sampling.step_cache import StepCache
from tests.nodes.sd_env import SDEnv, txt2img

STEPS = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("step_cache"))


def _sample(env: SDEnv, cache: dict | None) -> torch.Tensor:
    prompt = txt2img(steps=STEPS, size=32)
    if cache is not None:
        prompt["c"] = {"class_type": cache.pop("class_type"), "inputs": {"model": ["4", 0], **cache}}
        prompt["3"]["inputs"]["model"] = ["c", 0]
    return env.value(prompt, "3")["samples"]


def _skipped(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int]]:
    found = [re.search(r"skipped (\d+) of (\d+)", r.getMessage()) for r in caplog.records]
    return [(int(m[1]), int(m[2])) for m in found if m]


@pytest.mark.parametrize("class_type", ["EasyCache", "LazyCache"])
def test_threshold_zero_is_uncached(env: SDEnv, class_type: str) -> None:
    base = _sample(env, None)
    same = _sample(env, {"class_type": class_type, "reuse_threshold": 0.0, "start_percent": 0.0,
                         "end_percent": 1.0, "verbose": False})
    assert torch.equal(same, base)


@pytest.mark.parametrize("class_type", ["EasyCache", "LazyCache"])
def test_high_threshold_skips_steps(env: SDEnv, class_type: str, caplog: pytest.LogCaptureFixture) -> None:
    base = _sample(env, None)
    caplog.set_level(logging.INFO, logger="loom.step_cache")
    cached = _sample(env, {"class_type": class_type, "reuse_threshold": 3.0, "start_percent": 0.0,
                           "end_percent": 1.0, "verbose": True})
    counts = _skipped(caplog)
    assert counts and counts[0][0] > 0 and counts[0][1] == STEPS
    assert not torch.equal(cached, base)
    assert torch.isfinite(cached).all()


def test_outside_the_window_never_skips(env: SDEnv) -> None:
    base = _sample(env, None)
    # 0..0.01 of the schedule holds only the first step (always computed); nothing may be skipped
    out = _sample(env, {"class_type": "EasyCache", "reuse_threshold": 3.0, "start_percent": 0.0,
                        "end_percent": 0.01, "verbose": False})
    assert torch.equal(out, base)


def test_wrapper_counts_and_resets_between_runs() -> None:
    cache = StepCache(1.0, start_sigma=100.0, end_sigma=0.0, lazy=True)
    calls = []

    def model(x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        calls.append(float(t[0]))
        return x * 0.9

    x = torch.ones(1, 4, 2, 2)
    for _run in range(2):
        for sigma in (10.0, 5.0, 2.0, 1.0):
            x = cache(model, {"input": x, "timestep": torch.tensor([sigma]), "c": {}, "cond_or_uncond": [0]})
    cache.finish_run()
    assert len(cache.runs) == 2 and cache.runs[0] == cache.runs[1]
    computed, skipped = cache.runs[0]
    assert computed + skipped == 4 and skipped > 0


def test_start_after_end_is_a_clear_error(env: SDEnv) -> None:
    prompt = txt2img(steps=2)
    prompt["c"] = {"class_type": "EasyCache", "inputs": {"model": ["4", 0], "reuse_threshold": 0.2,
                                                        "start_percent": 0.9, "end_percent": 0.1, "verbose": False}}
    prompt["3"]["inputs"]["model"] = ["c", 0]
    result = env.run(prompt)
    assert "start_percent" in str(getattr(result, "error", None) or result)
