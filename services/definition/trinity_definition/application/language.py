"""The process language library (shared kernel) behind the Environment's ports."""

from __future__ import annotations

from trinity_definition.domain.errors import DefinitionUnparsable
from trinity_platform.errors import FieldViolation
from trinity_process_model.authoring import AuthoringError, parse_process
from trinity_process_model.model import ProcessSpec
from trinity_process_model.validation import validate


def validate_spec(spec: ProcessSpec) -> list[FieldViolation]:
    """Every violation of ``spec``, with spec-relative paths."""
    return [FieldViolation(v.field, v.description) for v in validate(spec)]


def parse_text(text: str) -> ProcessSpec:
    """A spec from the authoring format (YAML or JSON); raises DefinitionUnparsable."""
    try:
        return parse_process(text)
    except AuthoringError as error:
        violations = [FieldViolation(v.field, v.description) for v in error.violations]
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise DefinitionUnparsable(
            f"the process text cannot be read: {summary}", violations
        ) from None
