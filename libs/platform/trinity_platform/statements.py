"""Prepared statements: SQLAlchemy Core statements built once, run with their values.

A statement built per call with its values (``insert(t).values(row)``,
``select(t).where(t.c.id == work_id)``) pays on every call for its construction (each
value coerced into a bound parameter with a new anonymous name) and for its cache key
(a walk over the whole tree) before its compiled form is found in the engine's cache:
on the hot path that costs more than SQLite takes to run it. A statement built once, at
import, with :func:`~sqlalchemy.bindparam` placeholders keeps its cache key (memoized
on the object), so a call looks up the compiled form and binds the values::

    _BY_ID = select(t).where(t.c.id == bindparam("work_id"))
    row = (await conn.execute(_BY_ID, {"work_id": work_id})).first()

An INSERT or UPDATE takes the columns it sets from the parameters' keys (no
``.values()``); a placeholder of its WHERE clause must not be named like a column::

    _INSERT = insert(t)                                    # conn.execute(_INSERT, row)
    _UPDATE = update(t).where(t.c.id == bindparam("where_id"))
    await conn.execute(_UPDATE, {"where_id": work_id, "status": "completed"})

A statement that differs by dialect (``ON CONFLICT``, ``FOR UPDATE``) is a
:class:`PerDialect`, built on its first use on each dialect and reused after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from sqlalchemy.engine import Dialect

E = TypeVar("E")


class _HasDialect(Protocol):
    @property
    def dialect(self) -> Dialect: ...


class PerDialect(Generic[E]):
    """``build(dialect_name)`` once per dialect; ``statement(conn)`` is the connection's."""

    __slots__ = ("_build", "_built")

    def __init__(self, build: Callable[[str], E]) -> None:
        self._build = build
        self._built: dict[str, E] = {}

    def __call__(self, conn: _HasDialect) -> E:
        name = conn.dialect.name
        statement = self._built.get(name)
        if statement is None:
            statement = self._built[name] = self._build(name)
        return statement


__all__ = ["PerDialect"]
