"""Exit codes and the one-line errors of the CLI.

Every failure becomes a :class:`CliError` carrying its exit code and one line of
text; ``main`` prints that line and returns the code. No traceback reaches a user.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import grpc

from trinity_platform.errors import FieldViolation
from trinity_platform.grpc_errors import error_details, rpc_status_of


class ExitCode(IntEnum):
    """What a script can rely on (also in README.md)."""

    OK = 0
    REFUSED = 1  # a service refused the call, or a definition is invalid
    USAGE = 2  # bad arguments, or a local file that cannot be read or parsed
    UNREACHABLE = 3  # a service or NATS did not answer
    EXECUTION_FAILED = 4  # --wait / --watch: the execution failed
    EXECUTION_CANCELLED = 5  # --wait / --watch: the execution was cancelled
    TIMED_OUT = 6  # --wait / --watch: still running when --timeout passed
    INTERNAL = 70  # a bug in the CLI itself (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure to report as one line, with the exit code it deserves."""

    def __init__(
        self,
        message: str,
        code: ExitCode = ExitCode.REFUSED,
        *,
        status: str = "",
        reason: str = "",
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.reason = reason
        self.violations = violations or []

    def as_dict(self) -> dict[str, Any]:
        """Always the same keys (``""`` and ``[]`` where there is nothing to say)."""
        error: dict[str, Any] = {
            "message": self.message,
            "exit_code": int(self.code),
            "status": self.status,
            "reason": self.reason,
            "violations": [
                {"field": v.field, "description": v.description} for v in self.violations
            ],
        }
        return {"error": error}


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.USAGE)


_UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def from_rpc_error(error: grpc.RpcError, service: str, target: str, action: str) -> CliError:
    """One line for a failed call: who refused what, with status, reason and violations."""
    code: grpc.StatusCode = error.code()
    details: str = (error.details() or "").strip()
    answered = rpc_status_of(error) is not None
    reason, violations = error_details(error)
    if code in _UNREACHABLE_CODES and not answered:
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            why = "did not answer in time"
        else:
            why = f"is unreachable ({_connect_failure(details)})"
        env = f"TRINITY_{service.upper()}_TARGET"
        return CliError(
            f"the {service} service at {target} {why}; is the suite running "
            f"(`make run`)? Set {env} or --{service}-target to point elsewhere",
            ExitCode.UNREACHABLE,
            status=code.name,
        )
    if code == grpc.StatusCode.UNIMPLEMENTED and not answered:
        return CliError(
            f"the {service} service at {target} does not implement {action} (yet)",
            ExitCode.REFUSED,
            status=code.name,
        )
    parts = [f"{action} refused by the {service} service: {code.name}"]
    if reason and reason != code.name:
        parts[0] += f" {reason}"
    if details:
        parts.append(details)
    line = ": ".join(parts)
    if violations:
        line += " [" + "; ".join(f"{v.field}: {v.description}" for v in violations) + "]"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        line += " (pass --token or set TRINITY_TOKEN)"
    if reason == "DEFINITION_NOT_FOUND":
        line += " (the published processes: trinity-process definitions list)"
    exit_code = ExitCode.UNREACHABLE if code in _UNREACHABLE_CODES else ExitCode.REFUSED
    return CliError(
        line, exit_code, status=code.name, reason=reason or "", violations=list(violations)
    )


def _connect_failure(details: str) -> str:
    lowered = details.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "dns" in lowered or "resolve" in lowered:
        return "cannot resolve the address"
    return details.splitlines()[0] if details else "no answer"
