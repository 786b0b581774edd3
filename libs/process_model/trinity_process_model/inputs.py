"""Declared inputs: checking what a trigger passes, filling defaults, the JSON Schema.

Pure functions of the declarations and the values. The execution service checks every
start (TriggerProcess, schedules, event triggers) with :func:`check_input` before any
execution exists; validation checks defaults and schedule input with the same rules.
A process that declares no input accepts any input, unchecked (as before inputs existed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from trinity_process_model.model import InputDeclaration, InputType
from trinity_process_model.validation import MAX_JSON_INTEGER, Violation, field_path

__all__ = ["check_input", "input_schema", "type_problem"]


def type_problem(kind: InputType, value: Any) -> str | None:
    """Why ``value`` is not of ``kind`` (None: it is).

    Numbers cross google.protobuf.Struct as doubles, so an integral double (3.0) is an
    integer here: the caller cannot tell 3 from 3.0 once it has been through the contract.
    """
    if kind is InputType.STRING:
        ok = isinstance(value, str)
    elif kind is InputType.BOOLEAN:
        ok = isinstance(value, bool)
    elif kind is InputType.INTEGER:
        ok = _is_number(value) and float(value).is_integer() and abs(value) <= MAX_JSON_INTEGER
    elif kind is InputType.NUMBER:
        ok = _is_number(value)
    elif kind is InputType.OBJECT:
        ok = isinstance(value, Mapping)
    else:
        ok = isinstance(value, list | tuple)
    return None if ok else f"must be {_article(kind)}, got {_describe(value)}"


def check_input(
    declarations: Sequence[InputDeclaration],
    values: Mapping[str, Any],
    *,
    ignore_undeclared: bool = False,
) -> tuple[dict[str, Any], list[Violation]]:
    """The input an execution starts with (defaults filled in) and every problem of it.

    With no declarations, ``values`` pass unchanged. ``ignore_undeclared`` drops keys the
    process does not declare instead of refusing them: an event's payload is someone
    else's message, of which the process reads what it declares.
    """
    if not declarations:
        return dict(values), []
    # Problems come in declaration order, then undeclared names sorted: a contract's map
    # keeps no order, so the caller's order cannot be the one reported.
    problems: list[Violation] = []
    result: dict[str, Any] = {}
    for declaration in declarations:
        path = field_path("input", declaration.name)
        if declaration.name not in values:
            if declaration.has_default:
                result[declaration.name] = declaration.default
            elif declaration.required:
                about = f": {declaration.description}" if declaration.description else ""
                problems.append(
                    Violation(path, f"is required ({_article(declaration.type)}{about})")
                )
            continue
        value = values[declaration.name]
        problem = type_problem(declaration.type, value)
        if problem:
            problems.append(Violation(path, problem))
        elif declaration.type is InputType.INTEGER:
            value = int(value)  # 3.0 from a Struct is the integer 3 it was sent as
        result[declaration.name] = value
    declared = {d.name for d in declarations}
    if not ignore_undeclared:
        for name in sorted(set(values) - declared):
            problems.append(
                Violation(
                    field_path("input", name),
                    f"is not an input of this process; it declares {_names(declarations)}",
                )
            )
    return result, problems


def input_schema(declarations: Sequence[InputDeclaration]) -> dict[str, Any]:
    """The declarations as a JSON Schema (draft 2020-12) object, for other tools."""
    properties: dict[str, Any] = {}
    for declaration in declarations:
        prop: dict[str, Any] = {"type": str(declaration.type)}
        if declaration.description:
            prop["description"] = declaration.description
        if declaration.has_default:
            prop["default"] = declaration.default
        properties[declaration.name] = prop
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [d.name for d in declarations if d.required]
    if required:
        schema["required"] = required
    return schema


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _article(kind: InputType) -> str:
    return f"an {kind}" if str(kind)[0] in "aeiou" else f"a {kind}"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _names(declarations: Sequence[InputDeclaration]) -> str:
    return ", ".join(d.name for d in declarations)
