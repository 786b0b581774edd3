"""The composition root: wires the runtime, the application and its background tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from trinity.process.approval.v1 import approval_service_pb2, approval_service_pb2_grpc
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_approval.api.servicer import ApprovalServicer
from trinity_approval.application.service import ApprovalApplication, Clock, utc_now
from trinity_approval.config import ApprovalSettings, load_approval_settings
from trinity_approval.infrastructure.deadline_watcher import DeadlineWatcher
from trinity_approval.infrastructure.notifications import NotificationPlanner, NotificationPolicy
from trinity_approval.infrastructure.repository import sample_pending
from trinity_approval.infrastructure.transaction import Wakes, approval_unit_of_work
from trinity_approval.infrastructure.work_sender import WorkNotificationSender
from trinity_platform.channels import open_channel
from trinity_platform.config import ServiceSettings, load_settings
from trinity_platform.runtime import RuntimeOptions, ServiceRuntime

SERVICE = "approval"
SERVICE_NAME = approval_service_pb2.DESCRIPTOR.services_by_name["ApprovalService"].full_name
MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class ApprovalService:
    runtime: ServiceRuntime
    app: ApprovalApplication
    watcher: DeadlineWatcher
    sender: WorkNotificationSender

    async def start(self) -> None:
        await self.runtime.start()

    async def stop(self) -> None:
        await self.runtime.stop()

    @property
    def port(self) -> int:
        return self.runtime.port


def bootstrap(
    settings: ServiceSettings | None = None,
    approval_settings: ApprovalSettings | None = None,
    *,
    options: RuntimeOptions | None = None,
    clock: Clock = utc_now,
) -> ApprovalService:
    """Build the service (no I/O here: connections open in ``start()``)."""
    settings = settings or load_settings(SERVICE)
    config = approval_settings or load_approval_settings()
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, options=options)
    planner = NotificationPlanner(
        NotificationPolicy(config.principal_channel, config.principal_target)
    )
    sender = WorkNotificationSender(
        runtime.engine,
        poll_interval=config.dispatch_poll_interval,
        max_backoff=config.dispatch_max_backoff,
        clock=clock,
    )
    wakes = Wakes(dispatches=sender.wake)
    app = ApprovalApplication(
        approval_unit_of_work(
            runtime.engine, planner, clock, signal=runtime.outbox_signal, wakes=wakes
        ),
        clock=clock,
    )
    watcher = DeadlineWatcher(app, poll_interval=config.deadline_poll_interval)
    wakes.new_approvals = watcher.wake
    channel_box: list[grpc.aio.Channel] = []

    async def open_work_channel() -> None:
        # This service's own identity on its calls (TRINITY_SERVICE_TOKEN).
        channel = open_channel(
            config.work_target,
            tls=runtime.settings.client_tls,
            token=settings.service_token or config.work_token or None,
        )
        channel_box.append(channel)
        sender.stub = WorkServiceStub(channel)

    async def close_work_channel() -> None:
        while channel_box:
            await channel_box.pop().close()

    runtime.on_start(open_work_channel)
    runtime.on_stop(close_work_channel)
    runtime.add_background_task("deadline-watcher", watcher.run)
    runtime.add_background_task("work-notifications", sender.run)
    runtime.add_metrics_sample(lambda: sample_pending(runtime.engine))
    runtime.add_grpc_service(
        SERVICE_NAME,
        approval_service_pb2_grpc.add_ApprovalServiceServicer_to_server,
        ApprovalServicer(app, config.requesters),
    )
    return ApprovalService(runtime, app, watcher, sender)
