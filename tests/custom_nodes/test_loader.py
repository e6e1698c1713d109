"""The custom node loader on real pack folders: each API style, failures isolated with their
tracebacks, disable flags, name collisions (the built-in wins), fresh namespaces, load speed."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from cn_env import EXAMPLE_PACKS, PACKS, bare_runtime, make_runtime

from compat import install_compat
from folders import Folders
from nodes.custom_loader import (NAMESPACE, find_packs, import_times_report, load_packs, pack_directories,
                                 register_packs, web_directories)
from nodes.registry import build_builtin_registry


def _by_name(packs: list) -> dict:
    return {p.name: p for p in packs}


def test_every_style_loads_and_failures_stay_with_their_pack(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    packs = _by_name(load_packs([PACKS]))
    assert set(packs) == {"broken_syntax", "classic_pack", "loom_typed", "needs_comfy_flux", "raises_at_import",
                          "schema_pack", "single_module"}  # .disabled file and folder without __init__ skipped
    ok = {n for n, p in packs.items() if p.state == "ok"}
    assert ok == {"classic_pack", "loom_typed", "schema_pack", "single_module"}
    assert packs["loom_typed"].api_styles == ["loom"] and packs["schema_pack"].api_styles == ["schema"]
    assert packs["classic_pack"].api_styles == ["classic"]
    assert sorted(packs["schema_pack"].nodes) == ["SchemaAdd", "SchemaChoose", "SchemaShow", "SchemaThing"]
    assert sorted(packs["loom_typed"].nodes) == ["TypedDouble", "TypedPick"]

    syntax = packs["broken_syntax"]
    assert syntax.state == "failed" and "SyntaxError" in syntax.error and "broken_syntax" in syntax.error
    raised = packs["raises_at_import"]
    assert "Traceback (most recent call last)" in raised.error
    assert "RuntimeError: boom at import of raises_at_import" in raised.error
    assert "raises_at_import.py" in raised.error
    missing = packs["needs_comfy_flux"]
    assert "No module named 'comfy.ldm.flux'" in missing.error and "compatibility layer does not provide" in missing.error
    for pack in packs.values():
        assert pack.seconds >= 0.0
        if pack.state == "failed":
            assert not pack.specs and pack.module_name not in sys.modules


def test_each_pack_is_its_own_package_with_relative_imports(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    packs = _by_name(load_packs([PACKS]))
    typed = packs["loom_typed"]
    assert typed.module_name == f"{NAMESPACE}.loom_typed"
    assert f"{NAMESPACE}.loom_typed.impl" in sys.modules and f"{NAMESPACE}.loom_typed.helpers" in sys.modules
    assert packs["single_module"].module_name == f"{NAMESPACE}.single_module"
    assert len({p.module_name for p in packs.values()}) == len(packs)
    assert "helpers" not in sys.modules and "impl" not in sys.modules  # nothing leaks to the top level
    first = sys.modules[f"{NAMESPACE}.classic_pack.nodes_classic"]
    again = _by_name(load_packs([PACKS]))
    assert sys.modules[f"{NAMESPACE}.classic_pack.nodes_classic"] is not first  # a fresh import each load
    assert again["classic_pack"].nodes["ClassicScale"] is not packs["classic_pack"].nodes["ClassicScale"]


def test_web_directories_and_display_names(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    packs = load_packs([PACKS])
    webs = web_directories(packs)
    assert webs == {"classic_pack": PACKS / "classic_pack" / "js", "loom_typed": PACKS / "loom_typed" / "web"}
    classic = _by_name(packs)["classic_pack"]
    assert classic.display_names["ClassicScale"] == "Classic Scale"
    spec = {s.class_type: s for s in classic.specs}["ClassicScale"]
    assert spec.display_name == "Classic Scale" and spec.python_module == "custom_nodes.classic_pack"


def test_disable_flags(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    sys.modules.pop(f"{NAMESPACE}.schema_pack", None)
    packs = _by_name(load_packs([PACKS], disabled=["schema_pack", "raises_at_import.py"]))
    assert packs["schema_pack"].state == "disabled" and packs["raises_at_import"].state == "disabled"
    assert f"{NAMESPACE}.schema_pack" not in sys.modules
    assert packs["raises_at_import"].error is None and packs["classic_pack"].state == "ok"
    everything_off = load_packs([PACKS], disable_all=True)
    assert {p.state for p in everything_off} == {"disabled"} and len(everything_off) == len(packs)


def test_name_collision_is_reported_and_the_builtin_wins(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    registry = build_builtin_registry()
    builtin = registry.get("PrimitiveString")
    packs = _by_name(load_packs([PACKS]))
    register_packs(registry, packs.values())
    single = packs["single_module"]
    assert single.collisions == ["PrimitiveString"] and single.registered == ["Shout"]
    assert registry.get("PrimitiveString") is builtin and registry.pack_of("PrimitiveString") == "builtin"
    assert any(c.class_type == "PrimitiveString" and c.rejected_pack == "single_module" for c in registry.collisions)
    assert registry.pack_of("SchemaAdd") == "schema_pack" and registry.pack_of("TypedPick") == "loom_typed"
    report = import_times_report(list(packs.values()))
    assert "(IMPORT FAILED)" in report and "1 name collision(s)" in report and str(PACKS / "schema_pack") in report


def test_pack_directories_from_folders_and_flags(tmp_path: Path) -> None:
    folders = Folders.for_base(tmp_path)
    extra = tmp_path / "more_nodes"
    folders.add_folder("custom_nodes", extra)  # what an extra_model_paths YAML `custom_nodes:` entry does
    config = make_config(tmp_path, [str(PACKS), str(extra)])
    dirs = pack_directories(config, folders)
    assert dirs == [tmp_path / "custom_nodes", extra, PACKS]
    assert [n for n, _ in find_packs([tmp_path / "absent"])] == []


def make_config(base: Path, extra: list[str]):
    from config import parse_args

    args = ["--base-directory", str(base)]
    for folder in extra:
        args += ["--custom-nodes-directory", folder]
    return parse_args(args, {})


def test_example_pack_ships_and_loads(tmp_path: Path) -> None:
    packs = _by_name(load_packs([EXAMPLE_PACKS]))
    example = packs["example"]
    assert example.state == "ok", example.error
    assert sorted(example.nodes) == ["ExampleBrightness", "ExampleJoinText", "ExampleLazySwitch",
                                     "ExampleReadText", "ExampleShowText"]
    assert (example.web_directory / "example.js").is_file()


def _write_hundred(folder: Path, style: str) -> None:
    folder.mkdir(parents=True)
    lines = ["from comfy_api.latest import ComfyExtension, io", "from nodes.spec import Int, Node, Output", ""]
    names = []
    for i in range(100):
        names.append(f"Node{style}{i}")
        if style == "classic":
            lines += [f"class Node{style}{i}:",
                      "    @classmethod",
                      "    def INPUT_TYPES(cls):",
                      f"        return {{'required': {{'x': ('INT', {{'default': {i}, 'min': 0, 'max': 1000}}),"
                      " 'mode': (['a', 'b'],)}}",
                      "    RETURN_TYPES = ('INT',)",
                      "    FUNCTION = 'run'",
                      "    def run(self, x, mode):",
                      "        return (x,)", ""]
        elif style == "loom":
            lines += [f"class Node{style}{i}(Node):",
                      f"    INPUTS = (Int('x', {i}, min=0, max=1000),)",
                      "    OUTPUTS = (Output('INT'),)",
                      "    def execute(self, x):",
                      "        return (x,)", ""]
        else:
            lines += [f"class Node{style}{i}(io.ComfyNode):",
                      "    @classmethod",
                      "    def define_schema(cls):",
                      f"        return io.Schema(node_id='Node{style}{i}', inputs=[io.Int.Input('x', default={i})],"
                      " outputs=[io.Int.Output()])",
                      "    @classmethod",
                      "    def execute(cls, x):",
                      "        return io.NodeOutput(x)", ""]
    if style == "classic":
        lines.append("NODE_CLASS_MAPPINGS = {" + ", ".join(f"'{n}': {n}" for n in names) + "}")
    elif style == "loom":
        lines.append("NODES = [" + ", ".join(names) + "]")
    else:
        lines += ["class Ext(ComfyExtension):",
                  "    async def get_node_list(self):",
                  "        return [" + ", ".join(names) + "]",
                  "async def comfy_entrypoint():",
                  "    return Ext()"]
    (folder / "__init__.py").write_text("\n".join(lines) + "\n")


def test_hundred_node_classes_load_in_under_a_second(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    figures = {}
    for style in ("classic", "loom", "schema"):
        root = tmp_path / style
        _write_hundred(root / f"hundred_{style}", style)
        registry = build_builtin_registry()
        started = time.perf_counter()
        packs = load_packs([root])
        register_packs(registry, packs)
        figures[style] = time.perf_counter() - started
        assert packs[0].state == "ok", packs[0].error
        assert len(packs[0].registered) == 100
        assert registry.get(f"Node{style}99").object_info()["input"]["required"]["x"][1]["default"] == 99
    print("load+register of 100 node classes (s):", {k: round(v, 4) for k, v in figures.items()})
    assert max(figures.values()) < 1.0, figures


def test_runtime_reports_packs_and_serves_their_folders(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    names = {p.name: p.state for p in runtime.custom_packs}
    assert names["schema_pack"] == "ok" and names["broken_syntax"] == "failed"
    assert set(runtime.web_directories) == {"classic_pack", "loom_typed"}
    assert "SchemaAdd" in runtime.registry and "ClassicScale" in runtime.registry and "TypedPick" in runtime.registry
    assert runtime.compat is not None and runtime.compat.folders is runtime.folders
    off = make_runtime(tmp_path / "off", "--disable-all-custom-nodes")
    assert {p.state for p in off.custom_packs} == {"disabled"} and "SchemaAdd" not in off.registry
    one_off = make_runtime(tmp_path / "one", "--disable-custom-node", "classic_pack")
    assert "ClassicScale" not in one_off.registry and "SchemaAdd" in one_off.registry


def test_prestartup_scripts_run_before_packs_import_and_failures_stay_local(tmp_path: Path) -> None:
    import builtins

    from tests.custom_nodes.cn_env import make_runtime

    packs = Path(__file__).resolve().parent / "prestartup_packs"
    try:
        runtime = make_runtime(tmp_path, packs=packs)
        runs = {r.pack: r for r in runtime.prestartup_runs}
        assert set(runs) == {"early_bird", "bad_start"}
        assert runs["early_bird"].error is None
        assert "fails on purpose" in runs["bad_start"].error
        states = {p.name: p.state for p in runtime.custom_packs}
        assert states == {"early_bird": "ok", "bad_start": "ok"}
        import sys
        marker = next(m for name, m in sys.modules.items() if name.endswith("early_bird")).MARKER
        assert marker == ["ran", str(tmp_path / "output")]
        disabled = make_runtime(tmp_path, "--disable-custom-node", "early_bird", packs=packs)
        assert [r.pack for r in disabled.prestartup_runs] == ["bad_start"]
    finally:
        if hasattr(builtins, "loom_test_prestartup_marker"):
            del builtins.loom_test_prestartup_marker
