"""Node expansion, ExecutionBlocker, dynamic inputs and hooks through the real server and
websocket, with the pack in `packs/exec_pack` (imports ComfyUI's module names)."""
from __future__ import annotations

import sys
from pathlib import Path

from exec_env import Client, node, serve


def loop_prompt(iterations: int) -> dict:
    """count = 0; while count < iterations: count += 1 — a loop by re-expansion."""
    return {"1": node("ExecInt", value=0),
            "2": node("ExecWhileOpen", value=["1", 0]),
            "3": node("ExecMath", a=["2", 1], b=1, op="add"),
            "4": node("ExecMath", a=["3", 0], b=iterations, op="lt"),
            "5": node("ExecWhileClose", flow_control=["2", 0], value=["3", 0], condition=["4", 0]),
            "6": node("ExecRecord", value=["5", 0])}


def test_loop_by_expansion_ids_display_nodes_and_cache(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        run = await c.run(loop_prompt(4))
        assert run.history["status"]["status_str"] == "success"
        assert run.values("6") == [4]
        executing = run.of("executing")[:-1]
        ephemeral = [e for e in executing if "." in e["node"]]
        assert ephemeral, "the loop ran no expanded nodes"
        # ids derive from the parent (ComfyUI's "<parent>.<call>.<graph>.<id>"), displays are submitted nodes
        assert all(e["node"].startswith("5.0.0.") for e in ephemeral), [e["node"] for e in ephemeral]
        assert {e["display_node"] for e in ephemeral} <= {"2", "3", "4", "5"}
        assert "5.0.0.Recurse" in [e["node"] for e in ephemeral]
        states: dict = {}
        for message in run.of("progress_state"):  # an expanded node is listed until it has finished
            states.update(message["nodes"])
        assert states["5.0.0.Recurse"]["real_node_id"] == "5" and states["5.0.0.Recurse"]["parent_node_id"] == "5"
        assert states["5.0.0.Recurse"]["display_node_id"] == "5"
        assert all(s["state"] == "finished" for s in states.values())
        again = await c.run(loop_prompt(4))
        assert again.values("6") == [4] and again.ran == [], "an unchanged loop must come from the cache"
        assert (await c.run(loop_prompt(6))).values("6") == [6]
    serve(tmp_path, body)


def test_thousand_iteration_loop(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        run = await c.run(loop_prompt(1000), timeout=120)
        assert run.history["status"]["status_str"] == "success" and run.values("6") == [1000]
    serve(tmp_path, body)


def test_dynamic_cycle_is_an_error_on_the_expanding_node(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        run = await c.run({"1": node("ExecInt", value=1), "2": node("ExecDynamicCycle", value=["1", 0]),
                           "3": node("ExecRecord", value=["2", 0])})
        error = run.of("execution_error")[0]
        assert error["node_id"] == "2" and error["node_type"] == "ExecDynamicCycle"
        assert "cycle" in error["exception_message"].lower()
        assert run.history["status"]["status_str"] == "error"
        ok = await c.run({"1": node("ExecInt", value=1), "3": node("ExecRecord", value=["1", 0])})
        assert ok.values("3") == [1], "the server keeps working after the failure"
    serve(tmp_path, body)


def test_schema_node_expansion_and_parallel_sleep_expansion(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        run = await c.run({"1": node("ExecInt", value=21), "2": node("SchemaExpandDouble", value=["1", 0]),
                           "3": node("ExecRecord", value=["2", 0])})
        assert run.values("3") == [42] and "2.0.0.1" in run.ran
        sleep = await c.run({"1": node("ExecParallelSleep", seconds=0.6), "2": node("ExecRecord", value=["1", 0])})
        assert sleep.values("2") == [6]
        assert sleep.seconds < 1.5, f"three 0.6 s sleeps took {sleep.seconds:.2f} s: not concurrent"
        assert {p["node"] for p in sleep.of("progress")} == {"1.0.0.1", "1.0.0.2", "1.0.0.3"}
        shown = {n["node_id"]: n["display_node_id"] for m in sleep.of("progress_state") for n in m["nodes"].values()}
        assert shown["1.0.0.2"] == "1" and shown["1.0.0.4"] == "1"
    serve(tmp_path, body)


def test_blockers_silent_through_lists_and_with_message(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        prompt = {"1": node("ExecMakeList", value1=10, value2=20, value3=30),
                  "2": node("ExecMakeList", value1=1, value2=2, value3=3),
                  "3": node("ExecMath", a=["2", 0], b=2, op="eq"),
                  "4": node("ExecBlock", value=["1", 0], block=["3", 0], message=""),
                  "5": node("ExecMakeList", value1=["4", 0]),
                  "6": node("ExecRecord", value=["5", 0])}
        run = await c.run(prompt)
        assert run.history["status"]["status_str"] == "success" and not run.of("execution_error")
        assert run.values("6") == [10, 30], "only the blocked list item is left out"
        prompt["3"] = node("ExecMath", a=["2", 0], b=10, op="lt")  # every item blocked
        prompt["4"]["inputs"]["message"] = "stopped here"
        run = await c.run(prompt)
        errors = run.of("execution_error")
        assert errors and errors[0]["node_id"] == "5" and errors[0]["exception_type"] == "ExecutionBlocked"
        assert errors[0]["exception_message"] == "Execution Blocked: stopped here"
        assert "6" not in run.history["outputs"], "an output node behind a blocker does not produce output"
    serve(tmp_path, body)


def test_kwargs_inputs_validation_hooks_and_unique_id(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        run = await c.run({"1": node("ExecInt", value=1), "2": node("ExecInt", value=2), "3": node("ExecInt", value=3),
                           "4": node("ExecVariadicSum", input1=["1", 0], input2=["2", 0], input3=["3", 0]),
                           "5": node("ExecAsyncValidated", value=5, linked=["4", 0]),
                           "6": node("ExecRecord", value=["5", 0]),
                           "7": node("ExecWhoAmI"), "8": node("ExecRecord", value=["7", 0]),
                           "9": node("ExecWhoAmI"), "10": node("ExecRecord", value=["9", 0])})
        assert run.values("6") == [5]
        assert run.values("8") == ["7"] and run.values("10") == ["9"], "UNIQUE_ID nodes are cached per id"
        status, refused = await c.post({"1": node("ExecInt", value=1),
                                        "5": node("ExecAsyncValidated", value=13, linked=["1", 0]),
                                        "6": node("ExecRecord", value=["5", 0])})
        assert status == 400
        errors = refused["node_errors"]["5"]["errors"]
        assert errors[0]["type"] == "custom_validation_failed" and "13 is refused" in errors[0]["details"]
    serve(tmp_path, body)


def test_is_changed_gets_linked_inputs_as_none_and_keeps_outputs_cached(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        pack = next(m for name, m in sys.modules.items() if name.endswith("exec_pack"))
        CALLS, ExecIsChangedLinked = pack.CALLS, pack.ExecIsChangedLinked  # noqa: N806
        prompt = {"1": node("ExecInt", value=4), "2": node("ExecIsChangedLinked", linked=["1", 0], salt=1),
                  "3": node("ExecRecord", value=["2", 0])}
        ExecIsChangedLinked.SEEN.clear()
        first = await c.run(prompt)
        second = await c.run(prompt)
        assert first.values("3") == second.values("3") == [4]
        assert ExecIsChangedLinked.SEEN and set(ExecIsChangedLinked.SEEN) == {None}
        assert "2" not in second.ran and "3" not in second.ran, "same IS_CHANGED value: outputs stay cached"
        before = CALLS.get("ExecIsChangedLinked", 0)
        prompt["2"]["inputs"]["salt"] = 2
        await c.run(prompt)
        assert CALLS["ExecIsChangedLinked"] == before + 1
    serve(tmp_path, body)


def test_expansion_with_cache_none_and_cache_lru(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        assert (await c.run(loop_prompt(5))).values("6") == [5]
        rerun = await c.run(loop_prompt(5))
        assert rerun.values("6") == [5] and rerun.ran, "--cache-none reruns everything"
    serve(tmp_path / "none", body, "--cache-none")

    async def lru(c: Client) -> None:
        assert (await c.run(loop_prompt(5))).values("6") == [5]
        assert (await c.run(loop_prompt(5))).values("6") == [5]
    serve(tmp_path / "lru", lru, "--cache-lru", "3")


def test_schema_autogrow_dynamic_combo_and_multitype(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        async with c.srv.session.get(c.srv.url + "/object_info") as r:
            every = await r.json()
        # ComfyUI's entries: the dynamic input itself with its template / options, not its sockets
        assert every["SchemaSumGrow"]["input"] == {"required": {"values": ["COMFY_AUTOGROW_V3", {"template": {
            "input": {"required": {"v": ["INT", {"forceInput": True}]}}, "prefix": "v", "min": 1, "max": 5}}]}}
        assert every["SchemaSumGrow"]["input_order"] == {"required": ["values"]}
        assert every["SchemaPickMode"]["input"]["required"] == {
            "value": ["INT,FLOAT"],
            "mode": ["COMFY_DYNAMICCOMBO_V3", {"options": [
                {"key": "scale", "inputs": {"required": {"factor": ["INT", {"default": 2}]}}},
                {"key": "offset", "inputs": {"required": {"amount": ["INT", {"default": 1}]}}}]}]}
        run = await c.run({"1": node("ExecInt", value=2), "2": node("ExecInt", value=5),
                           "3": node("SchemaSumGrow", **{"values.v0": ["1", 0], "values.v3": ["2", 0]}),
                           "4": node("ExecRecord", value=["3", 0]),
                           "5": node("SchemaPickMode", value=["1", 0], mode="scale", **{"mode.factor": 10,
                                                                                         "mode.amount": 7}),
                           "6": node("ExecRecord", value=["5", 0]),
                           "7": node("SchemaPickMode", value=["2", 0], mode="offset", **{"mode.amount": 3}),
                           "8": node("ExecRecord", value=["7", 0])})
        assert run.values("4") == [7] and run.values("6") == [20] and run.values("8") == [8]
        taken = await c.run({"1": node("SchemaTakeAll", base=1, zeta="z", alpha=2), "2": node("ExecRecord", value=["1", 0])})
        assert taken.values("2") == ["1:alpha=2,zeta=z"]
        status, refused = await c.post({"1": node("ExecInt", value=2), "3": node("SchemaSumGrow"),
                                        "4": node("ExecRecord", value=["3", 0])})
        assert status == 400 and refused["node_errors"]["3"]["errors"][0]["type"] == "required_input_missing"
        status, refused = await c.post({"1": node("ExecInt", value=2),
                                        "5": node("SchemaPickMode", value=["1", 0], mode="nope"),
                                        "6": node("ExecRecord", value=["5", 0])})
        assert status == 400 and refused["node_errors"]["5"]["errors"][0]["type"] == "value_not_in_list"
    serve(tmp_path, body)


def test_schema_matchtype_object_info_validation_and_run(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        async with c.srv.session.get(c.srv.url + "/object_info/SchemaDouble") as r:
            info = (await r.json())["SchemaDouble"]
        template = {"template_id": "number", "allowed_types": "INT,FLOAT"}
        assert info["input"] == {"required": {"value": ["COMFY_MATCHTYPE_V3", {"template": template}]}}
        assert info["output"] == ["COMFY_MATCHTYPE_V3", "STRING"] and info["output_name"] == ["MATCHTYPE", "text"]
        assert info["output_matchtypes"] == ["number", None]
        async with c.srv.session.get(c.srv.url + "/object_info/ExecInt") as r:
            assert "output_matchtypes" not in (await r.json())["ExecInt"]
        # a MatchType output feeds an INT input, an INT feeds the MatchType input: both validate
        run = await c.run({"1": node("ExecInt", value=4), "2": node("SchemaDouble", value=["1", 0]),
                           "3": node("ExecInt", value=["2", 0]), "4": node("ExecRecord", value=["3", 0]),
                           "5": node("ExecRecord", value=["2", 1])})
        assert run.history["status"]["status_str"] == "success"
        assert run.values("4") == [8] and run.values("5") == ["8"]
        # as in ComfyUI the server leaves the allowed types to the editor: a STRING is doubled too
        text = await c.run({"1": node("PrimitiveString", value="ab"), "2": node("SchemaDouble", value=["1", 0]),
                            "3": node("ExecRecord", value=["2", 0])})
        assert text.values("3") == ["abab"]
        # a constant reaches a MatchType input as given; a plain type mismatch is still refused
        assert (await c.run({"2": node("SchemaDouble", value=1.5), "3": node("ExecRecord", value=["2", 0])}
                            )).values("3") == [3.0]
        status, refused = await c.post({"1": node("PrimitiveString", value="x"), "2": node("ExecInt", value=["1", 0]),
                                        "3": node("ExecRecord", value=["2", 0])})
        assert status == 400 and refused["node_errors"]["2"]["errors"][0]["type"] == "return_type_mismatch"
    serve(tmp_path, body)


def test_output_nodes_inside_an_expansion_and_history_meta(tmp_path: Path) -> None:
    async def body(c: Client) -> None:
        run = await c.run({"1": node("ExecInt", value=9), "2": node("ExecExpandRecord", value=["1", 0]),
                           "3": node("ExecRecord", value=["2", 0])})
        assert run.values("3") == [9] and run.values("2.0.0.inner") == [9]
        assert run.history["meta"]["2.0.0.inner"] == {"node_id": "2.0.0.inner", "display_node": "2",
                                                      "parent_node": "2", "real_node_id": "2"}
        executed = {e["node"]: e["display_node"] for e in run.of("executed")}
        assert executed["2.0.0.inner"] == "2"
    serve(tmp_path, body)
