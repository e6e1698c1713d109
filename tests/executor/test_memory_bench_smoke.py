"""bench/gpu.py stays runnable: its CPU smoke mode (tiny checkpoint, fake 50 MB device for the capped runs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in ("time_to_first_image_s", "batch1", "batch4", "switching", "lowvram_batch1", "lowvram_switching"):
        assert key in r
    assert r["batch4"]["it_per_s"] > 0 and r["switching"]["rounds"] == 2
    assert [m["kind"] for m in r["lowvram_partial"]] == ["unet"]
    assert "### cpu, " in proc.stdout and "| batch 4 |" in proc.stdout
