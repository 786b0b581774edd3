"""Micro-benchmark: validating (and translating) a 1,000-step definition.

Not a pytest module (no ``test_`` prefix): the bench harness imports it and calls
``run(quick)``; ``python libs/process_model/tests/bench_validation.py [--quick]``
prints the same numbers.

The definition is shaped like real ones, scaled up: every step has its own message
template reading the step before it, every 10th step is an exclusive gateway whose
condition routes forward (and, every 50th, loops back with max_iterations), plus
approvals, tool runs, timers and notifications. "Cold" runs clear the expression
caches first, so every template and condition is compiled, as on a service's first
publish of a version; "warm" runs see them cached.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from trinity_process_model.authoring import dump_process, parse_process
from trinity_process_model.expressions import (
    check_condition,
    check_template,
    compile_condition,
    compile_template,
)
from trinity_process_model.model import (
    ActionKind,
    AgentTaskConfig,
    Budget,
    Channel,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    ManualTrigger,
    Money,
    NotificationConfig,
    ProcessSpec,
    Route,
    ScheduleTrigger,
    Step,
    StepConfig,
    TimerConfig,
    ToolRunConfig,
)
from trinity_process_model.proto_codec import spec_from_proto, spec_to_proto
from trinity_process_model.validation import validate

STEPS = 1_000


def large_spec(count: int = STEPS) -> ProcessSpec:
    """A valid definition of `count` steps (see the module docstring)."""
    steps: list[Step] = []
    for i in range(count):
        sid = f"s{i}"
        prev = f"s{i - 1}" if i else ""
        deps = (prev,) if i and (i - 1) % 10 != 9 else ()
        config: StepConfig
        condition = ""
        if i % 10 == 9 and i + 1 < count:
            routes = [
                Route(f"s{i + 1}", f"{{{{ steps.{prev}.output.score >= {i % 100} }}}}"),
            ]
            if i % 50 == 49:
                routes.append(Route(f"s{i - 5}", is_default=True, max_iterations=3))
            config = GatewayConfig(GatewayType.EXCLUSIVE, tuple(routes))
        elif i % 10 == 3:
            config = HumanApprovalConfig(
                (f"reviewer{i}@example.com",),
                artifacts=(f"{{{{ steps.{prev}.output }}}}",),
                title=f"Review step {i}: {{{{ input.topic }}}}",
            )
        elif i % 10 == 5:
            config = ToolRunConfig(ActionKind.VERIFY, {"target": f"{{{{ steps.{prev}.output }}}}"})
        elif i % 10 == 7:
            config = TimerConfig(duration=timedelta(minutes=i % 60 + 1))
        elif i % 10 == 8:
            config = NotificationConfig(
                Channel.EMAIL, "team@example.com", f"Step {i} done: {{{{ steps.{prev}.output }}}}"
            )
            condition = f"{{{{ steps.{prev}.status == 'completed' }}}}"
        else:
            config = AgentTaskConfig(
                f"agent-{i % 7}",
                f"Task {i}: continue from {{{{ steps.{prev or sid}.output }}}} on {{{{ input.topic }}}}"
                if prev
                else "Start on {{ input.topic }}",
                Money(Decimal("0.25"), "USD"),
            )
        steps.append(
            Step(
                sid,
                config,
                name=f"Step {i}",
                depends_on=deps,
                condition=condition,
                timeout=timedelta(minutes=30),
            )
        )
    return ProcessSpec(
        name="bench-1000",
        steps=tuple(steps),
        triggers=(ManualTrigger(), ScheduleTrigger("0 9 * * MON-FRI", "Europe/Berlin")),
        budget=Budget(Money(Decimal(500), "USD")),
    )


def _clear_caches() -> None:
    for cached in (compile_template, compile_condition, check_template, check_condition):
        cached.cache_clear()


def _median_ms(
    action: Callable[[], Any],
    repeat: int,
    before: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median milliseconds of `action` by `clock` (wall, or process CPU time)."""
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = clock()
        action()
        samples.append((clock() - start) * 1000)
    return round(statistics.median(samples), 2)


def run(quick: bool = False) -> dict[str, Any]:
    """Median milliseconds of each operation on a 1,000-step definition.

    ``*_cpu_ms`` count this process's CPU time only, so they hold on a busy machine.
    """
    repeat = 1 if quick else 5
    spec = large_spec()
    violations = validate(spec)
    if violations:  # the benchmark must measure a definition that passes
        raise AssertionError(f"benchmark spec is invalid: {violations[:3]}")
    text = dump_process(spec)
    message = spec_to_proto(spec)
    return {
        "name": "process_model.validation",
        "steps": len(spec.steps),
        "repeat": repeat,
        "validate_cold_ms": _median_ms(lambda: validate(spec), repeat, _clear_caches),
        "validate_cold_cpu_ms": _median_ms(
            lambda: validate(spec), repeat, _clear_caches, time.process_time
        ),
        "validate_warm_ms": _median_ms(lambda: validate(spec), repeat),
        "validate_warm_cpu_ms": _median_ms(lambda: validate(spec), repeat, None, time.process_time),
        "parse_yaml_ms": _median_ms(lambda: parse_process(text), repeat),
        "dump_yaml_ms": _median_ms(lambda: dump_process(spec), repeat),
        "to_proto_ms": _median_ms(lambda: spec_to_proto(spec), repeat),
        "from_proto_ms": _median_ms(lambda: spec_from_proto(message), repeat),
        "yaml_bytes": len(text.encode()),
        "proto_bytes": message.ByteSize(),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
