"""Every RPC of the four services, fuzzed: never INTERNAL, never UNKNOWN, never a crash.

Three attacks per RPC, all with a token that holds every permission (so the calls get
past authorization to the code that reads them): raw random bytes as the body,
hypothesis-generated messages with extreme values (see :mod:`tests.fuzz.messages`),
and, for the List RPCs, forged and edited page tokens. Afterwards every service still
answers SERVING and no process has exited.

``TRINITY_FUZZ_EXAMPLES`` sets the examples per RPC and attack (``make fuzz`` runs
many; ``make test`` a few).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import ADMIN, FuzzSuite
from tests.fuzz.messages import PAGE_TOKENS, KnownIds, messages_of
from trinity.process.approval.v1 import approval_service_pb2
from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.execution.v1 import execution_service_pb2
from trinity.process.work.v1 import work_service_pb2

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("TRINITY_FUZZ_EXAMPLES") or "10")
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED}
CALL_DEADLINE = 60.0  # generous on a loaded machine; an answer, not speed, is the test
WATCH_DEADLINE = 2.0  # a watch of a live execution streams until it ends

SERVICES = {
    "definition": definition_service_pb2.DESCRIPTOR.services_by_name["DefinitionService"],
    "execution": execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"],
    "approval": approval_service_pb2.DESCRIPTOR.services_by_name["ApprovalService"],
    "work": work_service_pb2.DESCRIPTOR.services_by_name["WorkService"],
}
RPCS = [
    (service, method) for service, descriptor in SERVICES.items() for method in descriptor.methods
]
LIST_RPCS = [(s, m) for s, m in RPCS if "page_token" in m.input_type.fields_by_name]
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
OUTCOMES: Counter[str] = Counter()
UNUSUAL: Counter[str] = Counter()  # printed at the end: what else the services answered


def _id(rpc: tuple[str, MethodDescriptor]) -> str:
    return rpc[1].name


def call(fuzz: FuzzSuite, service: str, method: MethodDescriptor, body: bytes) -> None:
    """One call with raw ``body``; fails on INTERNAL, UNKNOWN or no answer at all."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = fuzz.channel(service)
    try:
        if method.server_streaming:
            stream: Any = channel.unary_stream(path)(body, timeout=WATCH_DEADLINE, metadata=ADMIN)
            for _ in stream:
                pass
        else:
            channel.unary_unary(path)(body, timeout=CALL_DEADLINE, metadata=ADMIN)
        OUTCOMES["OK"] += 1
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        OUTCOMES[code.name] += 1
        details = error.details()  # type: ignore[attr-defined]
        if code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            UNUSUAL[f"{method.name} {code.name}: {details[:80]}"] += 1
        assert code not in REFUSED, (
            f"{method.name} answered {code.name}: {details}\n{logged(fuzz, details or '')}"
        )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert method.server_streaming, f"{method.name} gave no answer in {CALL_DEADLINE}s"


def logged(fuzz: FuzzSuite, details: str) -> str:
    """The service's log lines of an INTERNAL's reference (its traceback)."""
    match = re.search(r"reference (\w+)", details)
    if match is None:
        return ""
    lines = [
        line[:3000]
        for path in fuzz.log_files()
        for line in path.read_text(errors="replace").splitlines()
        if match[1] in line
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("rpc", RPCS, ids=_id)
def test_random_bytes(fuzz_suite: FuzzSuite, rpc: tuple[str, MethodDescriptor]) -> None:
    service, method = rpc

    @SETTINGS
    @given(st.binary(max_size=300))
    def attack(body: bytes) -> None:
        call(fuzz_suite, service, method, body)

    attack()


@pytest.mark.parametrize("rpc", RPCS, ids=_id)
def test_extreme_messages(fuzz_suite: FuzzSuite, rpc: tuple[str, MethodDescriptor]) -> None:
    service, method = rpc
    ids = KnownIds(fuzz_suite.known_ids)

    @SETTINGS
    @given(messages_of(method.input_type, ids))
    def attack(message: Any) -> None:
        call(fuzz_suite, service, method, message.SerializeToString())

    attack()


def _edited(token: str) -> str:
    """``token`` with its sort key changed and its signature kept."""
    body, _, signature = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["k"] = [0 for _ in payload.get("k", [])] or [0]
    edited = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{edited}.{signature}"


@pytest.mark.parametrize("rpc", LIST_RPCS, ids=_id)
def test_forged_page_tokens(fuzz_suite: FuzzSuite, rpc: tuple[str, MethodDescriptor]) -> None:
    service, method = rpc
    request_type = GetMessageClass(method.input_type)

    @SETTINGS
    @given(PAGE_TOKENS)
    def attack(token: str) -> None:
        call(fuzz_suite, service, method, request_type(page_token=token).SerializeToString())

    attack()
    # A token this deployment signed, edited, is refused; unchanged, it is accepted.
    listed = fuzz_suite.channel("definition").unary_unary(
        "/trinity.process.definition.v1.DefinitionService/ListDefinitions",
        response_deserializer=definition_service_pb2.ListDefinitionsResponse.FromString,
    )
    reply = listed(
        definition_service_pb2.ListDefinitionsRequest(page_size=1).SerializeToString(),
        metadata=ADMIN,
        timeout=CALL_DEADLINE,
    )
    assert reply.next_page_token  # the suite holds two definitions
    forged = definition_service_pb2.ListDefinitionsRequest(
        page_size=1, page_token=_edited(reply.next_page_token)
    )
    with pytest.raises(grpc.RpcError) as caught:
        listed(forged.SerializeToString(), metadata=ADMIN, timeout=CALL_DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    unchanged = definition_service_pb2.ListDefinitionsRequest(
        page_size=1, page_token=reply.next_page_token
    )
    listed(unchanged.SerializeToString(), metadata=ADMIN, timeout=CALL_DEADLINE)


def test_zz_every_service_is_healthy_afterwards(fuzz_suite: FuzzSuite) -> None:
    """Runs after the attacks (defined last): nothing died, everything SERVING."""
    exited = {name: code for name, code in fuzz_suite.suite.running.items() if code is not None}
    assert not exited, f"processes exited: {exited}"
    for service in SERVICES:
        reply = health_pb2_grpc.HealthStub(fuzz_suite.channel(service)).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_DEADLINE
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    print(f"fuzz outcomes: {dict(OUTCOMES)}")
    for line, count in UNUSUAL.most_common(30):
        print(f"  {count:5d} {line}")
