"""The step graph of a process definition, computed once per version and indexed.

Edges:

* ``depends_on``: the step waits for each named step.
* A **forward gateway route** is an implicit dependency: the target waits for the
  gateway and runs only if the gateway chose the route (else it is skipped with
  ``route_not_taken``).
* A route whose target is an ancestor of its gateway (or the gateway itself) is a
  **loop edge**. It is left out of the DAG and is legal only with
  ``max_iterations > 0``; with 0 it is a cycle. Routes with ``max_iterations > 0``
  are classified after all other edges, in definition order, so the result is
  deterministic.

``build`` never raises on an invalid spec (unknown references, duplicate ids,
cycles): validation calls it to find the problems, reported in
``unknown_references``, ``duplicate_ids`` and ``find_cycles()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from trinity_process_model.model import GatewayConfig, ProcessSpec, Step

__all__ = ["ProcessGraph", "UnknownReference"]


@dataclass(frozen=True)
class UnknownReference:
    """A reference to a step id that the definition does not have."""

    step_id: str
    field: str
    """``depends_on`` or ``routes[<index>].target``."""
    ref: str


_EMPTY: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ProcessGraph:
    """Indexed dependency graph of one definition version. Every query is a lookup."""

    step_ids: tuple[str, ...]
    """Step ids in definition order (first occurrence of a duplicate id)."""
    entry_steps: tuple[str, ...]
    """Steps with no dependency at all: where an execution starts."""
    topological_order: tuple[str, ...]
    """Steps so that each comes after its dependencies; steps on a cycle come last."""
    loop_routes: Mapping[tuple[str, str], int]
    """(gateway id, target) of every loop edge → its max_iterations."""
    unknown_references: tuple[UnknownReference, ...]
    duplicate_ids: tuple[str, ...]
    _deps: Mapping[str, tuple[str, ...]]
    _dependents: Mapping[str, tuple[str, ...]]
    _explicit_deps: Mapping[str, tuple[str, ...]]
    _route_sources: Mapping[str, tuple[str, ...]]
    _route_targets: Mapping[str, tuple[str, ...]]
    _loop_bodies: Mapping[tuple[str, str], frozenset[str]]
    _nested_loops: Mapping[tuple[str, str], tuple[tuple[str, str], ...]]
    _position: Mapping[str, int]

    # ----------------------------------------------------------------- queries

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._position

    def __len__(self) -> int:
        return len(self.step_ids)

    def position(self, step_id: str) -> int:
        """Index of the step in definition order."""
        return self._position[step_id]

    def dependencies(self, step_id: str) -> tuple[str, ...]:
        """Every step this one waits for: depends_on plus gateways routing forward to it."""
        return self._deps.get(step_id, _EMPTY)

    def explicit_dependencies(self, step_id: str) -> tuple[str, ...]:
        """The known steps of its depends_on."""
        return self._explicit_deps.get(step_id, _EMPTY)

    def dependents(self, step_id: str) -> tuple[str, ...]:
        """Every step that waits for this one (in definition order)."""
        return self._dependents.get(step_id, _EMPTY)

    def route_sources(self, step_id: str) -> tuple[str, ...]:
        """Gateways with a forward route to this step."""
        return self._route_sources.get(step_id, _EMPTY)

    def forward_route_targets(self, gateway_id: str) -> tuple[str, ...]:
        """Targets of the gateway's forward (non-loop) routes."""
        return self._route_targets.get(gateway_id, _EMPTY)

    def is_loop_route(self, gateway_id: str, target: str) -> bool:
        return (gateway_id, target) in self.loop_routes

    def loop_body(self, gateway_id: str, target: str) -> frozenset[str]:
        """The steps a new iteration of this loop resets: the target and all downstream of it."""
        return self._loop_bodies.get((gateway_id, target), frozenset())

    def nested_loops(self, gateway_id: str, target: str) -> tuple[tuple[str, str], ...]:
        """Loops lying wholly inside this loop's body (their counters restart with it)."""
        return self._nested_loops.get((gateway_id, target), ())

    def find_cycles(self) -> list[list[str]]:
        """Each cycle of the DAG (a strongly connected set of steps), in definition order.

        A route back to an ancestor without ``max_iterations`` is part of a cycle.
        """
        nodes = self.step_ids
        succ: dict[str, list[str]] = {n: list(self.dependents(n)) for n in nodes}
        return [
            sorted(component, key=self._position.__getitem__)
            for component in _strongly_connected(nodes, succ)
            if len(component) > 1 or component[0] in succ.get(component[0], ())
        ]

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, spec: ProcessSpec) -> ProcessGraph:
        """Index the definition. Never raises on an invalid spec."""
        position: dict[str, int] = {}
        duplicates: list[str] = []
        for step in spec.steps:
            if step.id in position:
                duplicates.append(step.id)
            else:
                position[step.id] = len(position)
        step_ids = tuple(position)
        unknown: list[UnknownReference] = []
        steps: dict[str, Step] = {}
        for step in spec.steps:
            steps.setdefault(step.id, step)

        explicit: dict[str, list[str]] = {sid: [] for sid in step_ids}
        succ: dict[str, list[str]] = {sid: [] for sid in step_ids}
        for sid, step in steps.items():
            for ref in step.depends_on:
                if ref not in position:
                    unknown.append(UnknownReference(sid, "depends_on", ref))
                elif ref not in explicit[sid]:
                    explicit[sid].append(ref)
                    succ[ref].append(sid)

        # Routes: max_iterations == 0 are forward by definition; the others are
        # loops when their target reaches their gateway, classified afterwards.
        route_edges: list[tuple[str, str]] = []
        candidates: list[tuple[str, str, int]] = []
        for sid, step in steps.items():
            if not isinstance(step.config, GatewayConfig):
                continue
            for index, route in enumerate(step.config.routes):
                if route.target not in position:
                    unknown.append(UnknownReference(sid, f"routes[{index}].target", route.target))
                elif route.max_iterations > 0:
                    candidates.append((sid, route.target, route.max_iterations))
                else:
                    route_edges.append((sid, route.target))
        for src, dst in route_edges:
            if dst not in succ[src]:
                succ[src].append(dst)

        loop_routes: dict[tuple[str, str], int] = {}
        forward_routes = list(route_edges)
        for gateway, target, max_iterations in candidates:
            if (gateway, target) in loop_routes:
                continue
            if gateway == target or _reaches(succ, target, gateway):
                loop_routes[(gateway, target)] = max_iterations
            else:
                forward_routes.append((gateway, target))
                if target not in succ[gateway]:
                    succ[gateway].append(target)

        route_sources: dict[str, list[str]] = {}
        route_targets: dict[str, list[str]] = {}
        for gateway, target in forward_routes:
            if gateway not in route_sources.setdefault(target, []):
                route_sources[target].append(gateway)
            if target not in route_targets.setdefault(gateway, []):
                route_targets[gateway].append(target)

        deps: dict[str, list[str]] = {sid: list(explicit[sid]) for sid in step_ids}
        for target, gateways in route_sources.items():
            for gateway in gateways:
                if gateway not in deps[target]:
                    deps[target].append(gateway)
        dependents: dict[str, list[str]] = {sid: [] for sid in step_ids}
        for sid in step_ids:
            for dep in deps[sid]:
                dependents[dep].append(sid)
        for items in dependents.values():
            items.sort(key=position.__getitem__)

        order = _topological(step_ids, deps, dependents)
        entry = tuple(sid for sid in step_ids if not deps[sid])

        bodies: dict[tuple[str, str], frozenset[str]] = {}
        for gateway, target in loop_routes:
            bodies[(gateway, target)] = frozenset(_downstream(dependents, target))
        nested: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        for key, body in bodies.items():
            nested[key] = tuple(
                other
                for other in loop_routes
                if other != key and other[0] in body and other[1] in body
            )

        return cls(
            step_ids=step_ids,
            entry_steps=entry,
            topological_order=order,
            loop_routes=MappingProxyType(loop_routes),
            unknown_references=tuple(unknown),
            duplicate_ids=tuple(duplicates),
            _deps=_freeze(deps),
            _dependents=_freeze(dependents),
            _explicit_deps=_freeze(explicit),
            _route_sources=_freeze(route_sources),
            _route_targets=_freeze(route_targets),
            _loop_bodies=MappingProxyType(bodies),
            _nested_loops=MappingProxyType(nested),
            _position=MappingProxyType(position),
        )


def _freeze(index: Mapping[str, Iterable[str]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({key: tuple(values) for key, values in index.items() if values})


def _reaches(succ: Mapping[str, list[str]], start: str, goal: str) -> bool:
    """Whether `goal` is downstream of `start`."""
    seen = {start}
    stack = [start]
    while stack:
        for nxt in succ.get(stack.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _downstream(succ: Mapping[str, list[str]], start: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for nxt in succ.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _topological(
    step_ids: tuple[str, ...],
    deps: Mapping[str, list[str]],
    dependents: Mapping[str, list[str]],
) -> tuple[str, ...]:
    """Kahn's order, stable by definition order; steps on a cycle are appended last."""
    remaining = {sid: len(deps[sid]) for sid in step_ids}
    ready = [sid for sid in step_ids if remaining[sid] == 0]
    order: list[str] = []
    head = 0
    while head < len(ready):
        sid = ready[head]
        head += 1
        order.append(sid)
        for nxt in dependents[sid]:
            remaining[nxt] -= 1
            if remaining[nxt] == 0:
                ready.append(nxt)
    if len(order) < len(step_ids):
        placed = set(order)
        order.extend(sid for sid in step_ids if sid not in placed)
    return tuple(order)


def _strongly_connected(nodes: tuple[str, ...], succ: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (a 1,000-step chain must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_i = work.pop()
            if child_i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = succ.get(node, [])
            recursed = False
            for i in range(child_i, len(children)):
                child = children[i]
                if child not in index:
                    work.append((node, i + 1))
                    work.append((child, 0))
                    recursed = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if recursed:
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components
