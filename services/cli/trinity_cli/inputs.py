"""Execution input from ``--input-file`` and ``--input key=value`` / ``key:=json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from trinity_cli.errors import UsageError


def read_text(path: str) -> str:
    """The text of a file, or a one-line usage error saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror or error})") from None


def load_mapping(path: str) -> dict[str, Any]:
    """A YAML or JSON file whose top level is a mapping."""
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UsageError(f"{path}: not valid YAML or JSON{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the input must be a mapping of names to values")
    return {str(key): value for key, value in data.items()}


def parse_inputs(pairs: Sequence[str], input_file: str | None) -> dict[str, Any]:
    """The file's mapping first, then each ``key=text`` or ``key:=json`` over it."""
    data = load_mapping(input_file) if input_file else {}
    for pair in pairs:
        key, json_value, value = _split(pair)
        if json_value:
            try:
                data[key] = json.loads(value)
            except json.JSONDecodeError as error:
                raise UsageError(
                    f"--input {pair}: not valid JSON after ':=' ({error.msg})"
                ) from None
        else:
            data[key] = value
    return data


def _split(pair: str) -> tuple[str, bool, str]:
    equals = pair.find("=")
    if equals <= 0:
        raise UsageError(f"--input {pair}: expected key=value or key:=json")
    if pair[equals - 1] == ":":
        key = pair[: equals - 1]
        if not key:
            raise UsageError(f"--input {pair}: expected key=value or key:=json")
        return key, True, pair[equals + 1 :]
    return pair[:equals], False, pair[equals + 1 :]
