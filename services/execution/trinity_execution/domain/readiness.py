"""When a pending step may run, must wait, or is skipped (joins and skip propagation).

A step may run when every dependency is finished (completed, skipped, or failed with
``on_failure: continue``) and:

* if gateways route to it: at least one of them chose it; otherwise it is skipped,
  ``route_not_taken`` (or ``upstream_skipped`` when those gateways were themselves
  skipped);
* if it has ``depends_on``: at least one of them completed (or failed and continued);
  otherwise it is skipped, ``upstream_skipped``.

So an exclusive branch that was not taken skips itself and everything that only
hangs below it, while a join below both branches still runs. The step's own
condition is checked by the engine after this.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from trinity_execution.domain.facts import SKIP_ROUTE_NOT_TAKEN, SKIP_UPSTREAM_SKIPPED
from trinity_execution.domain.state import ExecutionState, StepStatus
from trinity_process_model.graph import ProcessGraph


class Verdict(Enum):
    WAIT = "wait"
    RUN = "run"
    SKIP = "skip"


@dataclass(frozen=True)
class Readiness:
    verdict: Verdict
    reason: str = ""


WAIT = Readiness(Verdict.WAIT)
RUN = Readiness(Verdict.RUN)


def assess(graph: ProcessGraph, state: ExecutionState, step_id: str) -> Readiness:
    """The verdict for a pending step; costs O(its dependencies)."""
    for dep in graph.dependencies(step_id):
        if not state.step(dep).is_finished:
            return WAIT
    sources = graph.route_sources(step_id)
    if sources:
        chosen = False
        decided = False
        for gateway in sources:
            gst = state.step(gateway)
            if gst.status is StepStatus.COMPLETED:
                decided = True
                if step_id in gst.routes:
                    chosen = True
                    break
        if not chosen:
            return Readiness(
                Verdict.SKIP, SKIP_ROUTE_NOT_TAKEN if decided else SKIP_UPSTREAM_SKIPPED
            )
    explicit = graph.explicit_dependencies(step_id)
    if explicit and not any(state.step(dep).lets_dependents_run for dep in explicit):
        return Readiness(Verdict.SKIP, SKIP_UPSTREAM_SKIPPED)
    return RUN
