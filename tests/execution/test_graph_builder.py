"""GraphBuilder ids and the DynamicGraph lookups, as ComfyUI's frontend and packs expect them."""
from __future__ import annotations

from executor.dynamic import DynamicGraph
from nodes.graph_builder import ExecutionBlocker, GraphBuilder, add_graph_prefix, is_link


def test_ids_follow_comfyui_prefix_scheme() -> None:
    GraphBuilder.set_default_prefix("12", 3, 0)
    first, second = GraphBuilder(), GraphBuilder()
    assert (first.prefix, second.prefix) == ("12.3.0.", "12.3.1.")
    a = first.node("A", x=1)
    b = first.node("B", id="named", y=a.out(0))
    assert (a.id, b.id) == ("12.3.0.1", "12.3.0.named") and first.node("A", id="named") is b
    b.set_override_display_id("7")
    b.set_input("y", None)
    assert first.finalize() == {"12.3.0.1": {"class_type": "A", "inputs": {"x": 1}},
                                "12.3.0.named": {"class_type": "B", "inputs": {}, "override_display_id": "7"}}
    explicit = GraphBuilder(prefix="t")
    c, d = explicit.node("C"), explicit.node("D")
    d.set_input("v", c.out(0))
    explicit.replace_node_output("1", 0, 5)
    assert d.inputs == {"v": 5} and explicit.lookup_node("2") is d
    explicit.remove_node("1")
    assert list(explicit.finalize()) == ["t2"]


def test_links_blockers_and_prefixing() -> None:
    assert is_link(["3", 0]) and is_link(["3", 1.0]) and not is_link([3, 0]) and not is_link(("3", 0))
    assert ExecutionBlocker(None).message is None and ExecutionBlocker("why").message == "why"
    graph, outputs = add_graph_prefix({"1": {"class_type": "A", "inputs": {"x": ["2", 0], "y": 3}}}, (["1", 0], 4), "p.")
    assert graph == {"p.1": {"class_type": "A", "inputs": {"x": ["p.2", 0], "y": 3}}} and outputs == (["p.1", 0], 4)


def test_dynamic_graph_real_display_and_parent_ids() -> None:
    graph = DynamicGraph({"5": {"class_type": "Close", "inputs": {}}})
    graph.add_ephemeral_node("5.0.0.a", {"class_type": "X", "inputs": {}}, "5", "5")
    graph.add_ephemeral_node("5.0.0.a.0.0.b", {"class_type": "Y", "inputs": {}}, "5.0.0.a", "5.0.0.a")
    graph.add_ephemeral_node("5.0.0.c", {"class_type": "Z", "inputs": {}}, "5", "9")
    assert graph.get_real_node_id("5.0.0.a.0.0.b") == "5" and graph.get_parent_node_id("5.0.0.a.0.0.b") == "5.0.0.a"
    assert graph.get_display_node_id("5.0.0.a.0.0.b") == "5" and graph.get_display_node_id("5.0.0.c") == "9"
    assert graph.get_node("5.0.0.c")["class_type"] == "Z" and graph.has_node("5") and not graph.has_node("6")
    assert graph.all_node_ids() == {"5", "5.0.0.a", "5.0.0.a.0.0.b", "5.0.0.c"}
    assert graph.get_original_prompt() == {"5": {"class_type": "Close", "inputs": {}}}


def test_link_types_honour_pack_type_classes() -> None:
    from executor.validate_checks import types_match

    class AnyType(str):  # the idiom many packs use for "accepts anything"
        def __ne__(self, other: object) -> bool:
            return False

    assert types_match("IMAGE", AnyType("WILDCARD")) and types_match(AnyType("X"), "LATENT")
    assert types_match("INT", "FLOAT,INT") and types_match("FOO", "*") and not types_match("INT", "FLOAT")
