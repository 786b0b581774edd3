"""Conditions and message templates of process definitions, in Jinja2's sandbox.

Two forms of condition are accepted, as in the seed:

    {{steps.review.output.score}} >= 80        placeholders inside an expression
    {{ steps.review.output.score >= 80 }}      one expression in one placeholder

Each ``{{ X }}`` placeholder is rewritten into ``(X)`` and the whole text is compiled
as one Jinja expression. Templates (``Analyze: {{steps.research.output}}``) render
to text.

Safety (architecture invariant 8): expressions run in an
``ImmutableSandboxedEnvironment`` with no globals. Before anything runs, the parsed
tree is checked: attribute or item access to a name starting with ``_``, the
template internals (``self``, ``loop``, ``caller``...), Jinja's helper globals
(``cycler``, ``joiner``, ``lipsum``, ``namespace``, ``dict``) and
template loading (``include``, ``import``, ``extends``) are refused with
:class:`UnsafeExpressionError`. Whatever slips past the static check meets the
sandbox at run time, whose refusal is reported the same way. The sandbox also bounds
work (operations, integer size, length, a deadline per render): see ``sandbox.py``;
``range`` is its bounded version.

Undefined names are an error naming the missing name (``StrictUndefined``), never
silently empty. Compiled results are cached by text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import StrictUndefined, Undefined

from trinity_process_model.expression_errors import (
    ExpressionError,
    ExpressionLimitExceeded,
    ExpressionSyntaxError,
    UndefinedValueError,
    UnsafeExpressionError,
)
from trinity_process_model.sandbox import (
    ExpressionLimits,
    configure_limits,
    count_loops,
    make_environment,
    metered,
    static_problem,
)

__all__ = [
    "CompiledCondition",
    "CompiledTemplate",
    "ExpressionError",
    "ExpressionLimitExceeded",
    "ExpressionLimits",
    "ExpressionSyntaxError",
    "UndefinedValueError",
    "UnsafeExpressionError",
    "compile_condition",
    "compile_template",
    "condition_source",
    "configure_limits",
    "is_template",
]


_FORBIDDEN_NAMES = frozenset(
    {
        "self",
        "loop",
        "caller",
        "varargs",
        "kwargs",
        "super",
        "cycler",
        "joiner",
        "lipsum",
        "namespace",
        "dict",
        "config",
        "request",
        "environment",
        "context",
    }
)
_FORBIDDEN_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
    nodes.Block,
    nodes.ImportedName,
    nodes.InternalName,
    nodes.EnvironmentAttribute,
    nodes.ExtensionAttribute,
    nodes.ContextReference,
    nodes.DerivedContextReference,
)
_ATTRIBUTE_FILTERS = frozenset({"attr", "map", "selectattr", "rejectattr", "sort", "groupby"})


_ENV = make_environment(undefined=StrictUndefined, autoescape=False)

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def is_template(text: str) -> bool:
    """Whether the text holds any Jinja markup at all."""
    return "{{" in text or "{%" in text or "{#" in text


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _check_safe(tree: nodes.Node, text: str) -> None:
    """Refuse, before anything runs, every construct that reaches Python internals."""
    for node in _walk(tree):
        problem = _problem(node)
        if problem:
            raise UnsafeExpressionError(f"{problem} is not allowed in {text!r}")
        over = static_problem(node)
        if over:
            limit, what = over
            raise ExpressionLimitExceeded(limit, f"{what} is over a limit (in {text!r})")


_DUNDER = re.compile(r"__\w+__")


def _private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def _problem(node: nodes.Node) -> str | None:
    """What is unsafe about this one node, if anything."""
    if isinstance(node, _FORBIDDEN_NODES):
        return type(node).__name__.lower()
    if isinstance(node, nodes.Name) and (node.name in _FORBIDDEN_NAMES or _private(node.name)):
        return f"the name {node.name!r}"
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return f"the attribute {node.attr!r}"
    if isinstance(node, nodes.Getitem):
        return _item_problem(node.arg)
    if isinstance(node, nodes.Filter) and node.name in _ATTRIBUTE_FILTERS:
        for value in [*node.args, *(kw.value for kw in node.kwargs)]:
            if not isinstance(value, nodes.Const):
                return f"filter {node.name!r} with a computed argument"
            if isinstance(value.value, str) and _private(value.value):
                return f"the attribute {value.value!r}"
    if isinstance(node, nodes.Const) and isinstance(node.value, str) and _DUNDER.search(node.value):
        return f"the string {node.value!r}"
    return None


def _item_problem(arg: nodes.Node) -> str | None:
    if isinstance(arg, nodes.Const):
        if isinstance(arg.value, str) and arg.value.startswith("_"):
            return f"the item {arg.value!r}"
        return None
    if isinstance(arg, nodes.Slice | nodes.Name | nodes.Getattr):
        return None
    # Computed keys ('_' ~ '_class__') could assemble a private name.
    for sub in _walk(arg):
        if isinstance(sub, nodes.Const) and isinstance(sub.value, str) and "_" in sub.value:
            return "a computed item key with '_'"
    return None


def _step_refs(tree: nodes.Node) -> frozenset[str]:
    """Ids of the steps the expression reads (`steps.<id>` or `steps['<id>']`)."""
    return _member_refs(tree, "steps")


def _input_refs(tree: nodes.Node) -> frozenset[str]:
    """Names of the inputs the expression reads (`input.<name>` or `input['<name>']`)."""
    return _member_refs(tree, "input")


def _member_refs(tree: nodes.Node, root: str) -> frozenset[str]:
    """Names read as ``<root>.<name>`` or ``<root>['<name>']``."""
    refs: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, nodes.Getattr) and _is_name(node.node, root):
            refs.add(node.attr)
        elif (
            isinstance(node, nodes.Getitem)
            and _is_name(node.node, root)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            refs.add(node.arg.value)
    return frozenset(refs)


def _step_fields(tree: nodes.Node) -> frozenset[tuple[str, str]]:
    """(step id, field) pairs the expression reads: `steps.review.decision` gives
    ("review", "decision")."""
    found: set[tuple[str, str]] = set()
    for node in _walk(tree):
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            field = _const_key(node)
            step = _const_key(node.node) if _is_steps_item(node.node) else None
            if field is not None and step is not None:
                found.add((step, field))
    return frozenset(found)


def _is_steps_item(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Getattr | nodes.Getitem) and _is_steps(node.node)


def _const_key(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _is_steps(node: nodes.Node) -> bool:
    return _is_name(node, "steps")


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


def _root_names(tree: nodes.Node) -> frozenset[str]:
    """Top-level names the expression reads from its context (``input``, ``steps``...)."""
    assigned = {
        n.name
        for n in _walk(tree)
        if (isinstance(n, nodes.Name) and n.ctx in ("store", "param")) or isinstance(n, nodes.Macro)
    }
    return frozenset(
        n.name
        for n in _walk(tree)
        if isinstance(n, nodes.Name)
        and n.ctx == "load"
        and n.name not in assigned
        and n.name not in _ENV.globals  # the sandbox's own (the bounded range)
    )


def _translate(exc: Exception, text: str) -> ExpressionError:
    if isinstance(exc, ExpressionError):
        return exc
    if isinstance(exc, RecursionError | MemoryError):
        return ExpressionLimitExceeded("operations", f"{type(exc).__name__} (in {text!r})")
    if isinstance(exc, SecurityError):
        return UnsafeExpressionError(f"{exc} (in {text!r})")
    if isinstance(exc, UndefinedError):
        return UndefinedValueError(f"{exc} (in {text!r})")
    if isinstance(exc, TemplateSyntaxError):
        return ExpressionSyntaxError(f"{exc.message} (in {text!r})")
    if isinstance(exc, TemplateError):
        return ExpressionError(f"{exc} (in {text!r})")
    return ExpressionError(f"{type(exc).__name__}: {exc} (in {text!r})")


def _ensure_defined(value: Any, text: str) -> Any:
    if isinstance(value, Undefined):
        try:
            str(value)
        except UndefinedError as exc:
            raise UndefinedValueError(f"{exc} (in {text!r})") from None
        raise UndefinedValueError(f"undefined value (in {text!r})")
    return value


@dataclass(frozen=True, eq=False)
class CompiledTemplate:
    """A message template, checked and compiled once."""

    text: str
    step_refs: frozenset[str]
    """Ids of the steps the template reads."""
    names: frozenset[str]
    """Top-level context names the template reads."""
    _template: Any

    def render(self, context: Mapping[str, Any]) -> str:
        """Render with `context`; an undefined name raises UndefinedValueError."""
        if self._template is None:
            return self.text
        parts: list[str] = []
        try:
            with metered() as budget:
                length = 0
                limit = budget.limits.max_length
                for part in self._template.generate(context):
                    length += len(part)
                    if length > limit:
                        raise ExpressionLimitExceeded(
                            "length", f"the rendered text is longer than {limit} characters"
                        )
                    parts.append(part)
        except Exception as exc:
            raise _translate(exc, self.text) from None
        return "".join(parts)


@dataclass(frozen=True, eq=False)
class _Probe:
    """One value a condition reads, shown in what the condition saw."""

    source: str
    expression: Any


@dataclass(frozen=True, eq=False)
class CompiledCondition:
    """A condition, checked and compiled once."""

    text: str
    source: str
    """The single Jinja expression the text was rewritten into."""
    step_refs: frozenset[str]
    names: frozenset[str]
    _expression: Any
    _probes: tuple[_Probe, ...]

    def evaluate(self, context: Mapping[str, Any]) -> tuple[bool, str]:
        """The truth of the condition, and the values it saw (``path=value; ...``).

        An empty condition is true. Undefined names raise UndefinedValueError.
        """
        if self._expression is None:
            return True, ""
        try:
            with metered():
                result = _ensure_defined(self._expression(context), self.text)
                truth = bool(result)
        except Exception as exc:
            raise _translate(exc, self.text) from None
        with metered():
            return truth, self._seen(context, result)

    def value(self, context: Mapping[str, Any]) -> Any:
        """The expression's value itself (a for_each's list); undefined names raise."""
        if self._expression is None:
            return None
        try:
            return _ensure_defined(self._expression(context), self.text)
        except Exception as exc:
            raise _translate(exc, self.text) from None

    def _seen(self, context: Mapping[str, Any], result: Any) -> str:
        if not self._probes:
            return _show(result)
        parts = []
        for probe in self._probes:
            try:
                value = probe.expression(context)
                shown = "<undefined>" if isinstance(value, Undefined) else _show(value)
            except Exception:
                shown = "<undefined>"
            parts.append(f"{probe.source}={shown}")
        return "; ".join(parts)


def _show(value: Any, limit: int = 200) -> str:
    if isinstance(value, str):
        text = repr(value)
    elif value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reference_source(node: nodes.Node) -> str | None:
    """`steps.review.output.score` back from its tree, or None when it is computed."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _reference_source(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _reference_source(node.node)
        return None if base is None else f"{base}[{node.arg.value!r}]"
    return None


def _references(tree: nodes.Node) -> list[str]:
    """The longest variable paths the expression reads, in order, without repeats."""
    found: list[str] = []

    def visit(node: nodes.Node) -> None:
        if isinstance(node, nodes.Name | nodes.Getattr | nodes.Getitem):
            source = _reference_source(node)
            if source is not None:
                if source not in found:
                    found.append(source)
                return
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    return found


@dataclass(frozen=True)
class ExpressionCheck:
    """What validation needs of a template or condition, found without compiling it."""

    step_refs: frozenset[str]
    names: frozenset[str]
    step_fields: frozenset[tuple[str, str]] = frozenset()
    """(step id, field) pairs read, such as ("review", "decision")."""
    input_refs: frozenset[str] = frozenset()


def _check_names(tree: nodes.Node, text: str) -> None:
    """Unknown filters and tests: Jinja reports them only when generating code."""
    for node in _walk(tree):
        if isinstance(node, nodes.Filter) and node.name not in _ENV.filters:
            raise ExpressionSyntaxError(f"no filter named {node.name!r} (in {text!r})")
        if isinstance(node, nodes.Test) and node.name not in _ENV.tests:
            raise ExpressionSyntaxError(f"no test named {node.name!r} (in {text!r})")


def _parsed(source: str, text: str) -> nodes.Template:
    try:
        tree = _ENV.parse(source)
    except Exception as exc:
        raise _translate(exc, text) from None
    _check_safe(tree, text)
    _check_names(tree, text)
    return tree


@lru_cache(maxsize=4096)
def check_template(text: str) -> ExpressionCheck:
    """Check a template as compile_template does (syntax, safety, names), without
    generating code: validating a 1,000-step definition stays fast."""
    if not is_template(text):
        return ExpressionCheck(frozenset(), frozenset())
    tree = _parsed(text, text)
    return ExpressionCheck(
        _step_refs(tree), _root_names(tree), _step_fields(tree), _input_refs(tree)
    )


@lru_cache(maxsize=4096)
def check_condition(text: str) -> ExpressionCheck:
    """Check a condition as compile_condition does, without generating code."""
    if not text.strip():
        return ExpressionCheck(frozenset(), frozenset())
    source = _condition_source_checked(text)
    tree = _parsed(f"{{{{ ({source}) }}}}", text)
    return ExpressionCheck(
        _step_refs(tree), _root_names(tree), _step_fields(tree), _input_refs(tree)
    )


def _condition_source_checked(text: str) -> str:
    source = condition_source(text)
    if "{{" in source or "}}" in source or "{%" in source or "{#" in source:
        raise ExpressionSyntaxError(f"unbalanced or nested placeholder (in {text!r})")
    return source


@lru_cache(maxsize=4096)
def compile_template(text: str) -> CompiledTemplate:
    """Check and compile a message template (cached by text)."""
    if not is_template(text):
        return CompiledTemplate(text, frozenset(), frozenset(), None)
    tree = _parsed(text, text)
    try:
        template = _ENV.from_string(count_loops(tree))
    except Exception as exc:
        raise _translate(exc, text) from None
    return CompiledTemplate(text, _step_refs(tree), _root_names(tree), template)


def condition_source(text: str) -> str:
    """The one Jinja expression a condition is rewritten into."""
    stripped = text.strip()
    matches = list(_PLACEHOLDER.finditer(stripped))
    if len(matches) == 1 and matches[0].span() == (0, len(stripped)):
        return matches[0].group(1).strip()
    return _PLACEHOLDER.sub(lambda m: f"({m.group(1).strip()})", stripped)


@lru_cache(maxsize=4096)
def compile_condition(text: str) -> CompiledCondition:
    """Check and compile a condition (cached by text). An empty text is always true."""
    if not text.strip():
        return CompiledCondition(text, "", frozenset(), frozenset(), None, ())
    source = _condition_source_checked(text)
    tree = _parsed(f"{{{{ ({source}) }}}}", text)
    try:
        expression = _ENV.compile_expression(source, undefined_to_none=False)
        probes = tuple(
            _Probe(ref, _ENV.compile_expression(ref, undefined_to_none=False))
            for ref in _references(tree)
        )
    except Exception as exc:
        raise _translate(exc, text) from None
    return CompiledCondition(text, source, _step_refs(tree), _root_names(tree), expression, probes)
