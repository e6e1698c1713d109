"""nodes/conditioning_edit.py through the real executor: combined, averaged, concatenated, area, mask, zero-out and
timestep-range conditionings against direct computations; inputs are never modified."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.nodes.ops_env import OpsEnv


@pytest.fixture
def env(tmp_path: Path) -> OpsEnv:
    return OpsEnv(tmp_path)


def cond(tokens: int, seed: int, pooled: bool = True, **extra: Any) -> list[list[Any]]:
    gen = torch.Generator().manual_seed(seed)
    options: dict[str, Any] = dict(extra)
    if pooled:
        options["pooled_output"] = torch.randn(1, 6, generator=gen)
    return [[torch.randn(1, tokens, 6, generator=gen), options]]


def test_declarations(env: OpsEnv) -> None:
    area = env.info("ConditioningSetArea")
    assert area["input_order"]["required"] == ["conditioning", "width", "height", "x", "y", "strength"]
    assert area["input"]["required"]["width"][1] == {"default": 64, "min": 64, "max": 16384, "step": 8}
    assert area["display_name"] == "Conditioning (Set Area)"
    assert env.info("ConditioningSetMask")["input"]["required"]["set_cond_area"][0] == ["default", "mask bounds"]
    assert env.info("ConditioningSetTimestepRange")["category"] == "advanced/conditioning"
    assert env.info("ConditioningAverage")["input"]["required"]["conditioning_to_strength"][1]["default"] == 1.0


def test_combine_and_concat(env: OpsEnv) -> None:
    a, b = cond(4, 1), cond(3, 2)
    combined = env.value("ConditioningCombine", {"conditioning_1": a, "conditioning_2": b})
    assert len(combined) == 2 and combined[0][0] is a[0][0] and combined[1][0] is b[0][0]
    concat = env.value("ConditioningConcat", {"conditioning_to": a, "conditioning_from": b})
    assert concat[0][0].shape == (1, 7, 6)
    assert torch.equal(concat[0][0], torch.cat([a[0][0], b[0][0]], dim=1))
    assert concat[0][1] == a[0][1] and concat[0][1] is not a[0][1]


def test_average(env: OpsEnv) -> None:
    to, frm = cond(5, 1), cond(3, 2)
    out = env.value("ConditioningAverage", {"conditioning_to": to, "conditioning_from": frm,
                                            "conditioning_to_strength": 0.3})
    padded = torch.cat([frm[0][0], torch.zeros(1, 2, 6)], dim=1)
    assert torch.allclose(out[0][0], to[0][0] * 0.3 + padded * 0.7)
    assert torch.allclose(out[0][1]["pooled_output"], to[0][1]["pooled_output"] * 0.3 + frm[0][1]["pooled_output"] * 0.7)
    longer = cond(8, 3)
    out = env.value("ConditioningAverage", {"conditioning_to": to, "conditioning_from": longer,
                                            "conditioning_to_strength": 0.5})
    assert torch.allclose(out[0][0], (to[0][0] + longer[0][0][:, :5]) * 0.5)
    no_pool = cond(5, 4, pooled=False)
    out = env.value("ConditioningAverage", {"conditioning_to": no_pool, "conditioning_from": frm,
                                            "conditioning_to_strength": 0.5})
    assert torch.allclose(out[0][1]["pooled_output"], frm[0][1]["pooled_output"])


def test_areas_strength_and_range(env: OpsEnv) -> None:
    base = cond(2, 1, extra_key="kept")
    out = env.value("ConditioningSetArea", {"conditioning": base, "width": 200, "height": 96, "x": 24, "y": 8,
                                            "strength": 1.5})
    assert out[0][1]["area"] == (12, 25, 1, 3) and out[0][1]["strength"] == 1.5
    assert out[0][1]["set_area_to_bounds"] is False and out[0][1]["extra_key"] == "kept"
    assert "area" not in base[0][1]
    pct = env.value("ConditioningSetAreaPercentage", {"conditioning": base, "width": 0.5, "height": 0.25,
                                                      "x": 0.1, "y": 0.2, "strength": 2.0})
    assert pct[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1) and pct[0][1]["strength"] == 2.0
    strength = env.value("ConditioningSetAreaStrength", {"conditioning": pct, "strength": 0.5})
    assert strength[0][1]["strength"] == 0.5 and strength[0][1]["area"] == pct[0][1]["area"]
    rng = env.value("ConditioningSetTimestepRange", {"conditioning": base, "start": 0.2, "end": 0.7})
    assert (rng[0][1]["start_percent"], rng[0][1]["end_percent"]) == (0.2, 0.7)


def test_set_mask_and_zero_out(env: OpsEnv) -> None:
    base = cond(2, 1)
    mask = torch.rand(4, 4)
    out = env.value("ConditioningSetMask", {"conditioning": base, "mask": mask, "strength": 0.8,
                                            "set_cond_area": "mask bounds"})
    assert out[0][1]["mask"].shape == (1, 4, 4) and torch.equal(out[0][1]["mask"][0], mask)
    assert out[0][1]["mask_strength"] == 0.8 and out[0][1]["set_area_to_bounds"] is True
    default = env.value("ConditioningSetMask", {"conditioning": base, "mask": mask[None], "strength": 1.0,
                                                "set_cond_area": "default"})
    assert default[0][1]["set_area_to_bounds"] is False
    zero = env.value("ConditioningZeroOut", {"conditioning": base})
    assert torch.count_nonzero(zero[0][0]) == 0 and zero[0][0].shape == base[0][0].shape
    assert torch.count_nonzero(zero[0][1]["pooled_output"]) == 0
    assert torch.count_nonzero(base[0][1]["pooled_output"]) > 0
