"""Who may call what (invariant 10, deny by default).

Bearer tokens map to identities (a principal and its roles); roles grant permissions;
every RPC declares the one permission it needs in its proto options
(``trinity.process.common.v1.required_permission``), read here from the descriptors at
server start. The AuthInterceptor (interceptors.py) enforces it and records the caller
of the current RPC, which :func:`acting_principal` and :func:`bound_executor` use so that
"who did this" fields and executor ids come from the caller, never from the body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from google.protobuf import descriptor_pool

from trinity.process.common.v1 import options_pb2
from trinity_platform.errors import PermissionDenied

# Permission → what it allows. Each RPC names one of these in its proto options.
PERMISSIONS: dict[str, str] = {
    "definitions.read": "get and list definitions",
    "definitions.write": "create, update, validate, publish and archive definitions",
    "executions.read": "get, list and watch executions",
    "executions.trigger": "trigger executions",
    "executions.control": "cancel, pause, resume and retry executions",
    "executions.signal": "send messages to steps that wait for them (SignalExecution)",
    "executions.migrate": "move running executions to another version (MigrateExecution)",
    "approvals.read": "get and list approvals",
    "approvals.decide": "submit decisions (the approval's approver list still decides who)",
    "approvals.manage": "request and cancel approvals (service identities)",
    "work.read": "get and list work",
    "work.manage": "request and cancel work (service identities)",
    "work.report": "report work started, heartbeat, completed, failed (executors)",
}

_READ = frozenset({"definitions.read", "executions.read", "approvals.read", "work.read"})

# Role → the permissions it grants. A principal may hold several roles.
ROLES: dict[str, frozenset[str]] = {
    "admin": _READ
    | {
        "definitions.write",
        "executions.trigger",
        "executions.control",
        "executions.signal",
        "executions.migrate",
        "approvals.decide",
    },
    "author": frozenset({"definitions.read", "definitions.write"}),
    "operator": frozenset({"executions.trigger", "executions.control", "executions.signal"}),
    "viewer": _READ,
    "approver": frozenset({"approvals.read", "approvals.decide"}),
    "executor": frozenset({"work.report"}),
    "service": frozenset({"definitions.read", "approvals.manage", "work.manage"}),
}

# A token configured without roles (``token=principal``, the format before roles existed).
DEFAULT_ROLES = frozenset({"viewer", "approver"})

# Principals the services act as themselves (timeouts, schedules, event triggers): no
# token may carry one and no request body may claim one.
SYSTEM_PREFIX = "system:"

_TOKENS_FORMAT = "'token=principal:role+role,token2=principal2' (roles: " + ", ".join(ROLES) + ")"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    principal: str
    roles: frozenset[str] = DEFAULT_ROLES

    @property
    def permissions(self) -> frozenset[str]:
        granted: frozenset[str] = frozenset()
        for role in self.roles:
            granted |= ROLES[role]
        return granted

    def may(self, permission: str) -> bool:
        return permission in self.permissions


def parse_identity(text: str) -> Identity:
    """``alice@example.com:operator+viewer`` → Identity. Only a suffix made of known role
    names is read as roles, so ``service:execution`` stays a principal (default roles)."""
    text = text.strip()
    principal, sep, suffix = text.rpartition(":")
    roles = [r.strip() for r in suffix.split("+")] if sep else []
    if sep and principal.strip() and roles and all(r in ROLES for r in roles):
        identity = Identity(principal.strip(), frozenset(roles))
    else:
        identity = Identity(text)
    if identity.principal.casefold().startswith(SYSTEM_PREFIX):
        raise ValueError(f"system principals cannot hold a token: {identity.principal!r}")
    return identity


def parse_auth_tokens(raw: str) -> dict[str, Identity]:
    """``TRINITY_AUTH_TOKENS`` → ``{token: identity}``; empty: authentication is off."""
    tokens: dict[str, Identity] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        token, sep, identity = item.partition("=")
        if not sep or not token.strip() or not identity.strip():
            raise ValueError(f"TRINITY_AUTH_TOKENS must look like {_TOKENS_FORMAT}")
        try:
            tokens[token.strip()] = parse_identity(identity)
        except ValueError as error:
            raise ValueError(f"TRINITY_AUTH_TOKENS: {error}") from None
    return tokens


def format_auth_tokens(tokens: Mapping[str, Identity]) -> str:
    """The inverse of :func:`parse_auth_tokens` (suites write it into the environment)."""
    return ",".join(
        f"{token}={identity.principal}:{'+'.join(sorted(identity.roles))}"
        for token, identity in tokens.items()
    )


def required_permissions(service_names: Iterable[str]) -> dict[str, str]:
    """``{"/pkg.Service/Method": permission}`` from the proto options of each service.

    Raises ValueError when a method declares no permission or an unknown one, so a
    service cannot start with an RPC nobody thought about.
    """
    pool = descriptor_pool.Default()
    found: dict[str, str] = {}
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            raise ValueError(f"{name} has no proto descriptors to read permissions from") from None
        for method in service.methods:
            permission = method.GetOptions().Extensions[options_pb2.required_permission]
            if permission not in PERMISSIONS:
                raise ValueError(
                    f"{method.full_name} declares no known required_permission "
                    f"(got {permission!r}); every RPC must declare one"
                )
            found[f"/{service.full_name}/{method.name}"] = permission
    return found


def authorization_markdown(service_names: Iterable[str]) -> str:
    """The permission table of the README: permission, the RPCs declaring it, the roles
    holding it (generated from the descriptors and :data:`ROLES`, and tested against it)."""
    by_permission: dict[str, list[str]] = {permission: [] for permission in PERMISSIONS}
    for path, permission in required_permissions(service_names).items():
        by_permission[permission].append(path.rsplit("/", 1)[1])
    lines = ["| permission | RPCs | roles |", "|---|---|---|"]
    for permission, methods in by_permission.items():
        roles = ", ".join(role for role, granted in ROLES.items() if permission in granted)
        lines.append(f"| `{permission}` | {', '.join(methods)} | {roles} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the current caller

_identity: ContextVar[Identity | None] = ContextVar("trinity_identity", default=None)


def current_identity() -> Identity | None:
    """The authenticated caller of the current RPC; None when authentication is off."""
    return _identity.get()


def set_current_identity(identity: Identity | None) -> None:
    _identity.set(identity)


def acting_principal(claimed: str, field: str) -> str:
    """The principal a "who did this" field records: the authenticated caller.

    With authentication off, what the body says. A body naming someone other than the
    caller, or claiming a system principal, is PERMISSION_DENIED.
    """
    claimed = claimed.strip()
    if claimed.casefold().startswith(SYSTEM_PREFIX):
        raise PermissionDenied(
            f"{field}: system principals cannot be claimed by a caller",
            reason="SYSTEM_PRINCIPAL_RESERVED",
            metadata={"field": field, "claimed": claimed},
        )
    identity = current_identity()
    if identity is None:
        return claimed
    if claimed and claimed.casefold() != identity.principal.casefold():
        raise PermissionDenied(
            f"{field} names {claimed!r} but the caller is {identity.principal!r}",
            reason="PRINCIPAL_MISMATCH",
            metadata={"field": field, "claimed": claimed, "principal": identity.principal},
        )
    return identity.principal


def bound_executor(executor_id: str) -> str:
    """The executor id of a work report: with authentication on it must be the caller's
    own principal, or ``<principal>/<instance>`` (replicas sharing one token), so an
    executor cannot report as another; off, what the body says."""
    identity = current_identity()
    if identity is None or executor_id == identity.principal:
        return executor_id
    if (
        executor_id.startswith(f"{identity.principal}/")
        and len(executor_id) > len(identity.principal) + 1
    ):
        return executor_id
    raise PermissionDenied(
        f"executor_id {executor_id!r} is not the caller {identity.principal!r}",
        reason="EXECUTOR_MISMATCH",
        metadata={"executor_id": executor_id, "principal": identity.principal},
    )


__all__ = [
    "DEFAULT_ROLES",
    "PERMISSIONS",
    "ROLES",
    "SYSTEM_PREFIX",
    "Identity",
    "acting_principal",
    "authorization_markdown",
    "bound_executor",
    "current_identity",
    "format_auth_tokens",
    "parse_auth_tokens",
    "parse_identity",
    "required_permissions",
    "set_current_identity",
]
