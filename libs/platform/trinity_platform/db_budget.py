"""The connection budget: what one process may open against what PostgreSQL allows.

Each process holds up to ``pool_size + max_overflow`` connections
(``TRINITY_<SERVICE>_DB_POOL_SIZE`` / ``_DB_MAX_OVERFLOW``). At start the runtime
compares that with the server's ``max_connections`` (minus the connections reserved
for superusers), the role's and the database's ``CONNECTION LIMIT``, and what other
clients hold already, and logs a warning for each limit it cannot fit. The budget
rule (replicas * (pool + overflow) <= the server's limit, with room for migrations
and operators) is in deploy/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.db import is_postgres
from trinity_platform.logs import get_logger

_log = get_logger(__name__)


@dataclass(frozen=True)
class ConnectionBudget:
    """What this process may open against what the PostgreSQL server allows."""

    wanted: int  # pool + overflow of this process
    server_limit: int  # max_connections, minus superuser_reserved_connections for others
    in_use: int  # client connections open on the server now (this check's included)
    role: str
    role_limit: int | None  # CONNECTION LIMIT of the role (None: unlimited)
    role_in_use: int
    warnings: tuple[str, ...]


_BUDGET_QUERY = text(
    """
    SELECT current_setting('max_connections')::int AS max_connections,
           current_setting('superuser_reserved_connections')::int AS reserved,
           current_user AS role,
           r.rolsuper AS superuser,
           r.rolconnlimit AS role_limit,
           d.datconnlimit AS database_limit,
           (SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'client backend') AS in_use,
           (SELECT count(*) FROM pg_stat_activity
             WHERE usename = current_user AND backend_type = 'client backend') AS role_in_use
      FROM pg_roles r, pg_database d
     WHERE r.rolname = current_user AND d.datname = current_database()
    """
)


async def check_connection_budget(engine: AsyncEngine, wanted: int) -> ConnectionBudget | None:
    """Compare ``wanted`` connections with the server's, the role's and the database's
    limits and with what other clients hold already; None on SQLite.

    A budget that does not fit makes a burst of reconnects (after a restart, under
    load) meet "too many clients already": the requests are then answered UNAVAILABLE
    and retried, but the replicas slow each other down. See deploy/README.md.
    """
    if not is_postgres(engine):
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(_BUDGET_QUERY)).one()
        await conn.rollback()
    server_limit = row.max_connections - (0 if row.superuser else row.reserved)
    role_limit = None if row.role_limit < 0 else int(row.role_limit)
    others = max(int(row.in_use) - 1, 0)  # this check's own connection is in the pool
    warnings = []
    if wanted > server_limit:
        warnings.append(
            f"this process may open {wanted} connections (pool + overflow) but the server "
            f"allows {server_limit} (max_connections {row.max_connections}"
            + ("" if row.superuser else f" minus {row.reserved} reserved for superusers")
            + ")"
        )
    elif others + wanted > server_limit:
        warnings.append(
            f"{others} connections are open already (other replicas, services, operators); "
            f"with this process's {wanted} the server's {server_limit} may be exceeded"
        )
    if role_limit is not None and max(int(row.role_in_use) - 1, 0) + wanted > role_limit:
        warnings.append(
            f"role {row.role} is limited to {role_limit} connections (CONNECTION LIMIT) and "
            f"holds {int(row.role_in_use)}; this process may open {wanted}"
        )
    if row.database_limit >= 0 and wanted > row.database_limit:
        warnings.append(
            f"the database is limited to {row.database_limit} connections; "
            f"this process may open {wanted}"
        )
    return ConnectionBudget(
        wanted=wanted,
        server_limit=server_limit,
        in_use=int(row.in_use),
        role=str(row.role),
        role_limit=role_limit,
        role_in_use=int(row.role_in_use),
        warnings=tuple(warnings),
    )


async def log_connection_budget(engine: AsyncEngine, wanted: int, service: str) -> None:
    """Log the budget; a warning per limit the configured pool cannot fit."""
    budget = await check_connection_budget(engine, wanted)
    if budget is None:
        return
    _log.info(
        "database connection budget",
        service=service,
        pool_and_overflow=budget.wanted,
        server_limit=budget.server_limit,
        in_use=budget.in_use,
        role=budget.role,
        role_limit=budget.role_limit,
    )
    for warning in budget.warnings:
        _log.warning(
            "database connection budget exceeded: " + warning,
            service=service,
            hint="lower TRINITY_<SERVICE>_DB_POOL_SIZE / _DB_MAX_OVERFLOW, raise the server's "
            "max_connections, or put PgBouncer in front (deploy/README.md)",
        )
