"""Composition root of the execution service: wires the engine to the database,
JetStream, the other services and the gRPC API. No I/O until the runtime starts."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from trinity.process.execution.v1 import execution_service_pb2, execution_service_pb2_grpc
from trinity_execution import domain as d
from trinity_execution.api.answers import ProtoPresenter
from trinity_execution.api.servicer import ExecutionServicer
from trinity_execution.application.commands import DEFAULT_MAX_DEPTH, ExecutionCommands
from trinity_execution.application.continuation import Continuation
from trinity_execution.application.messages import MessageDelivery, MessageSettings
from trinity_execution.application.migrations import ExecutionMigrations
from trinity_execution.application.ports import ExecutionTransaction
from trinity_execution.application.queries import ExecutionQueries
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.infrastructure.children import child_senders
from trinity_execution.infrastructure.definition_catalog import DefinitionCatalog
from trinity_execution.infrastructure.observed import observe_facts, samples
from trinity_execution.infrastructure.repository import count_in_progress
from trinity_execution.infrastructure.senders import (
    approval_senders,
    work_batch_senders,
    work_senders,
)
from trinity_execution.infrastructure.transactions import execution_unit_of_work
from trinity_execution.loops.definition_facts import definition_consumer
from trinity_execution.loops.dispatcher import DISPATCHES, execution_dispatcher
from trinity_execution.loops.event_triggers import EventTriggers
from trinity_execution.loops.fact_consumers import consumer_specs
from trinity_execution.loops.housekeeping import DEFAULT_RETENTION, Housekeeping
from trinity_execution.loops.message_listener import MessageListener
from trinity_execution.loops.schedules import MissedFires, Scheduler
from trinity_execution.loops.timer_poller import TimerPoller
from trinity_platform.admission import AdmissionLimit
from trinity_platform.channels import open_channel
from trinity_platform.config import service_target
from trinity_platform.dispatch import CommandDispatcher, TargetState, command_state
from trinity_platform.runtime import ServiceRuntime
from trinity_platform.unit_of_work import fingerprint
from trinity_process_model.durations import parse_duration
from trinity_process_model.expressions import ExpressionLimits, configure_limits

SERVICE_NAME = "trinity.process.execution.v1.ExecutionService"
DEFAULT_MAX_IN_PROGRESS = 10_000
MIGRATIONS = Path(__file__).parent / "migrations"


def max_in_progress(env: Mapping[str, str]) -> int:
    """``TRINITY_EXECUTION_MAX_IN_PROGRESS``: executions pending or running beyond which
    TriggerProcess answers RESOURCE_EXHAUSTED (0: no bound)."""
    raw = env.get("TRINITY_EXECUTION_MAX_IN_PROGRESS") or str(DEFAULT_MAX_IN_PROGRESS)
    try:
        bound = int(raw)
    except ValueError:
        raise ValueError(
            f"TRINITY_EXECUTION_MAX_IN_PROGRESS must be an integer, got {raw!r}"
        ) from None
    if bound < 0:
        raise ValueError("TRINITY_EXECUTION_MAX_IN_PROGRESS must be 0 (no bound) or positive")
    return bound


def max_depth(env: Mapping[str, str]) -> int:
    """``TRINITY_EXECUTION_MAX_DEPTH``: how deep sub-processes may nest (default 5)."""
    raw = env.get("TRINITY_EXECUTION_MAX_DEPTH") or str(DEFAULT_MAX_DEPTH)
    try:
        depth = int(raw)
    except ValueError:
        raise ValueError(f"TRINITY_EXECUTION_MAX_DEPTH must be an integer, got {raw!r}") from None
    if depth < 0:
        raise ValueError("TRINITY_EXECUTION_MAX_DEPTH must be 0 (no sub-processes) or positive")
    return depth


def message_settings() -> MessageSettings:
    """How long messages nobody waits for yet are kept (TRINITY_MESSAGE_TTL is the
    default, TRINITY_MESSAGE_MAX_TTL the most a sender may ask for)."""
    defaults = MessageSettings()
    ttl = os.environ.get("TRINITY_MESSAGE_TTL")
    longest = os.environ.get("TRINITY_MESSAGE_MAX_TTL")
    return MessageSettings(
        default_ttl=parse_duration(ttl) if ttl else defaults.default_ttl,
        max_ttl=parse_duration(longest) if longest else defaults.max_ttl,
    )


def build() -> ServiceRuntime:
    # Every template and condition renders within the deployment's limits (invariant 8).
    configure_limits(ExpressionLimits.from_env(os.environ))
    runtime = ServiceRuntime.for_service("execution", migrations=MIGRATIONS)
    engine = runtime.engine
    channels = {
        name: open_channel(
            service_target(name),
            tls=runtime.settings.client_tls,
            token=runtime.settings.service_token or None,
        )
        for name in ("definition", "work", "approval")
    }
    catalog = DefinitionCatalog.over(channels["definition"])
    uow = execution_unit_of_work(engine, runtime.outbox_signal)
    presenter = ProtoPresenter()
    dispatcher_ref: list[CommandDispatcher] = []
    messages_ref: list[MessageDelivery] = []
    wakeups = Wakeups(
        runtime.outbox_signal.notify,
        lambda: dispatcher_ref[0].wake(),
        lambda: messages_ref[0].wake(),
        observe=observe_facts,
    )
    continuation = Continuation(uow, catalog, wakeups)
    messages = MessageDelivery(uow, continuation, presenter, message_settings())
    messages_ref.append(messages)

    async def on_rejected(execution_id: str, key: str, code: str, message: str) -> None:
        await continuation.apply(
            execution_id,
            lambda now: d.CommandRejected(now=now, key=key, code=code, message=message),
        )

    admission = AdmissionLimit(
        max_in_progress(os.environ), lambda: count_in_progress(engine), what="executions"
    )
    commands = ExecutionCommands(
        uow, catalog, wakeups, presenter, admission, max_depth=max_depth(os.environ)
    )

    async def start_child(data: dict[str, Any], request: Any) -> str:
        return (await commands.start_child(data, fingerprint(request))).id

    async def cancel_child(
        parent_id: str,
        child_id: str,
        reason: str,
        request: execution_service_pb2.CancelExecutionRequest,
    ) -> object:
        asked = fingerprint(request)
        return await commands.cancel_child(
            parent_id,
            child_id,
            reason,
            request.request_id,
            asked,
            compensate=request.compensate,
        )

    def lookup(key: str) -> Awaitable[TargetState | None]:
        return command_state(engine, DISPATCHES, key)

    dispatcher = execution_dispatcher(
        engine,
        {
            **work_senders(channels["work"], lookup),
            **approval_senders(channels["approval"], lookup),
            **child_senders(start_child, cancel_child, continuation.apply, lookup),
        },
        on_rejected,
        work_batch_senders(channels["work"], lookup),
    )
    dispatcher_ref.append(dispatcher)

    async def fire(execution_id: str, timer_id: str) -> None:
        async def claim(tx: ExecutionTransaction) -> bool:
            return await tx.timers.claim(timer_id)

        await continuation.apply(
            execution_id, lambda now: d.TimerFired(now=now, timer_id=timer_id), guard=claim
        )

    timers = TimerPoller(engine, fire)

    async def start_loops() -> None:
        timers.start()

    async def stop_loops() -> None:
        await timers.stop()
        for channel in channels.values():
            await channel.close()

    scheduler = Scheduler(
        uow, commands, missed=MissedFires(os.environ.get("TRINITY_SCHEDULE_MISSED", "once"))
    )

    async def event_triggers() -> None:
        assert runtime.nc is not None
        await EventTriggers(uow, runtime.nc, commands).run()

    async def message_subjects() -> None:
        assert runtime.nc is not None
        await MessageListener(uow, runtime.nc, messages).run()

    runtime.on_start(start_loops)
    runtime.on_stop(stop_loops)
    for spec in [*consumer_specs(continuation), definition_consumer(uow)]:
        runtime.add_consumer(spec)
    runtime.add_background_task("dispatcher", dispatcher.run)
    runtime.add_background_task("scheduler", scheduler.run)
    runtime.add_background_task("event-triggers", event_triggers)
    runtime.add_background_task("message-subjects", message_subjects)
    runtime.add_background_task("kept-messages", messages.run)
    retention = os.environ.get("TRINITY_EXECUTION_RETENTION")
    housekeeping = Housekeeping(uow, parse_duration(retention) if retention else DEFAULT_RETENTION)
    runtime.add_background_task("housekeeping", housekeeping.run)
    for sample in samples(engine):
        runtime.add_metrics_sample(sample)
    runtime.add_grpc_service(
        SERVICE_NAME,
        execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server,
        ExecutionServicer(
            commands,
            ExecutionQueries(uow, catalog, wakeups, presenter),
            messages,
            ExecutionMigrations(uow, catalog, wakeups, presenter),
        ),
    )
    return runtime
