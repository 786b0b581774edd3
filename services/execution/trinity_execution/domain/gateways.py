"""Which routes a gateway takes (BPMN semantics), and what its conditions saw.

* exclusive: the first route in order whose condition holds, else the default;
* parallel: every route;
* inclusive: every route whose condition holds, else the default;
* nothing chosen and no default: NO_MATCHING_ROUTE.

A non-default route without a condition always holds.

Loops: ``max_iterations`` bounds how many iterations the loop body runs in all, the
first pass being iteration 1; so the loop route is followed at most
``max_iterations - 1`` times (``max_iterations: 3`` → the target runs at most 3
times). A loop route chosen past that is dropped: the gateway exits by its default
route, or fails with LOOP_LIMIT_REACHED when it has none (or the default is that
loop). When a loop route is taken it wins: the whole body, forward targets of the
same gateway included, starts a new iteration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trinity_execution.domain.errors import (
    LOOP_LIMIT_REACHED,
    NO_MATCHING_ROUTE,
    Failure,
    expression_failure,
)
from trinity_execution.domain.facts import RouteEvaluation
from trinity_execution.domain.process import CompiledProcess
from trinity_process_model.expressions import ExpressionError
from trinity_process_model.graph import ProcessGraph
from trinity_process_model.model import GatewayConfig, GatewayType, Route


@dataclass(frozen=True)
class RouteChoice:
    selected: tuple[str, ...]
    evaluations: tuple[RouteEvaluation, ...]
    failure: Failure | None = None


def choose_routes(
    process: CompiledProcess,
    gateway_id: str,
    config: GatewayConfig,
    context: Mapping[str, Any],
    loop_counts: Mapping[tuple[str, str], int],
) -> RouteChoice:
    seen: dict[int, tuple[bool, str]] = {}
    chosen: list[Route] = []
    if config.type is GatewayType.PARALLEL:
        chosen = list(config.routes)
    else:
        for index, route in enumerate(config.routes):
            if route.is_default:
                continue
            try:
                matched, value = process.condition(route.condition).evaluate(context)
            except ExpressionError as exc:
                failure = expression_failure(
                    gateway_id, f"gateway.routes[{index}].condition (to {route.target!r})", exc
                )
                return RouteChoice((), _evaluations(config, seen, chosen), failure)
            seen[index] = (matched, value)
            if matched:
                chosen.append(route)
                if config.type is GatewayType.EXCLUSIVE:
                    break
    default = config.default_route
    if not chosen and default is not None:
        chosen = [default]
    if not chosen:
        failure = Failure(NO_MATCHING_ROUTE, f"no route of gateway {gateway_id!r} matched")
        return RouteChoice((), _evaluations(config, seen, chosen), failure)

    graph = process.graph
    exhausted = [r for r in chosen if _exhausted(graph, gateway_id, r, loop_counts)]
    if exhausted:
        chosen = [r for r in chosen if r not in exhausted]
        usable_default = (
            default is not None
            and default not in exhausted
            and not _exhausted(graph, gateway_id, default, loop_counts)
        )
        if not usable_default:
            targets = ", ".join(r.target for r in exhausted)
            failure = Failure(
                LOOP_LIMIT_REACHED,
                f"gateway {gateway_id!r} reached max_iterations of its loop to {targets}",
            )
            return RouteChoice((), _evaluations(config, seen, chosen), failure)
        assert default is not None
        if default not in chosen:
            chosen.append(default)
    selected = tuple(dict.fromkeys(r.target for r in chosen))
    return RouteChoice(selected, _evaluations(config, seen, chosen))


def _exhausted(
    graph: ProcessGraph, gateway_id: str, route: Route, loop_counts: Mapping[tuple[str, str], int]
) -> bool:
    key = (gateway_id, route.target)
    limit = graph.loop_routes.get(key)
    return limit is not None and loop_counts.get(key, 0) + 1 >= limit


def _evaluations(
    config: GatewayConfig, seen: Mapping[int, tuple[bool, str]], chosen: list[Route]
) -> tuple[RouteEvaluation, ...]:
    result = []
    for index, route in enumerate(config.routes):
        matched, value = seen.get(index, (False, ""))
        if config.type is GatewayType.PARALLEL or route.is_default:
            matched = any(r is route for r in chosen)
        result.append(
            RouteEvaluation(route.target, route.condition, matched, value, route.is_default)
        )
    return tuple(result)
