"""The Jinja2 sandbox of conditions and templates, with hard limits on work (invariant 8).

The sandbox already refuses attribute tricks; this module bounds *work*. Every render
or evaluation gets a budget (:class:`ExpressionLimits`) and spends it:

* operations: each loop iteration, call, filter, attribute or item lookup and
  arithmetic operation costs one (filters and calls also cost a unit per 1,000
  items or characters they take), so nested loops or recursive macros run out;
* integer size: ``**`` and ``*`` on integers are checked *before* they compute, so
  ``9 ** 9 ** 9`` never starts;
* length: every string or collection that is built (repetition, ``+``, ``~``,
  ``join``, ``replace``, padding, format widths, printed values) is checked before
  it is allocated, and the rendered text as it is produced;
* a wall-clock deadline per render, checked at every operation: the backstop for
  whatever is slow per operation.

Past a limit, :class:`ExpressionLimitExceeded` names the limit. The static checks
(:func:`static_problem`) refuse at validation what is visible in the text: a literal
``range`` over the operations limit, a power of a power, a literal power or
repetition over the limits.

The limits are per deployment (:func:`configure_limits`, from ``TRINITY_EXPRESSION_*``
variables via :meth:`ExpressionLimits.from_env`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trinity_process_model.expression_errors import ExpressionLimitExceeded

__all__ = [
    "ExpressionLimitExceeded",
    "ExpressionLimits",
    "configure_limits",
    "current_limits",
    "make_environment",
    "metered",
    "static_problem",
]


OPERATIONS = "operations"
INTEGER_SIZE = "integer_size"
LENGTH = "length"
DEADLINE = "deadline"


@dataclass(frozen=True)
class ExpressionLimits:
    """How much one render or evaluation may do."""

    max_operations: int = 100_000
    max_integer_bits: int = 4_096
    max_length: int = 1_000_000
    """Characters of a string (the rendered text included) or items of a collection."""
    deadline_seconds: float = 2.0

    ENV = {
        "max_operations": "TRINITY_EXPRESSION_MAX_OPERATIONS",
        "max_integer_bits": "TRINITY_EXPRESSION_MAX_INTEGER_BITS",
        "max_length": "TRINITY_EXPRESSION_MAX_LENGTH",
        "deadline_seconds": "TRINITY_EXPRESSION_DEADLINE_SECONDS",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExpressionLimits:
        """The limits from ``TRINITY_EXPRESSION_*`` variables (defaults for the unset)."""
        values: dict[str, Any] = {}
        for name, variable in cls.ENV.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            try:
                value = float(raw) if name == "deadline_seconds" else int(raw)
            except ValueError:
                raise ValueError(f"{variable} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{variable} must be positive, got {raw!r}")
            values[name] = value
        return cls(**values)


_limits = ExpressionLimits()


def configure_limits(limits: ExpressionLimits) -> None:
    """Set this process's limits (once, at start-up, from the deployment's settings)."""
    global _limits
    _limits = limits


def current_limits() -> ExpressionLimits:
    return _limits


# ------------------------------------------------------------------ the budget


class _Budget:
    __slots__ = ("deadline", "left", "limits")

    def __init__(self, limits: ExpressionLimits) -> None:
        self.limits = limits
        self.left = limits.max_operations
        self.deadline = time.monotonic() + limits.deadline_seconds

    def spend(self, units: int = 1) -> None:
        self.left -= units
        if self.left < 0:
            raise ExpressionLimitExceeded(
                OPERATIONS, f"more than {self.limits.max_operations} operations"
            )
        if time.monotonic() > self.deadline:
            raise ExpressionLimitExceeded(
                DEADLINE, f"took longer than {self.limits.deadline_seconds:g}s"
            )


_BUDGET: ContextVar[_Budget | None] = ContextVar("trinity_expression_budget", default=None)


@contextmanager
def metered() -> Iterator[_Budget]:
    """A fresh budget for one render or evaluation (per thread and task)."""
    budget = _Budget(_limits)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    # Outside a render (Jinja folding a constant while compiling): a budget of its own.
    return budget if budget is not None else _Budget(_limits)


def _spend(units: int = 1) -> None:
    _budget().spend(units)


# ------------------------------------------------------------------ sizes


def size_of(value: Any, limit: int) -> int:
    """Characters ``str(value)`` would roughly take, counted only up to just past `limit`
    (so a list of a million references to one long string costs a few steps)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 24
        if total > limit:
            return total
    return total


def _check_length(value: Any, what: str) -> None:
    limit = _budget().limits.max_length
    if size_of(value, limit) > limit:
        raise ExpressionLimitExceeded(LENGTH, f"{what} would be longer than {limit} characters")


def _check_built(length: int, what: str) -> None:
    limit = _budget().limits.max_length
    if length > limit:
        raise ExpressionLimitExceeded(
            LENGTH, f"{what} would build {length} items or characters (at most {limit})"
        )


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        bits = _budget().limits.max_integer_bits
        if value.bit_length() > bits:
            raise ExpressionLimitExceeded(INTEGER_SIZE, f"an integer over {bits} bits")


_FORMAT_NUMBER = re.compile(r"\d+")


def _check_format(text: str) -> None:
    """Widths and precisions in a format string (``%0999999999d``, ``{:>99999999}``)."""
    limit = _budget().limits.max_length
    for number in _FORMAT_NUMBER.findall(text):
        if len(number) > 7 or int(number) > limit:
            raise ExpressionLimitExceeded(LENGTH, f"a format width of {number} (at most {limit})")


def _size_units(args: Iterable[Any]) -> int:
    """Extra operations a call costs for the data it takes: one per 1,000 items."""
    units = 0
    for arg in args:
        if isinstance(arg, str | list | tuple | dict | set):
            units += len(arg) // 1000
    return units


# ------------------------------------------------------------------ prechecks

_PADDING = frozenset({"center", "ljust", "rjust", "zfill", "truncate", "wordwrap", "batch"})
_TO_TEXT = frozenset({"string", "tojson", "pprint", "join", "list", "sum", "xmlattr", "urlize"})


def _estimated_replace(text: str, old: str, new: str, count: int = -1) -> int:
    if not old:
        return len(text) + (len(text) + 1) * len(new)
    hits = text.count(old)
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _precheck(
    name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, method: bool
) -> None:
    """Refuse, before it runs, a filter or string method that would build too much."""
    limit = _budget().limits.max_length
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > limit:
            raise ExpressionLimitExceeded(LENGTH, f"{name}({arg}) is over {limit}")
    if name == "replace" and isinstance(subject, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else -1
        _check_built(_estimated_replace(subject, old, new, count), "replace")
    elif name == "indent" and isinstance(subject, str):
        width = args[0] if args else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else int(width or 0)
        _check_built(len(subject) + (subject.count("\n") + 1) * per_line, "indent")
    elif name == "expandtabs" and isinstance(subject, str):
        tab = args[0] if args and isinstance(args[0], int) else 8
        _check_built(len(subject) + subject.count("\t") * tab, "expandtabs")
    elif name in ("format", "format_map") and isinstance(subject, str):
        _check_format(subject)
    elif method and name == "join" and isinstance(subject, str) and args:
        # str.join(items): the separator repeats between items
        _check_length(args[0], "join")
        items = args[0]
        if isinstance(items, list | tuple | str):
            _check_built(len(subject) * len(items), "join")
    elif not method and name in _TO_TEXT:
        _check_length(subject, name)
        separator = args[0] if args and isinstance(args[0], str) else ""
        if name == "join" and isinstance(subject, list | tuple | str) and separator:
            _check_built(len(separator) * len(subject), "join")
    elif name in _PADDING:
        pass  # their int arguments were checked above


def _checked_result(value: Any) -> Any:
    _check_int(value)
    if isinstance(value, str | list | tuple | dict | set):
        _check_built(len(value), "a value")
    return value


def _metered_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that spends the budget and checks what it takes and gives."""

    @wraps(func)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        # Filters that take the context or environment get it first; the subject follows.
        pass_arg = getattr(func, "jinja_pass_arg", None)
        values = args[1:] if pass_arg is not None else args
        subject, rest = (values[0], tuple(values[1:])) if values else (None, ())
        _spend(1 + _size_units(values))
        _precheck(name, subject, rest, kwargs, method=False)
        return _checked_result(func(*args, **kwargs))

    return filter_


def _bounded_range(*args: Any) -> range:
    # Numbers from JSON input may arrive as whole floats (2.0): take them as integers.
    numbers = range(*(int(a) if isinstance(a, float) and a.is_integer() else a for a in args))
    if len(numbers) > _budget().left:
        raise ExpressionLimitExceeded(
            OPERATIONS, f"range of {len(numbers)} items (at most {_budget().limits.max_operations})"
        )
    return numbers


def _counted(iterable: Any) -> Iterator[Any]:
    """What a ``{% for %}`` loop iterates: one operation per item."""
    budget = _budget()
    for item in iterable:
        budget.spend()
        yield item


COUNTED_ITERATION = "trinity_counted"
"""The filter the sandbox wraps around every loop's iterable."""


def _concat(values: Iterable[Any]) -> str:
    """``a ~ b ~ c``, refusing a result over the length limit before building it."""
    parts = [v if isinstance(v, str) else _finalize(v) for v in values]
    _spend(1 + _size_units(parts))
    _check_built(sum(len(str(p)) for p in parts), "~")
    return "".join(str(p) for p in parts)


def _finalize(value: Any) -> Any:
    """Each printed value: refuse one whose text would be over the length limit."""
    if not isinstance(value, str):
        _check_length(value, "a printed value")
    return value


class _Generator(CodeGenerator):
    """Jinja's code generator, with ``~`` going through the bounded concat."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.trinity_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox: item-first lookup on mappings, and every operation metered."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"-", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.trinity_concat = _concat

    def getattr(self, obj: Any, attribute: str) -> Any:
        _spend()
        # A step output `{"items": 3}` must give 3 for `output.items`, not dict.items.
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _spend()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend(1 + _size_units(args))
        subject = getattr(__obj, "__self__", None)
        if subject is None:
            subject = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        if isinstance(subject, str | list | tuple | dict):
            _precheck(getattr(__obj, "__name__", ""), subject, args, kwargs, method=True)
        return _checked_result(super().call(__context, __obj, *args, **kwargs))

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _spend()
        return super().call_unop(context, operator, arg)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _check_built(len(left) + len(right), "+")
        elif operator == "%" and isinstance(left, str):
            if "*" in left:
                raise ExpressionLimitExceeded(LENGTH, "a '*' width in a % format")
            _check_format(left)
        return _checked_result(super().call_binop(context, operator, left, right))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_power(left: Any, right: Any) -> None:
    if not (_is_int(left) and _is_int(right)) or right <= 0 or abs(left) <= 1:
        return
    bits = _budget().limits.max_integer_bits
    if right > bits or left.bit_length() * right > bits:
        raise ExpressionLimitExceeded(
            INTEGER_SIZE, f"{left.bit_length()}-bit number ** {right} is over {bits} bits"
        )


def _check_product(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right):
        bits = _budget().limits.max_integer_bits
        if left.bit_length() + right.bit_length() > bits + 1:
            raise ExpressionLimitExceeded(INTEGER_SIZE, f"a product over {bits} bits")
        return
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and _is_int(times):
            _check_built(len(seq) * max(times, 0), "repetition")


def make_environment(**options: Any) -> _Environment:
    """The sandbox every condition and template runs in."""
    env = _Environment(finalize=_finalize, **options)
    env.globals.clear()
    env.globals["range"] = _bounded_range
    for name, func in list(env.filters.items()):
        env.filters[name] = _metered_filter(name, func)
    env.filters[COUNTED_ITERATION] = _counted
    return env


def count_loops(tree: nodes.Template) -> nodes.Template:
    """Wrap every ``{% for %}`` iterable so each item costs one operation."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, COUNTED_ITERATION, [], [], None, None)
    return tree


# ------------------------------------------------------------------ static checks


def static_problem(node: nodes.Node) -> tuple[str, str] | None:
    """(limit, what) visibly over a limit in this node of a parsed expression, if any."""
    limits = _limits
    if isinstance(node, nodes.Pow):
        if isinstance(node.left, nodes.Pow) or isinstance(node.right, nodes.Pow):
            return INTEGER_SIZE, "a power of a power"
        base, exponent = _const(node.left), _const(node.right)
        bits = limits.max_integer_bits
        if (
            _is_int(base)
            and _is_int(exponent)
            and abs(base) > 1
            and (exponent > bits or base.bit_length() * exponent > bits)
        ):
            return INTEGER_SIZE, f"{base} ** {exponent}, over the {bits}-bit integer limit"
    if isinstance(node, nodes.Mul):
        for seq, times in ((node.left, node.right), (node.right, node.left)):
            text, count = _const(seq), _const(times)
            if isinstance(text, str) and _is_int(count) and len(text) * count > limits.max_length:
                return LENGTH, (
                    f"a repetition of {len(text) * count} characters (at most {limits.max_length})"
                )
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
    ):
        bounds = [_const(arg) for arg in node.args]
        if bounds and all(_is_int(b) for b in bounds) and len(bounds) <= 3:
            try:
                items = len(range(*bounds))
            except ValueError:
                return None
            if items > limits.max_operations:
                return OPERATIONS, (
                    f"range of {items} items, over the limit of {limits.max_operations} operations"
                )
    return None


def _const(node: nodes.Node) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const):
        value = node.node.value
        return -value if _is_int(value) else None
    return None
