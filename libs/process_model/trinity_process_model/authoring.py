"""The process file format: YAML or JSON a person writes, to and from `ProcessSpec`.

``parse_process(text)`` reads a process file and raises :class:`AuthoringError` with
every problem at once (syntax with line and column, unknown keys, wrong types, bad
durations and money), each at the path of the offending element. ``dump_process``
writes a spec back, with only the fields that differ from their defaults, so that
``parse_process(dump_process(spec)) == spec``. FORMAT.md documents the format.

Parsing checks the *shape* of a file (what the model can hold); whether the process
makes sense (references, cycles, templates, cron, currencies...) is
:func:`trinity_process_model.validation.validate`'s job, so a draft can be saved
before it is complete.

YAML is read as YAML 1.2 core: ``yes``/``no``/``on``/``off`` are text, ``9:30`` is
text, dates are text, and ``<<`` merge keys are not supported. Duplicate keys are
errors. Output is quoted so that YAML 1.1 readers read it the same way.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, TypeVar

import yaml
from yaml.error import Mark, MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trinity_process_model.durations import MAX_DURATION, format_duration, parse_duration
from trinity_process_model.json_marks import load_json_with_marks
from trinity_process_model.model import (
    DEFAULT_KEY_FIELD,
    ActionKind,
    AgentTaskConfig,
    Budget,
    BudgetAction,
    Channel,
    Compensation,
    EventTrigger,
    FailureAction,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    InputDeclaration,
    InputType,
    ManualTrigger,
    MessageTimeoutAction,
    Money,
    NotificationConfig,
    Output,
    ProcessSpec,
    RejectAction,
    RetryPolicy,
    Route,
    ScheduleTrigger,
    Step,
    StepConfig,
    SubProcessConfig,
    TimeoutAction,
    TimerConfig,
    ToolRunConfig,
    Trigger,
    WaitForMessageConfig,
)
from trinity_process_model.money import format_money, parse_amount, parse_money, units_nanos
from trinity_process_model.text_limits import (
    DepthLimitedComposer,
    NestingTooDeep,
    json_depth_problem,
    size_problem,
)
from trinity_process_model.validation import (
    MAX_INPUT_DEPTH,
    MAX_JSON_INTEGER,
    MAX_UINT32,
    Violation,
    field_path,
)

__all__ = [
    "MAX_INPUT_VALUES",
    "AuthoringError",
    "Format",
    "dump_process",
    "parse_process",
    "spec_from_data",
    "spec_to_data",
]

Format = Literal["yaml", "json"]

MAX_INPUT_VALUES = 100_000
"""Most values all schedule inputs of one file may hold (YAML aliases cannot blow it up)."""

_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")


class AuthoringError(ValueError):
    """A process file (or message) that cannot be read into a `ProcessSpec`."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations: list[Violation] = list(violations)
        super().__init__(self._summary())

    def _summary(self) -> str:
        count = len(self.violations)
        head = "1 problem" if count == 1 else f"{count} problems"
        return head + ":\n" + "\n".join(f"  {v}" for v in self.violations)


# ---------------------------------------------------------------------------- YAML


class _Map(dict[Any, Any]):
    """A mapping as read, with where each key is and the keys that came twice."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[Any, Mark] = {}
        self.duplicates: list[tuple[Any, Mark | None]] = []


class _Seq(list[Any]):
    """A sequence as read, with where each item is."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[Mark] = []


class _Resolver(yaml.resolver.Resolver):
    """YAML 1.2 core schema: true/false, decimal/0o/0x integers, floats, null; nothing else."""


_Resolver.yaml_implicit_resolvers = {}
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _Constructor(yaml.constructor.SafeConstructor):
    """Safe construction, keeping positions and duplicate keys (see _Map and _Seq)."""


def _construct_int(loader: _Constructor, node: Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 10)


def _construct_map(loader: _Constructor, node: Node) -> _Map:
    if not isinstance(node, MappingNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
    result = _Map()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                "found a key that is not text",
                key_node.start_mark,
            ) from None
        value = loader.construct_object(value_node, deep=True)
        if key in result:
            result.duplicates.append((key, key_node.start_mark))
        else:
            result[key] = value
            result.marks[key] = key_node.start_mark
    return result


def _construct_seq(loader: _Constructor, node: Node) -> _Seq:
    if not isinstance(node, SequenceNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a list", node.start_mark)
    result = _Seq()
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.marks.append(item.start_mark)
    return result


_Constructor.add_constructor("tag:yaml.org,2002:int", _construct_int)  # type: ignore[type-var]
_Constructor.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[type-var]
_Constructor.add_constructor("tag:yaml.org,2002:seq", _construct_seq)  # type: ignore[type-var]


class _PyLoader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    DepthLimitedComposer,
    _Constructor,
    _Resolver,
):
    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        DepthLimitedComposer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


_Loader: Any = _PyLoader
if yaml.__with_libyaml__:  # libyaml scans and parses much faster
    from yaml._yaml import CParser

    class _CLoader(DepthLimitedComposer, CParser, _Constructor, _Resolver):
        """libyaml's events, composed in Python: libyaml's C composer recurses without
        bound and crashes the process on deep nesting (see text_limits)."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            DepthLimitedComposer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)

    _Loader = _CLoader


class _FlowList(list[Any]):
    """A short list written on one line: ``depends_on: [research, review]``."""


_RISKY = re.compile("[\r\x85\u2028\u2029\ufeff]")
"""Characters a YAML reader turns into line breaks (or drops) unless they are escaped."""


class _Dumper(yaml.SafeDumper):
    """Block YAML with indented lists; multi-line text as ``|`` blocks; quoted where any
    YAML reader could mistake text for something else (our 1.2 reading and YAML 1.1),
    in double quotes when the text holds single quotes (``"{{ x == 'a' }}"``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        style: str = super().choose_scalar_style()
        event = self.event
        if not isinstance(event, yaml.ScalarEvent) or style == '"':
            return style
        if _RISKY.search(event.value):
            return '"'  # only escapes carry these through a YAML reader unchanged
        if style == "'" and "'" in event.value and '"' not in event.value:
            return '"'
        return style


for _first, _resolvers in _Resolver.yaml_implicit_resolvers.items():
    for _tag, _regexp in _resolvers:
        _Dumper.add_implicit_resolver(_tag, _regexp, [_first])


def _represent_str(dumper: _Dumper, data: str) -> ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _represent_flow(dumper: _Dumper, data: _FlowList) -> Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_FlowList, _represent_flow)


def _json_map(pairs: list[tuple[str, Any]]) -> _Map:
    result = _Map()
    for key, value in pairs:
        if key in result:
            result.duplicates.append((key, None))
        else:
            result[key] = value
    return result


def _load(text: str, fmt: Format | None) -> tuple[Any, list[Violation]]:
    """The data tree of a document, or the syntax problem (size and nesting first)."""
    too_large = size_problem(text)
    if too_large:
        return None, [Violation("", too_large)]
    looks_json = text.lstrip().startswith(("{", "["))
    if fmt == "json" or (fmt is None and looks_json):
        too_deep = json_depth_problem(text)
        if too_deep:
            return None, [Violation("", too_deep)]
        try:
            return load_json_with_marks(text, _Map, _Seq), []
        except (ValueError, RecursionError):
            pass  # json.loads says what is wrong, in its own words
        try:
            return json.loads(text, object_pairs_hook=_json_map), []
        except json.JSONDecodeError as exc:
            problem = Violation(
                "", f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            )
            if fmt == "json":
                return None, [problem]
            data, yaml_problems = _load(text, "yaml")
            return data, ([problem] if yaml_problems else [])
        except RecursionError:
            return None, [Violation("", "the document nests too deeply")]
    try:
        return yaml.load(text, Loader=_Loader), []
    except NestingTooDeep as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return None, [Violation("", f"{exc.problem}{where}")]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "unreadable"
        return None, [Violation("", f"YAML syntax error{where}: {what}")]
    except yaml.YAMLError as exc:
        return None, [Violation("", f"YAML syntax error: {exc}")]
    except RecursionError:
        return None, [Violation("", "the document nests too deeply")]


# -------------------------------------------------------------------- public API


def parse_process(text: str, format: Format | None = None) -> ProcessSpec:
    """Read a process file. `format` "yaml" or "json"; None guesses (JSON starts with "{").

    Raises AuthoringError with every problem found, each with its path.
    """
    data, problems = _load(text, format)
    if problems:
        raise AuthoringError(problems)
    if data is None:
        raise AuthoringError([Violation("", "the process file is empty")])
    return spec_from_data(data)


def spec_from_data(data: Any) -> ProcessSpec:
    """A spec from the data tree of a process file (mappings, lists and scalars)."""
    reader = _Reader()
    spec = reader.spec(data)
    if reader.violations or spec is None:
        raise AuthoringError(reader.in_file_order() or [Violation("", "not a process")])
    return spec


def dump_process(spec: ProcessSpec, format: Format = "yaml") -> str:
    """The process file of `spec`: only fields that differ from their defaults."""
    data = spec_to_data(spec)
    if format == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if format != "yaml":
        raise ValueError(f"unknown format {format!r}: yaml or json")
    text: str = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
        indent=2,
    )
    return text


# ---------------------------------------------------------------------- reading


_SPEC_KEYS = (
    "name",
    "description",
    "labels",
    "inputs",
    "triggers",
    "budget",
    "default_retry",
    "steps",
    "outputs",
)
_STEP_KEYS = (
    "id",
    "name",
    "depends_on",
    "condition",
    "timeout",
    "retry",
    "on_failure",
    "informed",
    "compensate",
)
_FOR_EACH_FIELDS = ("for_each", "max_concurrency", "max_items", "tolerated_failures")
_COMPENSATION_KINDS = ("agent_task", "tool_run", "notification")
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "agent_task": ("agent", "message", "max_cost", *_FOR_EACH_FIELDS),
    "human_approval": (
        "approvers",
        "on_timeout",
        "artifacts",
        "title",
        "reminder_interval",
        "max_reminders",
        "on_reject",
    ),
    "gateway": ("type", "routes"),
    "timer": ("duration", "until", "timezone"),
    "notification": ("channel", "target", "subject", "message"),
    "tool_run": ("action", "arguments", *_FOR_EACH_FIELDS),
    "wait_for_message": ("message", "correlation_key", "subject", "key_field", "on_timeout"),
    "sub_process": ("process", "version", "input", *_FOR_EACH_FIELDS),
}
_KIND_KEYS = tuple(_KIND_FIELDS)
_INPUT_KEYS = ("type", "required", "default", "description")
_RETRY_KEYS = (
    "max_attempts",
    "initial_backoff",
    "backoff_multiplier",
    "max_backoff",
    "non_retryable_codes",
)
_HINTS: dict[str, str] = {
    "to": "target",
    "when": "condition",
    "if": "condition",
    "default": "is_default",
    "depends": "depends_on",
    "dependencies": "depends_on",
    "agent_name": "agent",
    "wait": "duration",
    "cron_expression": "cron",
}
_DEFAULT_BACKOFF = RetryPolicy().initial_backoff
_DEFAULT_MAX_BACKOFF = RetryPolicy().max_backoff
_DEFAULT_MULTIPLIER = RetryPolicy().backoff_multiplier


def _kind_of(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _where(mark: Mark | None) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""


class _Fields:
    """One mapping being read: its values, its path and where each key is."""

    def __init__(self, data: Mapping[str, Any], path: str, mark: Mark | None) -> None:
        self.data = data
        self.path = path
        self.mark = mark
        self.marks: Mapping[Any, Mark] = getattr(data, "marks", {})

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def path_of(self, key: str) -> str:
        return field_path(self.path, key)

    def at(self, key: str) -> Mark | None:
        return self.marks.get(key, self.mark)


class _Reader:
    """Reads a data tree into a spec, collecting every problem on the way."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self._positions: list[tuple[float, float]] = []  # (line, column) of each violation
        self.input_budget = MAX_INPUT_VALUES

    def error(self, path: str, message: str, mark: Mark | None = None) -> None:
        self.violations.append(Violation(path, message + _where(mark)))
        self._positions.append((mark.line, mark.column) if mark else (math.inf, math.inf))

    def in_file_order(self) -> list[Violation]:
        """The violations by where they are in the file (those without a place last)."""
        order = sorted(range(len(self.violations)), key=self._positions.__getitem__)
        return [self.violations[i] for i in order]

    # ------------------------------------------------------------ structure

    def mapping(
        self,
        value: Any,
        path: str,
        mark: Mark | None,
        allowed: Collection[str],
        what: str,
        unknown: Callable[[str], str] | None = None,
    ) -> _Fields | None:
        if not isinstance(value, Mapping):
            self.error(path, f"{what} must be a mapping, got {_kind_of(value)}", mark)
            return None
        marks: Mapping[Any, Mark] = getattr(value, "marks", {})
        for key, key_mark in getattr(value, "duplicates", ()):
            self.error(field_path(path, str(key)), f"duplicate key {key!r}", key_mark or mark)
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"keys must be text, got {_kind_of(key)}", marks.get(key, mark))
            elif key not in allowed:
                message = unknown(key) if unknown else _unknown_key(key, allowed)
                self.error(field_path(path, key), message, marks.get(key, mark))
        return _Fields(value, path, mark)

    def items(
        self,
        fields: _Fields,
        key: str,
        read: Callable[[Any, str, Mark | None], _T | None],
    ) -> list[_T]:
        value = fields.get(key)
        if value is None:
            return []
        path = fields.path_of(key)
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {_kind_of(value)}", fields.at(key))
            return []
        marks: list[Mark] = getattr(value, "marks", [])
        result: list[_T] = []
        for index, item in enumerate(value):
            mark = marks[index] if index < len(marks) else fields.at(key)
            read_item = read(item, f"{path}[{index}]", mark)
            if read_item is not None:
                result.append(read_item)
        return result

    # --------------------------------------------------------------- scalars

    def text(self, fields: _Fields, key: str, default: str = "") -> str:
        value = fields.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            hint = " (put it in quotes)" if isinstance(value, int | float) else ""
            self.error(
                fields.path_of(key), f"expected text, got {_kind_of(value)}{hint}", fields.at(key)
            )
            return default
        return value

    def texts(self, fields: _Fields, key: str) -> tuple[str, ...]:
        value = fields.get(key)
        if value is None:
            return ()
        path = fields.path_of(key)
        if isinstance(value, str):
            self.error(path, f"expected a list of text, like [{value}]", fields.at(key))
            return ()
        if not isinstance(value, list):
            self.error(path, f"expected a list of text, got {_kind_of(value)}", fields.at(key))
            return ()
        marks: list[Mark] = getattr(value, "marks", [])
        result: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                result.append(item)
            else:
                mark = marks[index] if index < len(marks) else fields.at(key)
                self.error(f"{path}[{index}]", f"expected text, got {_kind_of(item)}", mark)
        return tuple(result)

    def text_map(self, fields: _Fields, key: str) -> dict[str, str]:
        value = fields.get(key)
        if value is None:
            return {}
        path = fields.path_of(key)
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping, got {_kind_of(value)}", fields.at(key))
            return {}
        inner = self.mapping(value, path, fields.at(key), value.keys(), "")
        result: dict[str, str] = {}
        if inner is None:
            return result
        for name, item in value.items():
            if isinstance(name, str) and isinstance(item, str):
                result[name] = item
            elif isinstance(name, str):
                hint = " (put it in quotes)" if isinstance(item, int | float) else ""
                self.error(
                    field_path(path, name),
                    f"expected text, got {_kind_of(item)}{hint}",
                    inner.at(name),
                )
        return result

    def flag(self, fields: _Fields, key: str) -> bool:
        value = fields.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.error(
                fields.path_of(key),
                f"expected true or false, got {_kind_of(value)}",
                fields.at(key),
            )
            return False
        return value

    def count(self, fields: _Fields, key: str, default: int = 0, minimum: int = 0) -> int:
        value = fields.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(
                fields.path_of(key),
                f"expected a whole number, got {_kind_of(value)}",
                fields.at(key),
            )
            return default
        if not minimum <= value <= MAX_UINT32:
            self.error(
                fields.path_of(key),
                f"expected a whole number {minimum}..{MAX_UINT32}, got {value}",
                fields.at(key),
            )
            return default
        return value

    def number(self, fields: _Fields, key: str, default: float) -> float:
        value = fields.get(key)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.error(
                fields.path_of(key), f"expected a number, got {_kind_of(value)}", fields.at(key)
            )
            return default
        if value == 0:
            self.error(fields.path_of(key), "must not be 0", fields.at(key))
            return default
        return float(value)

    def duration(self, fields: _Fields, key: str) -> timedelta | None:
        value = fields.get(key)
        if value is None:
            return None
        path = fields.path_of(key)
        if not isinstance(value, str):
            self.error(
                path,
                f"expected a duration like '30s', '5m', '1h30m' or '2d', got {_kind_of(value)}",
                fields.at(key),
            )
            return None
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc), fields.at(key))
            return None
        if abs(duration) > MAX_DURATION:
            self.error(path, f"duration {value!r} is longer than 10,000 years", fields.at(key))
            return None
        return duration

    def money(self, fields: _Fields, key: str) -> Money | None:
        value = fields.get(key)
        path = fields.path_of(key)
        if isinstance(value, str):
            try:
                money = parse_money(value)
                units_nanos(money.amount)
            except ValueError as exc:
                self.error(path, str(exc), fields.at(key))
                return None
            return money
        if isinstance(value, Mapping):
            inner = self.mapping(value, path, fields.at(key), ("amount", "currency"), "money")
            if inner is None:
                return None
            raw_amount = inner.get("amount")
            currency = self.text(inner, "currency")
            amount: Decimal | None = None
            try:
                if raw_amount is None:
                    raise ValueError("the amount is required")
                amount = parse_amount(raw_amount)
                units_nanos(amount)
            except ValueError as exc:
                hint = (
                    " (write it in quotes, a float is not exact)"
                    if isinstance(raw_amount, float)
                    else ""
                )
                self.error(inner.path_of("amount"), f"{exc}{hint}", inner.at("amount"))
            if not re.fullmatch(r"[A-Z]{3}", currency):
                self.error(
                    inner.path_of("currency"),
                    f"expected an ISO 4217 code like USD, got {currency!r}",
                    inner.at("currency"),
                )
                return None
            return Money(amount, currency) if amount is not None else None
        self.error(
            path,
            f'expected money like "12.50 USD" or {{amount: "12.50", currency: USD}}, '
            f"got {_kind_of(value)}",
            fields.at(key),
        )
        return None

    def timezone(self, fields: _Fields) -> str:
        zone = self.text(fields, "timezone", "UTC")
        if not zone:
            self.error(
                fields.path_of("timezone"),
                "empty timezone: leave it out for UTC",
                fields.at("timezone"),
            )
            return "UTC"
        return zone

    def enum(self, fields: _Fields, key: str, enum: type[_E], default: _E | None) -> _E | None:
        value = fields.get(key)
        allowed = ", ".join(e.value for e in enum)
        if value is None:
            if default is None:
                self.error(fields.path_of(key), f"{key} is required: one of {allowed}", fields.mark)
            return default
        if isinstance(value, str):
            try:
                return enum(value)
            except ValueError:
                pass
        self.error(
            fields.path_of(key),
            f"unknown {key} {value!r}: one of {allowed}",
            fields.at(key),
        )
        return None

    def json_value(self, value: Any, path: str, mark: Mark | None, depth: int = 0) -> Any:
        """A plain copy of a JSON-like value (schedule input), within the value budget."""
        self.input_budget -= 1
        if self.input_budget < 0:
            if self.input_budget == -1:
                self.error(path, f"schedule input holds more than {MAX_INPUT_VALUES} values", mark)
            return None
        if isinstance(value, list | Mapping) and depth + 1 > MAX_INPUT_DEPTH:  # input is level 1
            self.error(path, f"input nests deeper than {MAX_INPUT_DEPTH} levels", mark)
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_JSON_INTEGER:
                self.error(
                    path, f"integer {value} is beyond ±2^53 (input numbers are doubles)", mark
                )
            return value
        if value is None or isinstance(value, bool | float | str):
            return value
        if isinstance(value, list):
            marks: list[Mark] = getattr(value, "marks", [])
            return [
                self.json_value(
                    item, f"{path}[{i}]", marks[i] if i < len(marks) else mark, depth + 1
                )
                for i, item in enumerate(value)
            ]
        if isinstance(value, Mapping):
            fields = self.mapping(value, path, mark, value.keys(), "input")
            if fields is None:
                return None
            return {
                key: self.json_value(item, field_path(path, key), fields.at(key), depth + 1)
                for key, item in value.items()
                if isinstance(key, str)
            }
        self.error(path, f"{_kind_of(value)} is not a JSON value", mark)
        return None

    # -------------------------------------------------------------- the spec

    def spec(self, data: Any) -> ProcessSpec | None:
        fields = self.mapping(data, "", None, _SPEC_KEYS, "a process file")
        if fields is None:
            return None
        name = self.text(fields, "name")
        description = self.text(fields, "description")
        labels = self.text_map(fields, "labels")
        inputs = self.inputs(fields) if fields.has("inputs") else ()
        triggers: list[Trigger] = self.items(fields, "triggers", self.trigger)
        budget = self.budget(fields) if fields.has("budget") else None
        retry = None
        if fields.has("default_retry"):
            retry = self.retry(
                fields.get("default_retry"), "default_retry", fields.at("default_retry")
            )
        steps = self.items(fields, "steps", self.step)
        outputs = self.items(fields, "outputs", self.output)
        return ProcessSpec(
            name=name,
            steps=tuple(steps),
            description=description,
            triggers=tuple(triggers),
            outputs=tuple(outputs),
            budget=budget,
            default_retry=retry,
            labels=labels,
            inputs=inputs,
        )

    def inputs(self, fields: _Fields) -> tuple[InputDeclaration, ...]:
        """``inputs: {name: {type, required, default, description}}``, or ``name: type``."""
        value = fields.get("inputs")
        path, mark = fields.path_of("inputs"), fields.at("inputs")
        if not isinstance(value, Mapping):
            self.error(path, f"inputs must be a mapping of names, got {_kind_of(value)}", mark)
            return ()
        outer = self.mapping(value, path, mark, [k for k in value if isinstance(k, str)], "inputs")
        if outer is None:
            return ()
        declared: list[InputDeclaration] = []
        for name in value:
            if not isinstance(name, str):
                continue
            item_path, item_mark = outer.path_of(name), outer.at(name)
            item = value[name]
            if isinstance(item, str):
                item = {"type": item}
            inner = self.mapping(item, item_path, item_mark, _INPUT_KEYS, "an input")
            if inner is None:
                continue
            kind = self.enum(inner, "type", InputType, None)
            has_default = "default" in inner.data
            default = (
                self.json_value(inner.get("default"), inner.path_of("default"), inner.at("default"))
                if has_default
                else None
            )
            if kind is None:
                continue
            declared.append(
                InputDeclaration(
                    name=name,
                    type=kind,
                    required=self.flag(inner, "required"),
                    has_default=has_default,
                    default=default,
                    description=self.text(inner, "description"),
                )
            )
        return tuple(declared)

    def budget(self, fields: _Fields) -> Budget | None:
        inner = self.mapping(
            fields.get("budget"), "budget", fields.at("budget"), ("limit", "on_exceeded"), "budget"
        )
        if inner is None:
            return None
        on_exceeded = self.enum(inner, "on_exceeded", BudgetAction, BudgetAction.FAIL)
        if not inner.has("limit"):
            self.error("budget.limit", 'the budget needs a limit, like "5.00 USD"', inner.mark)
            return None
        limit = self.money(inner, "limit")
        if limit is None or on_exceeded is None:
            return None
        return Budget(limit, on_exceeded)

    def retry(self, value: Any, path: str, mark: Mark | None) -> RetryPolicy | None:
        fields = self.mapping(value, path, mark, _RETRY_KEYS, "a retry policy")
        if fields is None:
            return None
        initial = self.duration(fields, "initial_backoff")
        longest = self.duration(fields, "max_backoff")
        return RetryPolicy(
            max_attempts=self.count(fields, "max_attempts", 1, minimum=1),
            initial_backoff=_DEFAULT_BACKOFF if initial is None else initial,
            backoff_multiplier=self.number(fields, "backoff_multiplier", _DEFAULT_MULTIPLIER),
            max_backoff=_DEFAULT_MAX_BACKOFF if longest is None else longest,
            non_retryable_codes=self.texts(fields, "non_retryable_codes"),
        )

    def trigger(self, value: Any, path: str, mark: Mark | None) -> Trigger | None:
        if value == "manual":
            return ManualTrigger()
        if isinstance(value, str):
            self.error(
                path,
                f"unknown trigger {value!r}: write manual, schedule: {{cron: ...}} or "
                "event: {subject: ...}",
                mark,
            )
            return None
        fields = self.mapping(value, path, mark, ("manual", "schedule", "event"), "a trigger")
        if fields is None:
            return None
        kinds = [k for k in ("manual", "schedule", "event") if k in fields.data]
        if len(kinds) != 1:
            if kinds or not fields.data:
                self.error(path, "a trigger is one of manual, schedule or event", mark)
            return None
        kind = kinds[0]
        inner_path = fields.path_of(kind)
        inner_value = fields.get(kind)
        if kind == "manual":
            if inner_value not in (None, {}):
                self.error(inner_path, "a manual trigger has no settings", fields.at(kind))
                return None
            return ManualTrigger()
        if kind == "schedule":
            inner = self.mapping(
                inner_value,
                inner_path,
                fields.at(kind),
                ("cron", "timezone", "input"),
                "a schedule",
            )
            if inner is None:
                return None
            cron = self.text(inner, "cron")
            timezone = self.timezone(inner)
            raw_input = inner.get("input")
            data: dict[str, Any] = {}
            if raw_input is not None:
                if isinstance(raw_input, Mapping):
                    copied = self.json_value(raw_input, inner.path_of("input"), inner.at("input"))
                    data = copied if isinstance(copied, dict) else {}
                else:
                    self.error(
                        inner.path_of("input"),
                        f"the input is a mapping, got {_kind_of(raw_input)}",
                        inner.at("input"),
                    )
            return ScheduleTrigger(cron=cron, timezone=timezone, input=data)
        inner = self.mapping(inner_value, inner_path, fields.at(kind), ("subject",), "an event")
        if inner is None:
            return None
        return EventTrigger(subject=self.text(inner, "subject"))

    def output(self, value: Any, path: str, mark: Mark | None) -> Output | None:
        fields = self.mapping(
            value, path, mark, ("channel", "target", "message", "subject"), "an output"
        )
        if fields is None:
            return None
        channel = self.enum(fields, "channel", Channel, None)
        target = self.text(fields, "target")
        message = self.text(fields, "message")
        subject = self.text(fields, "subject")
        if channel is None:
            return None
        return Output(channel=channel, target=target, message=message, subject=subject)

    # ---------------------------------------------------------------- steps

    def step(self, value: Any, path: str, mark: Mark | None) -> Step | None:
        kinds = [k for k in _KIND_KEYS if isinstance(value, Mapping) and k in value]
        allowed = (*_STEP_KEYS, *_KIND_KEYS)

        def unknown(key: str) -> str:
            if key == "type":
                return (
                    "unknown key 'type': the kind of a step is a key holding its settings, "
                    "like 'agent_task: {agent: ..., message: ...}'"
                )
            if kinds:
                return _unknown_key(key, allowed)
            return _unknown_key(key, _KIND_KEYS, what="step kind") + (
                f"; a step has exactly one of {', '.join(_KIND_KEYS)}"
            )

        fields = self.mapping(value, path, mark, allowed, "a step", unknown)
        if fields is None:
            return None
        if not kinds:
            strays = [k for k in fields.data if k not in allowed]
            if not strays:
                self.error(
                    path,
                    f"the step has no kind: give exactly one of {', '.join(_KIND_KEYS)}",
                    mark,
                )
        elif len(kinds) > 1:
            self.error(path, f"a step has exactly one kind, found {' and '.join(kinds)}", mark)
        step_id = self.text(fields, "id")
        name = self.text(fields, "name")
        depends_on = self.texts(fields, "depends_on")
        condition = self.text(fields, "condition")
        timeout = self.duration(fields, "timeout")
        retry = None
        if fields.has("retry"):
            retry = self.retry(fields.get("retry"), fields.path_of("retry"), fields.at("retry"))
        on_failure = self.enum(fields, "on_failure", FailureAction, FailureAction.FAIL)
        informed = self.texts(fields, "informed")
        compensate = None
        if fields.has("compensate"):
            compensate = self.compensation(
                fields.get("compensate"), fields.path_of("compensate"), fields.at("compensate")
            )
        config = self.config(fields, kinds[0]) if len(kinds) == 1 else None
        if config is None or on_failure is None:
            return None
        if fields.has("compensate") and compensate is None:
            return None
        return Step(
            id=step_id,
            config=config,
            name=name,
            depends_on=depends_on,
            condition=condition,
            retry=retry,
            timeout=timeout,
            on_failure=on_failure,
            informed=informed,
            compensate=compensate,
        )

    def compensation(self, value: Any, path: str, mark: Mark | None) -> Compensation | None:
        """``compensate:``: exactly one of agent_task, tool_run, notification, and retry."""
        allowed = (*_COMPENSATION_KINDS, "retry", "timeout")
        fields = self.mapping(value, path, mark, allowed, "a compensation")
        if fields is None:
            return None
        kinds = [k for k in _COMPENSATION_KINDS if fields.has(k)]
        if len(kinds) != 1:
            found = f", found {' and '.join(kinds)}" if kinds else ""
            self.error(
                path,
                f"a compensation has exactly one of {', '.join(_COMPENSATION_KINDS)}{found}",
                mark,
            )
            return None
        retry = None
        if fields.has("retry"):
            retry = self.retry(fields.get("retry"), fields.path_of("retry"), fields.at("retry"))
        timeout = self.duration(fields, "timeout")
        config = self.config(fields, kinds[0])
        if config is None:
            return None
        assert isinstance(config, AgentTaskConfig | ToolRunConfig | NotificationConfig)
        return Compensation(config, retry, timeout)

    def config(self, step: _Fields, kind: str) -> StepConfig | None:
        path = step.path_of(kind)
        mark = step.at(kind)
        fields = self.mapping(step.get(kind), path, mark, _KIND_FIELDS[kind], kind, _in(kind))
        if fields is None:
            return None
        if kind == "agent_task":
            max_cost = self.money(fields, "max_cost") if fields.has("max_cost") else None
            return AgentTaskConfig(
                agent=self.text(fields, "agent"),
                message=self.text(fields, "message"),
                max_cost=max_cost,
                **self.for_each(fields),
            )
        if kind == "human_approval":
            on_timeout = self.enum(fields, "on_timeout", TimeoutAction, TimeoutAction.REJECT)
            on_reject = self.enum(fields, "on_reject", RejectAction, RejectAction.FAIL)
            approval = HumanApprovalConfig(
                approvers=self.texts(fields, "approvers"),
                on_timeout=on_timeout or TimeoutAction.REJECT,
                artifacts=self.texts(fields, "artifacts"),
                title=self.text(fields, "title"),
                reminder_interval=self.duration(fields, "reminder_interval"),
                max_reminders=self.count(fields, "max_reminders"),
                on_reject=on_reject or RejectAction.FAIL,
            )
            return approval if on_timeout is not None and on_reject is not None else None
        if kind == "gateway":
            gateway_type = self.enum(fields, "type", GatewayType, GatewayType.EXCLUSIVE)
            routes = self.items(fields, "routes", self.route)
            return GatewayConfig(gateway_type, tuple(routes)) if gateway_type else None
        if kind == "timer":
            timer = TimerConfig(
                duration=self.duration(fields, "duration"),
                until=self.text(fields, "until"),
                timezone=self.timezone(fields),
            )
            if fields.has("duration") and fields.has("until"):
                self.error(path, "a timer waits for a duration or until a time, not both", mark)
                return None
            return timer
        if kind == "notification":
            channel = self.enum(fields, "channel", Channel, None)
            target = self.text(fields, "target")
            message = self.text(fields, "message")
            subject = self.text(fields, "subject")
            if channel is None:
                return None
            return NotificationConfig(channel, target, message, subject)
        if kind == "wait_for_message":
            on_message_timeout = self.enum(
                fields, "on_timeout", MessageTimeoutAction, MessageTimeoutAction.FAIL
            )
            if on_message_timeout is None:
                return None
            return WaitForMessageConfig(
                message=self.text(fields, "message"),
                correlation_key=self.text(fields, "correlation_key"),
                subject=self.text(fields, "subject"),
                key_field=self.text(fields, "key_field", DEFAULT_KEY_FIELD),
                on_timeout=on_message_timeout,
            )
        if kind == "sub_process":
            return SubProcessConfig(
                process=self.text(fields, "process"),
                version=self.text(fields, "version"),
                input=self.text_map(fields, "input"),
                **self.for_each(fields),
            )
        action = self.enum(fields, "action", ActionKind, None)
        arguments = self.text_map(fields, "arguments")
        if action is None:
            return None
        return ToolRunConfig(action, arguments, **self.for_each(fields))

    def for_each(self, fields: _Fields) -> dict[str, Any]:
        """The for_each keys an agent task, tool run or sub-process may have."""
        return {
            "for_each": self.text(fields, "for_each"),
            "max_concurrency": self.count(fields, "max_concurrency"),
            "max_items": self.count(fields, "max_items"),
            "tolerated_failures": self.count(fields, "tolerated_failures"),
        }

    def route(self, value: Any, path: str, mark: Mark | None) -> Route | None:
        keys = ("condition", "is_default", "target", "max_iterations")
        fields = self.mapping(value, path, mark, keys, "a route")
        if fields is None:
            return None
        return Route(
            target=self.text(fields, "target"),
            condition=self.text(fields, "condition"),
            is_default=self.flag(fields, "is_default"),
            max_iterations=self.count(fields, "max_iterations"),
        )


def _in(kind: str) -> Callable[[str], str]:
    """Unknown-key messages inside a step kind, pointing at step-level keys."""

    def describe(key: str) -> str:
        if key in _STEP_KEYS:
            return f"unknown key {key!r} in {kind}: {key} belongs to the step itself"
        return _unknown_key(key, _KIND_FIELDS[kind])

    return describe


def _unknown_key(key: str, allowed: Collection[str], what: str = "key") -> str:
    hint = _HINTS.get(key)
    if hint is None or hint not in allowed:
        close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
        hint = close[0] if close else None
    if hint:
        return f"unknown {what} {key!r} (did you mean {hint!r}?)"
    return f"unknown {what} {key!r}; expected one of: {', '.join(allowed)}"


# ---------------------------------------------------------------------- writing


def spec_to_data(spec: ProcessSpec) -> dict[str, Any]:
    """The data tree of the process file of `spec` (plain dicts, lists and scalars)."""
    data: dict[str, Any] = {"name": spec.name}
    if spec.description:
        data["description"] = spec.description
    if spec.labels:
        data["labels"] = _sorted(spec.labels)
    if spec.inputs:
        data["inputs"] = {d.name: _input_data(d) for d in spec.inputs}
    if spec.triggers:
        data["triggers"] = [_trigger_data(t) for t in spec.triggers]
    if spec.budget is not None:
        budget: dict[str, Any] = {"limit": format_money(spec.budget.limit)}
        if spec.budget.on_exceeded != BudgetAction.FAIL:
            budget["on_exceeded"] = str(spec.budget.on_exceeded)
        data["budget"] = budget
    if spec.default_retry is not None:
        data["default_retry"] = _retry_data(spec.default_retry)
    data["steps"] = [_step_data(step) for step in spec.steps]
    if spec.outputs:
        data["outputs"] = [_delivery_data(output) for output in spec.outputs]
    return data


def _input_data(declaration: InputDeclaration) -> dict[str, Any]:
    data: dict[str, Any] = {"type": str(declaration.type)}
    if declaration.required:
        data["required"] = True
    if declaration.has_default:
        data["default"] = _plain(declaration.default)
    if declaration.description:
        data["description"] = declaration.description
    return data


def _trigger_data(trigger: Trigger) -> Any:
    if isinstance(trigger, ScheduleTrigger):
        schedule: dict[str, Any] = {"cron": trigger.cron}
        if trigger.timezone != "UTC":
            schedule["timezone"] = trigger.timezone
        if trigger.input:
            schedule["input"] = _plain(trigger.input)
        return {"schedule": schedule}
    if isinstance(trigger, EventTrigger):
        return {"event": {"subject": trigger.subject}}
    return "manual"


def _sorted(values: Mapping[str, str]) -> dict[str, str]:
    """Maps are written in key order: the contract's maps have no order to keep."""
    return {key: values[key] for key in sorted(values)}


def _plain(value: Any) -> Any:
    """Schedule input as written: maps in key order, integral numbers as integers (the
    contract carries every number as a double, so 3 and 3.0 are one value there)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_JSON_INTEGER:
        return int(value)
    return value


def _retry_data(retry: RetryPolicy) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if retry.max_attempts != 1:
        data["max_attempts"] = retry.max_attempts
    if retry.initial_backoff != _DEFAULT_BACKOFF:
        data["initial_backoff"] = format_duration(retry.initial_backoff)
    if retry.backoff_multiplier != _DEFAULT_MULTIPLIER:
        data["backoff_multiplier"] = retry.backoff_multiplier
    if retry.max_backoff != _DEFAULT_MAX_BACKOFF:
        data["max_backoff"] = format_duration(retry.max_backoff)
    if retry.non_retryable_codes:
        data["non_retryable_codes"] = _FlowList(retry.non_retryable_codes)
    return data


def _step_data(step: Step) -> dict[str, Any]:
    data: dict[str, Any] = {"id": step.id}
    if step.name:
        data["name"] = step.name
    if step.depends_on:
        data["depends_on"] = _FlowList(step.depends_on)
    if step.condition:
        data["condition"] = step.condition
    data[str(step.kind)] = _config_data(step.config)
    if step.timeout is not None:
        data["timeout"] = format_duration(step.timeout)
    if step.retry is not None:
        data["retry"] = _retry_data(step.retry)
    if step.on_failure != FailureAction.FAIL:
        data["on_failure"] = str(step.on_failure)
    if step.informed:
        data["informed"] = _FlowList(step.informed)
    if step.compensate is not None:
        compensation: dict[str, Any] = {
            str(step.compensate.kind): _config_data(step.compensate.config)
        }
        if step.compensate.retry is not None:
            compensation["retry"] = _retry_data(step.compensate.retry)
        if step.compensate.timeout is not None:
            compensation["timeout"] = format_duration(step.compensate.timeout)
        data["compensate"] = compensation
    return data


def _config_data(config: StepConfig) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if isinstance(config, AgentTaskConfig):
        _put(data, "agent", config.agent)
        _put(data, "message", config.message)
        if config.max_cost is not None:
            data["max_cost"] = format_money(config.max_cost)
        _for_each_data(data, config)
    elif isinstance(config, HumanApprovalConfig):
        if config.approvers:
            data["approvers"] = _FlowList(config.approvers)
        if config.on_timeout != TimeoutAction.REJECT:
            data["on_timeout"] = str(config.on_timeout)
        if config.artifacts:
            data["artifacts"] = list(config.artifacts)
        _put(data, "title", config.title)
        if config.reminder_interval is not None:
            data["reminder_interval"] = format_duration(config.reminder_interval)
        if config.max_reminders:
            data["max_reminders"] = config.max_reminders
        if config.on_reject != RejectAction.FAIL:
            data["on_reject"] = str(config.on_reject)
    elif isinstance(config, GatewayConfig):
        data["type"] = str(config.type)
        data["routes"] = [_route_data(route) for route in config.routes]
    elif isinstance(config, TimerConfig):
        if config.duration is not None:
            data["duration"] = format_duration(config.duration)
        _put(data, "until", config.until)
        if config.timezone != "UTC":
            data["timezone"] = config.timezone
    elif isinstance(config, NotificationConfig):
        data = _delivery_data(config)
    elif isinstance(config, WaitForMessageConfig):
        _put(data, "message", config.message)
        _put(data, "correlation_key", config.correlation_key)
        _put(data, "subject", config.subject)
        if config.key_field != DEFAULT_KEY_FIELD:
            data["key_field"] = config.key_field
        if config.on_timeout != MessageTimeoutAction.FAIL:
            data["on_timeout"] = str(config.on_timeout)
    elif isinstance(config, SubProcessConfig):
        _put(data, "process", config.process)
        _put(data, "version", config.version)
        if config.input:
            data["input"] = _sorted(config.input)
        _for_each_data(data, config)
    else:
        data["action"] = str(config.action)
        if config.arguments:
            data["arguments"] = _sorted(config.arguments)
        _for_each_data(data, config)
    return data


def _for_each_data(
    data: dict[str, Any], config: AgentTaskConfig | ToolRunConfig | SubProcessConfig
) -> None:
    _put(data, "for_each", config.for_each)
    for name in _FOR_EACH_FIELDS[1:]:
        if getattr(config, name):
            data[name] = getattr(config, name)


def _route_data(route: Route) -> dict[str, Any]:
    data: dict[str, Any] = {}
    _put(data, "condition", route.condition)
    if route.is_default:
        data["is_default"] = True
    _put(data, "target", route.target)
    if route.max_iterations:
        data["max_iterations"] = route.max_iterations
    return data


def _delivery_data(delivery: NotificationConfig | Output) -> dict[str, Any]:
    data: dict[str, Any] = {"channel": str(delivery.channel)}
    _put(data, "target", delivery.target)
    _put(data, "subject", delivery.subject)
    _put(data, "message", delivery.message)
    return data


def _put(data: dict[str, Any], key: str, value: str) -> None:
    if value:
        data[key] = value
