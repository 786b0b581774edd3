"""A definition version prepared for running: its graph and every expression compiled once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from trinity_execution.domain.errors import UnknownStep
from trinity_process_model.expressions import (
    CompiledCondition,
    CompiledTemplate,
    ExpressionError,
    compile_condition,
    compile_template,
)
from trinity_process_model.graph import ProcessGraph
from trinity_process_model.model import (
    AgentTaskConfig,
    GatewayConfig,
    HumanApprovalConfig,
    NotificationConfig,
    ProcessSpec,
    RetryPolicy,
    Step,
    SubProcessConfig,
    ToolRunConfig,
    WaitForMessageConfig,
)


@dataclass(frozen=True, eq=False)
class CompiledProcess:
    """Everything the engine needs of one definition version, computed once per version.

    A template or condition that does not compile is kept as its error: the step
    using it fails with EXPRESSION_ERROR when it runs (validation refuses such
    definitions at publish, so this only guards against a bad stored version).
    """

    definition_id: str
    version: str
    spec: ProcessSpec
    graph: ProcessGraph
    steps: MappingProxyType[str, Step]
    retry_policies: MappingProxyType[str, RetryPolicy]
    _templates: MappingProxyType[str, CompiledTemplate | ExpressionError]
    _conditions: MappingProxyType[str, CompiledCondition | ExpressionError]
    _loop_orders: MappingProxyType[tuple[str, str], tuple[str, ...]]

    @classmethod
    def compile(cls, definition_id: str, version: str, spec: ProcessSpec) -> CompiledProcess:
        graph = ProcessGraph.build(spec)
        steps: dict[str, Step] = {}
        for step in spec.steps:
            steps.setdefault(step.id, step)
        templates: dict[str, CompiledTemplate | ExpressionError] = {}
        conditions: dict[str, CompiledCondition | ExpressionError] = {}
        for text in _templates_of(spec):
            if text not in templates:
                templates[text] = _try(compile_template, text)
        for text in _conditions_of(spec):
            if text not in conditions:
                conditions[text] = _try(compile_condition, text)
        return cls(
            definition_id=definition_id,
            version=version,
            spec=spec,
            graph=graph,
            steps=MappingProxyType(steps),
            retry_policies=MappingProxyType(
                {sid: spec.retry_policy_of(step) for sid, step in steps.items()}
            ),
            _templates=MappingProxyType(templates),
            _conditions=MappingProxyType(conditions),
            _loop_orders=MappingProxyType(
                {
                    key: tuple(s for s in graph.topological_order if s in graph.loop_body(*key))
                    for key in graph.loop_routes
                }
            ),
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> int:
        return len(self.graph.step_ids)

    def step(self, step_id: str) -> Step:
        try:
            return self.steps[step_id]
        except KeyError:
            raise UnknownStep(step_id) from None

    def template(self, text: str) -> CompiledTemplate:
        """The compiled template; raises its ExpressionError when it did not compile."""
        found = self._templates.get(text)
        if found is None:
            found = _try(compile_template, text)
        if isinstance(found, ExpressionError):
            raise found
        return found

    def condition(self, text: str) -> CompiledCondition:
        found = self._conditions.get(text)
        if found is None:
            found = _try(compile_condition, text)
        if isinstance(found, ExpressionError):
            raise found
        return found

    def loop_body_order(self, gateway_id: str, target: str) -> tuple[str, ...]:
        """The loop's body in topological order (computed once per loop)."""
        return self._loop_orders.get((gateway_id, target), ())

    def render(self, text: str, context: Any) -> str:
        return self.template(text).render(context)


def _try(compile_: Any, text: str) -> Any:
    try:
        return compile_(text)
    except ExpressionError as exc:
        return exc


def _templates_of(spec: ProcessSpec) -> Iterable[str]:
    for step in spec.steps:
        if step.compensate is not None:
            yield from _work_templates(step.compensate.config)
        config = step.config
        if isinstance(config, AgentTaskConfig):
            yield config.message
        elif isinstance(config, HumanApprovalConfig):
            yield config.title
            yield from config.artifacts
        elif isinstance(config, NotificationConfig):
            yield from (config.target, config.subject, config.message)
        elif isinstance(config, ToolRunConfig):
            yield from config.arguments.values()
        elif isinstance(config, WaitForMessageConfig):
            yield config.correlation_key
        elif isinstance(config, SubProcessConfig):
            yield from config.input.values()
    for output in spec.outputs:
        yield from (output.target, output.subject, output.message)


def _work_templates(config: Any) -> Iterable[str]:
    if isinstance(config, AgentTaskConfig):
        yield config.message
    elif isinstance(config, NotificationConfig):
        yield from (config.target, config.subject, config.message)
    elif isinstance(config, ToolRunConfig):
        yield from config.arguments.values()


def _conditions_of(spec: ProcessSpec) -> Iterable[str]:
    for step in spec.steps:
        if step.condition:
            yield step.condition
        if isinstance(step.config, GatewayConfig):
            for route in step.config.routes:
                yield route.condition
