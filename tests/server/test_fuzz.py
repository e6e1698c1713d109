"""Property-based fuzz (hypothesis, bounded in examples and time): POST /prompt bodies through the
real server never get a 5xx, the server stays healthy and /queue and /history stay strict JSON;
the UI-workflow converter raises only WorkflowError on any JSON-shaped input."""
from __future__ import annotations

import asyncio
import http.client
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.workflow import WorkflowError, load_workflow
from harness import LiveServer, build_test_runtime

CLASS_TYPES = ["PrimitiveString", "PrimitiveInt", "PrimitiveFloat", "StringConcatenate", "PreviewAny", "SaveImage",
               "SlowSteps", "KSampler", "Reroute", "NoSuchNode", ""]
INPUT_NAMES = ["value", "string_a", "string_b", "delimiter", "source", "images", "steps", "delay", "text", "seed"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20))
links = st.lists(st.one_of(st.text(max_size=3), st.integers(-2, 5), st.none()), min_size=0, max_size=3)
input_values = st.one_of(scalars, links, st.dictionaries(st.text(max_size=5), scalars, max_size=2))
api_nodes = st.fixed_dictionaries({"class_type": st.one_of(st.sampled_from(CLASS_TYPES), scalars),
                                   "inputs": st.one_of(st.dictionaries(st.sampled_from(INPUT_NAMES), input_values,
                                                                       max_size=4), scalars)})
prompts = st.dictionaries(st.one_of(st.sampled_from(["1", "2", "3"]), st.text(max_size=4)),
                          st.one_of(api_nodes, scalars), max_size=4)
bodies = st.one_of(
    st.fixed_dictionaries({"prompt": st.one_of(prompts, scalars)},
                          optional={"client_id": scalars, "prompt_id": scalars, "number": scalars,
                                    "front": scalars, "extra_data": st.one_of(scalars, st.dictionaries(
                                        st.text(max_size=5), scalars, max_size=2))}),
    st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                 | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=10))


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real server on its own event loop in a thread, for the synchronous hypothesis test."""
    base: Path = tmp_path_factory.mktemp("fuzz")
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with LiveServer(build_test_runtime(base)) as srv:
            box["port"] = int(srv.url.rsplit(":", 1)[1])
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield box["port"]
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(30)


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=bodies)
def test_fuzzed_prompt_bodies_never_get_a_5xx(server_port: int, body: Any) -> None:
    raw = json.dumps(body).encode("utf-8", "surrogatepass")  # NaN/Infinity/surrogates kept: must be refused
    status, text = _request(server_port, "POST", "/prompt", raw)
    assert status < 500, (status, text[:300])
    _strict(text)
    for path in ("/queue", "/history?max_items=5", "/api/jobs?limit=5"):
        status, text = _request(server_port, "GET", path)
        assert status == 200, (path, status, text[:300])
        _strict(text)


ui_links = st.lists(st.one_of(st.integers(-30, 30), st.text(max_size=6), st.none()), max_size=6)
ui_nodes = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(-30, 30), st.text(max_size=3)), "type": st.one_of(st.sampled_from(CLASS_TYPES),
                                                                                  scalars)},
    optional={"mode": st.one_of(st.integers(0, 5), scalars), "widgets_values": st.one_of(st.lists(scalars, max_size=5),
                                                                                         scalars),
              "inputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(INPUT_NAMES), "type": st.text(max_size=8)},
                                                       optional={"link": st.one_of(st.integers(-3, 30), st.none()),
                                                                 "widget": st.dictionaries(st.just("name"),
                                                                                           st.sampled_from(INPUT_NAMES))}),
                                 max_size=3),
              "outputs": st.lists(st.fixed_dictionaries({"type": st.text(max_size=8)},
                                                        optional={"links": st.one_of(st.lists(st.integers(0, 30),
                                                                                              max_size=3), st.none())}),
                                  max_size=3),
              "title": scalars})
ui_workflows = st.fixed_dictionaries({"nodes": st.lists(ui_nodes, max_size=6),
                                      "links": st.lists(ui_links, max_size=6)},
                                     optional={"version": st.one_of(st.just(0.4), scalars),
                                               "last_node_id": scalars, "last_link_id": scalars,
                                               "definitions": st.one_of(scalars, st.dictionaries(
                                                   st.just("subgraphs"), st.lists(st.dictionaries(
                                                       st.sampled_from(["id", "nodes", "links", "inputs"]), scalars,
                                                       max_size=3), max_size=2)))})


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_test_runtime(tmp_path_factory.mktemp("fuzz_ui")).registry


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workflow=ui_workflows)
def test_fuzzed_ui_workflows_convert_or_raise_a_workflow_error(registry: Any, workflow: dict[str, Any]) -> None:
    try:
        prompt, _ = load_workflow(workflow, registry)
    except WorkflowError as error:
        assert str(error)
        return
    assert isinstance(prompt, dict)
