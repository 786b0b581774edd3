"""A fact subscriber in a dozen lines: every fact of the four services, decoded by ce-type.

    TRINITY_NATS_URL=nats://127.0.0.1:4222 .venv/bin/python examples/subscriber.py

Under the broker permissions of deploy/k8s/base/nats/authorization.conf, connect as the read-only
`subscriber` user (TRINITY_NATS_USER, TRINITY_NATS_PASSWORD; TLS with TRINITY_NATS_CA_FILE).

Start from here for a projection (a timeline, an audit log, a dashboard, a webhook):
replace the print with what you keep. The ordered consumers are ephemeral and start
at the beginning of each stream; a durable projection would use a durable consumer
and remember the last stream sequence it applied.
"""

import asyncio
import contextlib
import os

import nats
from nats.js.api import DeliverPolicy

# Importing the generated modules registers the fact types that decode() looks up.
import trinity.process.approval.v1.facts_pb2
import trinity.process.definition.v1.facts_pb2
import trinity.process.execution.v1.facts_pb2
import trinity.process.work.v1.facts_pb2  # noqa: F401
from trinity_platform.envelope import Envelope, decode
from trinity_platform.nats_connect import nats_security_from_env


async def main() -> None:
    nc = await nats.connect(
        os.environ.get("TRINITY_NATS_URL", "nats://127.0.0.1:4222"),
        **nats_security_from_env().connect_options(),  # user, password, TLS, if set
    )
    js = nc.jetstream()

    async def on_fact(msg: nats.aio.msg.Msg) -> None:
        envelope = Envelope.from_msg(msg)  # the CloudEvents attributes, from the ce- headers
        fact = decode(envelope)  # the protobuf message that ce-type names
        print(envelope.time, envelope.type, envelope.subject, fact, sep="\n  ", flush=True)

    for service in ("definition", "execution", "approval", "work"):
        subject = f"trinity.process.{service}.facts.v1.>"  # stream TRINITY_PROCESS_<SERVICE>_FACTS
        await js.subscribe(
            subject, cb=on_fact, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
    await asyncio.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
