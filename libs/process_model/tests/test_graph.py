from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trinity_process_model.graph import ProcessGraph, UnknownReference
from trinity_process_model.model import (
    AgentTaskConfig,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    ProcessSpec,
    Route,
    Step,
)


def agent(step_id: str, *deps: str) -> Step:
    return Step(step_id, AgentTaskConfig(agent="a", message="m"), depends_on=deps)


def gateway(step_id: str, routes: tuple[Route, ...], *deps: str) -> Step:
    return Step(step_id, GatewayConfig(GatewayType.EXCLUSIVE, routes), depends_on=deps)


def it3() -> ProcessSpec:
    """research → review → decide (approved → publish; needs_changes → revise → loop back)."""
    return ProcessSpec(
        name="it3",
        steps=(
            agent("research"),
            Step("review", HumanApprovalConfig(approvers=("ed",)), depends_on=("research",)),
            gateway(
                "decide",
                (
                    Route("publish", "{{ steps.review.decision == 'approved' }}"),
                    Route("revise", "{{ steps.review.decision == 'needs_changes' }}"),
                ),
                "review",
            ),
            agent("publish"),
            agent("revise"),
            gateway("again", (Route("review", is_default=True, max_iterations=3),), "revise"),
            agent("notify", "publish"),
        ),
    )


def test_it3_shape() -> None:
    graph = ProcessGraph.build(it3())
    assert graph.entry_steps == ("research",)
    assert graph.dependencies("publish") == ("decide",)
    assert graph.route_sources("publish") == ("decide",)
    assert graph.route_sources("revise") == ("decide",)
    assert graph.dependents("decide") == ("publish", "revise")
    assert graph.dependents("research") == ("review",)
    assert graph.loop_routes == {("again", "review"): 3}
    assert graph.is_loop_route("again", "review")
    assert graph.loop_body("again", "review") == {
        "review",
        "decide",
        "publish",
        "revise",
        "again",
        "notify",
    }
    assert graph.find_cycles() == []
    assert graph.dependents("again") == ()
    order = graph.topological_order
    for step in graph.step_ids:
        for dep in graph.dependencies(step):
            assert order.index(dep) < order.index(step)


def test_route_back_without_max_iterations_is_a_cycle() -> None:
    spec = ProcessSpec(
        name="c",
        steps=(agent("a"), gateway("g", (Route("a", is_default=True),), "a")),
    )
    graph = ProcessGraph.build(spec)
    assert graph.loop_routes == {}
    assert graph.find_cycles() == [["a", "g"]]
    assert set(graph.topological_order) == {"a", "g"}


def test_depends_on_cycle_and_self_dependency() -> None:
    spec = ProcessSpec(
        name="c",
        steps=(agent("a", "c"), agent("b", "a"), agent("c", "b"), agent("d", "d"), agent("e")),
    )
    graph = ProcessGraph.build(spec)
    assert graph.find_cycles() == [["a", "b", "c"], ["d"]]
    assert graph.entry_steps == ("e",)


def test_gateway_routing_to_itself_with_iterations_is_a_loop() -> None:
    spec = ProcessSpec(
        name="self", steps=(gateway("g", (Route("g", max_iterations=2, is_default=True),)),)
    )
    graph = ProcessGraph.build(spec)
    assert graph.loop_routes == {("g", "g"): 2}
    assert graph.loop_body("g", "g") == {"g"}
    assert graph.find_cycles() == []


def test_forward_route_with_max_iterations_stays_forward() -> None:
    spec = ProcessSpec(
        name="f",
        steps=(gateway("g", (Route("b", max_iterations=2, is_default=True),)), agent("b")),
    )
    graph = ProcessGraph.build(spec)
    assert graph.loop_routes == {}
    assert graph.route_sources("b") == ("g",)


def test_invalid_specs_do_not_crash() -> None:
    spec = ProcessSpec(
        name="bad",
        steps=(
            agent("a", "ghost"),
            agent("a"),
            gateway("g", (Route("nowhere"),), "a"),
        ),
    )
    graph = ProcessGraph.build(spec)
    assert graph.duplicate_ids == ("a",)
    assert graph.unknown_references == (
        UnknownReference("a", "depends_on", "ghost"),
        UnknownReference("g", "routes[0].target", "nowhere"),
    )
    assert graph.entry_steps == ("a",)
    assert graph.dependencies("missing") == ()


def test_nested_loops_are_known() -> None:
    spec = ProcessSpec(
        name="n",
        steps=(
            agent("a"),
            agent("b", "a"),
            gateway("inner", (Route("b", max_iterations=2, is_default=True),), "b"),
            gateway("outer", (Route("a", max_iterations=2, is_default=True),), "inner"),
        ),
    )
    graph = ProcessGraph.build(spec)
    assert graph.nested_loops("outer", "a") == (("inner", "b"),)
    assert graph.nested_loops("inner", "b") == ()
    assert graph.loop_body("inner", "b") == {"b", "inner", "outer"}


def test_long_chain_does_not_recurse() -> None:
    steps = [agent("s0")] + [agent(f"s{i}", f"s{i - 1}") for i in range(1, 3000)]
    graph = ProcessGraph.build(ProcessSpec(name="chain", steps=tuple(steps)))
    assert graph.find_cycles() == []
    assert graph.topological_order[0] == "s0"
    assert graph.topological_order[-1] == "s2999"


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_random_dags_order_and_indexes(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 25))
    steps = []
    for i in range(n):
        deps = data.draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        steps.append(agent(f"s{i}", *(f"s{d}" for d in sorted(deps))))
    graph = ProcessGraph.build(ProcessSpec(name="r", steps=tuple(steps)))
    assert graph.find_cycles() == []
    position = {s: i for i, s in enumerate(graph.topological_order)}
    for step in graph.step_ids:
        for dep in graph.dependencies(step):
            assert position[dep] < position[step]
            assert step in graph.dependents(dep)
    assert set(graph.entry_steps) == {s for s in graph.step_ids if not graph.dependencies(s)}
