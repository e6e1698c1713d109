"""A pack that fails on a ComfyUI name Loom lacks is reported with its traceback and the name it missed (a module,
a name imported from a module, an attribute read off one), and the runtime loads without it."""
from __future__ import annotations

from pathlib import Path

from cn_env import make_runtime

from nodes.custom_loader import import_times_report

PACKS = {
    "from_import.py": "from comfy.samplers import NoSuchGuiderForLoomTests\n",
    "attribute.py": "import comfy.model_management as mm\nDEVICE = mm.no_such_function_for_loom_tests()\n",
    "module.py": "import comfy_extras.nodes_no_such_module_for_loom_tests\n",
    "own_bug.py": "import json\njson.no_such_json_function()\n",
    "fine.py": "from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced\nNODE_CLASS_MAPPINGS = {}\n",
}


def test_failed_packs_name_what_they_missed(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    packs.mkdir()
    for name, source in PACKS.items():
        (packs / name).write_text(source)
    runtime = make_runtime(tmp_path / "base", packs=packs)
    loaded = {p.name: p for p in runtime.custom_packs}
    assert loaded["fine"].state == "ok"
    expected = {"from_import": ("comfy.samplers.NoSuchGuiderForLoomTests", "name"),
                "attribute": ("comfy.model_management.no_such_function_for_loom_tests", "name"),
                "module": ("comfy_extras.nodes_no_such_module_for_loom_tests", "module")}
    for name, (missing, kind) in expected.items():
        pack = loaded[name]
        assert pack.state == "failed" and pack.missing == missing
        assert "Traceback (most recent call last)" in pack.error
        assert f"does not provide the {kind} '{missing}'" in pack.error
        assert pack.to_json()["missing"] == missing
    assert loaded["own_bug"].state == "failed" and loaded["own_bug"].missing is None
    assert "does not provide" not in loaded["own_bug"].error  # a pack's own bug is not blamed on Loom
    assert "KSampler" in runtime.registry  # the runtime came up without the failed packs
    report = import_times_report(runtime.custom_packs)
    assert "(IMPORT FAILED: Loom lacks comfy.samplers.NoSuchGuiderForLoomTests)" in report
