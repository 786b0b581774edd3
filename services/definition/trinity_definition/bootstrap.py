"""Composition root: wires the definition service (no I/O until ``start()``)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from trinity.process.definition.v1.definition_service_pb2_grpc import (
    add_DefinitionServiceServicer_to_server,
)
from trinity_definition.api.servicer import SERVICE_NAME, DefinitionServicer
from trinity_definition.application.language import parse_text, validate_spec
from trinity_definition.application.ports import Environment
from trinity_definition.infrastructure.transaction import SqlDefinitionTransaction
from trinity_platform.config import ServiceSettings, load_settings
from trinity_platform.runtime import RuntimeOptions, ServiceRuntime
from trinity_platform.sql_unit_of_work import SqlUnitOfWork
from trinity_process_model.expressions import ExpressionLimits, configure_limits

SERVICE = "definition"
MIGRATIONS = Path(__file__).parent / "migrations"


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def environment() -> Environment:
    return Environment(clock=utc_now, new_id=new_id, validate=validate_spec, parse=parse_text)


def bootstrap(
    settings: ServiceSettings | None = None, *, options: RuntimeOptions | None = None
) -> ServiceRuntime:
    """The service's runtime with the DefinitionService registered; call ``start()``."""
    settings = settings or load_settings(SERVICE)
    # Validation refuses what is visibly over the deployment's expression limits.
    configure_limits(ExpressionLimits.from_env(os.environ))
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, options=options)
    uow = SqlUnitOfWork(
        runtime.engine, SqlDefinitionTransaction, signal=runtime.outbox_signal, name=SERVICE
    )
    servicer = DefinitionServicer(uow, environment())
    runtime.add_grpc_service(SERVICE_NAME, add_DefinitionServiceServicer_to_server, servicer)
    return runtime
