"""The errors of conditions and templates (shared by the sandbox and the compiler)."""

from __future__ import annotations


class ExpressionError(Exception):
    """A condition or template could not be compiled or evaluated."""


class ExpressionSyntaxError(ExpressionError):
    """The text is not a valid expression or template."""


class UndefinedValueError(ExpressionError):
    """The expression used a name or attribute that the context does not have."""


class UnsafeExpressionError(ExpressionError):
    """The expression tried to reach something the sandbox forbids."""


class ExpressionLimitExceeded(ExpressionError):
    """A render or evaluation went past one of its limits; ``limit`` names which
    (operations, integer_size, length or deadline)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
