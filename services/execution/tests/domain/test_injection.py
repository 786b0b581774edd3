"""Injection payloads in a definition's templates and conditions never run."""

from __future__ import annotations

import pytest
from engine_support import Driver, agent, approval, gateway, spec

from trinity_execution.domain import CompiledProcess, ProcessFailed, RequestWork
from trinity_process_model.model import Route

PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].system('id') }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ input.__class__ }}",
    "{{ steps.__class__.__init__ }}",
    "{{ steps._process }}",
    "{{ ''|attr('__class__') }}",
    "{% include '/etc/passwd' %}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_a_message_fails_the_step_unrun(payload: str) -> None:
    d = Driver.of(spec(agent("a", message=f"Hello {payload}")))
    d.start()
    assert not d.commands_of(RequestWork)
    failed = d.facts_of(ProcessFailed)[0]
    assert failed.error.code == "EXPRESSION_ERROR"
    assert "not allowed" in failed.error.message


@pytest.mark.parametrize("payload", PAYLOADS[:-1])
def test_payload_in_conditions_fails_unrun(payload: str) -> None:
    d = Driver.of(spec(agent("a", condition=payload)))
    d.start()
    assert d.facts_of(ProcessFailed)[0].error.code == "EXPRESSION_ERROR"
    d = Driver.of(
        spec(
            gateway("g", routes=[Route("b", payload), Route("c", is_default=True)]),
            agent("b"),
            agent("c"),
        )
    )
    d.start()
    assert d.facts_of(ProcessFailed)[0].error.code == "EXPRESSION_ERROR"


def test_payload_in_artifacts_and_input_values() -> None:
    # A payload arriving as *data* (input) is only text: it is rendered, never evaluated.
    d = Driver.of(spec(approval("r", artifacts=("{{ input.text }}",))))
    d.start(text="{{ ''.__class__ }}")
    assert d.approval_request("r").artifacts[0].text == "{{ ''.__class__ }}"


def test_compile_keeps_the_error_for_the_step() -> None:
    process = CompiledProcess.compile("d", "1", spec(agent("a", message=PAYLOADS[0])))
    with pytest.raises(Exception, match="not allowed"):
        process.template(PAYLOADS[0])
