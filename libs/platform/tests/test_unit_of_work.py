"""The platform's unit of work on SQLite and PostgreSQL: idempotent replay from a
reference, refused key reuse, conflict retry, outbox rows in the transaction of the
change, inbox claims, wake-ups only after the commit, the database's failures mapped."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc.error_details_pb2 import RequestInfo
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from trinity_platform.db import IDEMPOTENCY, OUTBOX, create_engine
from trinity_platform.errors import Conflict, FailedPrecondition, NotFound, Unavailable
from trinity_platform.idempotency import KEY_REUSED
from trinity_platform.outbox import OutboxMessage, OutboxSignal, add_many_to_outbox
from trinity_platform.sql_unit_of_work import SqlTransaction, SqlUnitOfWork
from trinity_platform.unit_of_work import (
    EventMessage,
    Idempotency,
    NewEvents,
    RetryPolicy,
    event_message_id,
    fingerprint,
)

METADATA = MetaData()
ITEMS = Table(
    "uow_items",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
    Column("version", Integer, nullable=False),
)


@dataclass
class Item:
    """A tiny aggregate: each change raises an event."""

    id: str
    value: str
    version: int = 0
    events: list[str] = field(default_factory=list)

    def set(self, value: str) -> None:
        self.value = value
        self.events.append(value)


class ItemTransaction(SqlTransaction):
    """A service's transaction: its repository, and its aggregates' events at commit."""

    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn)
        self.changed: dict[str, Item] = {}

    async def add(self, item: Item) -> None:
        item.version = 1
        await self.conn.execute(insert(ITEMS).values(id=item.id, value=item.value, version=1))
        self.changed[item.id] = item

    async def get(self, item_id: str) -> Item:
        row = (await self.conn.execute(select(ITEMS).where(ITEMS.c.id == item_id))).first()
        if row is None:
            raise NotFound(f"item {item_id} not found")
        return Item(row.id, row.value, row.version)

    async def save(self, item: Item) -> None:
        result = await self.conn.execute(
            update(ITEMS)
            .where(ITEMS.c.id == item.id, ITEMS.c.version == item.version)
            .values(value=item.value, version=item.version + 1)
        )
        if result.rowcount != 1:
            raise Conflict(f"item {item.id} changed concurrently")
        item.version += 1
        self.changed[item.id] = item

    async def new_events(self) -> list[NewEvents]:
        changes = []
        for item in self.changed.values():
            events, item.events = item.events, []
            if events:
                messages = [EventMessage(StringValue(value=e), "test.items.set") for e in events]
                changes.append(NewEvents("item", item.id, item.version, messages))
        return changes


@pytest.fixture
async def items(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    yield engine


@dataclass(frozen=True)
class SetItem:
    request_id: str
    item_id: str
    value: str


def unit_of_work(
    engine: AsyncEngine, signal: OutboxSignal | None = None, retry: RetryPolicy | None = None
) -> SqlUnitOfWork[ItemTransaction]:
    return SqlUnitOfWork(
        engine, ItemTransaction, signal=signal, name="item", retry=retry or RetryPolicy()
    )


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def create(
    command: SetItem, runs: list[str], *, look_up_first: bool = True
) -> tuple[Callable[[ItemTransaction], Awaitable[Item]], Idempotency[ItemTransaction, Item]]:
    async def body(tx: ItemTransaction) -> Item:
        runs.append(command.request_id)
        item = Item(command.item_id, "")
        item.set(command.value)
        await tx.add(item)
        return item

    key = Idempotency[ItemTransaction, Item].by_reference(
        "test.SetItem",
        command.request_id,
        fingerprint(command),
        reference=lambda item: item.id,
        load=lambda tx, item_id: tx.get(item_id),
        look_up_first=look_up_first,
    )
    return body, key


# ------------------------------------------------------------------ idempotency

# Looked up before the command runs, or (look_up_first=False) only when remembering
# the key finds it taken or the command fails: the answers are the same.
either_way = pytest.mark.parametrize("look_up_first", [True, False], ids=["first", "after"])


@either_way
async def test_a_repeated_key_answers_the_first_result_rebuilt_from_a_reference(
    items: AsyncEngine, look_up_first: bool
) -> None:
    uow = unit_of_work(items)
    runs: list[str] = []
    body, key = create(SetItem("k-1", "i-1", "first"), runs, look_up_first=look_up_first)

    first = await uow.write(body, idempotency=key)
    again = await uow.write(body, idempotency=key)

    # Looked up first, the retry does not run the command; else it runs in a
    # transaction that rolls back (the item exists: refused), then is looked up.
    assert runs == (["k-1"] if look_up_first else ["k-1", "k-1"])
    assert await count(items, ITEMS) == 1
    assert (again.id, again.value, again.version) == (first.id, "first", 1)
    async with items.connect() as conn:
        remembered = await conn.scalar(select(IDEMPOTENCY.c.response))
    assert bytes(remembered or b"") == b"i-1"  # a reference, not a serialized view
    assert await count(items, OUTBOX) == 1


async def test_an_answer_that_cannot_be_rebuilt_is_remembered_as_given(
    items: AsyncEngine,
) -> None:
    """Where the service keeps no past states, it remembers the answer of then."""
    uow = unit_of_work(items)
    key = Idempotency[ItemTransaction, StringValue](
        "test.Answer",
        "k-1",
        fingerprint(SetItem("k-1", "i-1", "v")),
        remember=lambda answer: answer.SerializeToString(deterministic=True),
        replay=lambda tx, remembered: _answer(StringValue.FromString(remembered)),
    )

    async def change(tx: ItemTransaction) -> StringValue:
        await tx.add(Item("i-1", "v"))
        return StringValue(value="as of then")

    assert (await uow.write(change, idempotency=key)).value == "as of then"
    assert (await uow.write(change, idempotency=key)).value == "as of then"
    assert await count(items, ITEMS) == 1


async def _answer(value: StringValue) -> StringValue:
    return value


@either_way
async def test_a_key_is_remembered_per_scope(items: AsyncEngine, look_up_first: bool) -> None:
    uow = unit_of_work(items)
    runs: list[str] = []
    body, key = create(SetItem("k-1", "i-1", "v"), runs, look_up_first=look_up_first)
    other_body, other_key = create(SetItem("k-1", "i-2", "v"), runs, look_up_first=look_up_first)
    other_scope = dataclasses.replace(other_key, scope="test.OtherCommand")
    await uow.write(body, idempotency=key)
    assert (await uow.write(other_body, idempotency=other_scope)).id == "i-2"
    assert runs == ["k-1", "k-1"]


@either_way
async def test_a_key_reused_for_another_request_is_refused_and_writes_nothing(
    items: AsyncEngine, look_up_first: bool
) -> None:
    uow = unit_of_work(items)
    runs: list[str] = []
    body, key = create(SetItem("k-1", "i-1", "first"), runs, look_up_first=look_up_first)
    await uow.write(body, idempotency=key)

    other_body, other_key = create(
        SetItem("k-1", "i-2", "other"), runs, look_up_first=look_up_first
    )
    with pytest.raises(FailedPrecondition) as refused:
        await uow.write(other_body, idempotency=other_key)

    assert refused.value.reason == KEY_REUSED
    # Not looked up first, the other request ran (its item is new) and rolled back.
    assert runs == (["k-1"] if look_up_first else ["k-1", "k-1"])
    assert await count(items, ITEMS) == 1
    assert await count(items, OUTBOX) == 1


@either_way
async def test_a_failed_command_is_not_remembered(items: AsyncEngine, look_up_first: bool) -> None:
    uow = unit_of_work(items)
    runs: list[str] = []
    body, key = create(SetItem("k-1", "i-1", "v"), runs, look_up_first=look_up_first)

    async def failing(tx: ItemTransaction) -> Item:
        await body(tx)
        raise NotFound("something the command needed is gone")

    with pytest.raises(NotFound):
        await uow.write(failing, idempotency=key)
    assert (await count(items, ITEMS), await count(items, IDEMPOTENCY)) == (0, 0)
    assert (await uow.write(body, idempotency=key)).value == "v"


@either_way
async def test_concurrent_first_requests_with_one_key_run_the_command_once(
    items: AsyncEngine, look_up_first: bool
) -> None:
    """Both race to remember the key; the loser rolls back and answers the winner's
    result, rebuilt from the reference."""
    uow = unit_of_work(items)
    runs: list[str] = []

    def attempt(n: int) -> Awaitable[Item]:
        # Each caller would create its own item: only one may exist afterwards.
        body, key = create(SetItem("race", f"i-{n}", "same"), runs)
        key = Idempotency[ItemTransaction, Item](
            "test.SetItem",
            "race",
            fingerprint(SetItem("race", "", "same")),
            key.remember,
            key.replay,
            look_up_first=look_up_first,
        )
        return uow.write(body, idempotency=key)

    results = await asyncio.gather(*(attempt(n) for n in range(5)))

    assert len({item.id for item in results}) == 1
    assert await count(items, ITEMS) == 1
    assert await count(items, OUTBOX) == 1


async def test_a_refusal_the_first_request_caused_answers_its_result(items: AsyncEngine) -> None:
    """Not looked up first, a retry runs the command on the state its first request
    left, which refuses it: the key is looked up then, and the first result answers."""
    uow = unit_of_work(items)
    runs: list[str] = []
    _, key = create(SetItem("k-1", "i-1", "v"), runs, look_up_first=False)

    async def set_once(tx: ItemTransaction) -> Item:
        runs.append("set")
        item = await tx.get("i-1")
        if item.value:
            raise FailedPrecondition("item i-1 is set already")
        item.set("v")
        await tx.save(item)
        return item

    async with items.begin() as conn:
        await conn.execute(insert(ITEMS).values(id="i-1", value="", version=1))
    first = await uow.write(set_once, idempotency=key)
    again = await uow.write(set_once, idempotency=key)

    assert (again.id, again.value, again.version) == (first.id, "v", 2)
    assert runs == ["set", "set"]
    assert await count(items, OUTBOX) == 1
    with pytest.raises(FailedPrecondition):  # without a key it stays refused
        await uow.write(set_once)


async def test_a_first_request_not_looked_up_sends_one_statement_fewer(
    items: AsyncEngine,
) -> None:
    uow = unit_of_work(items)
    sent: list[str] = []

    def count_statement(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(items.sync_engine, "before_cursor_execute", count_statement)
    try:
        for look_up_first in (True, False):
            body, key = create(
                SetItem(f"k-{look_up_first}", f"i-{look_up_first}", "v"),
                [],
                look_up_first=look_up_first,
            )
            sent.clear()
            await uow.write(body, idempotency=key)
            if look_up_first:
                looked_up = len(sent)
            else:
                assert len(sent) == looked_up - 1, sent
                assert not any("FROM idempotency" in s for s in sent), sent
    finally:
        event.remove(items.sync_engine, "before_cursor_execute", count_statement)


async def test_an_empty_key_is_not_idempotent(items: AsyncEngine) -> None:
    uow = unit_of_work(items)
    runs: list[str] = []
    for n in range(2):
        body, key = create(SetItem("", f"i-{n}", "v"), runs)
        await uow.write(body, idempotency=key)
    assert (await count(items, ITEMS), await count(items, IDEMPOTENCY)) == (2, 0)


def test_one_fingerprint_for_commands_and_requests() -> None:
    a = fingerprint(SetItem("k-1", "i", "v"))
    assert a == fingerprint(SetItem("k-2", "i", "v"))  # the key is not part of it
    assert a != fingerprint(SetItem("k-1", "i", "w"))
    assert a != fingerprint(SetItem("k-1", "i", "v"), without=())

    @dataclass(frozen=True)
    class OtherCommand:
        request_id: str
        item_id: str
        value: str

    assert a != fingerprint(OtherCommand("k-1", "i", "v"))  # the command's type counts
    request = RequestInfo(request_id="k1", serving_data="x")
    assert fingerprint(request) == fingerprint(RequestInfo(request_id="k2", serving_data="x"))
    with pytest.raises(TypeError):
        fingerprint({"request_id": "k"})


@given(
    st.text(max_size=20),
    st.text(max_size=20),
    st.text(max_size=20),
    st.text(max_size=20),
    st.text(max_size=20),
)
def test_a_fingerprint_is_the_command_without_its_key(
    key: str, other_key: str, item_id: str, value: str, other_value: str
) -> None:
    command = SetItem(key, item_id, value)
    assert fingerprint(command) == fingerprint(SetItem(other_key, item_id, value))
    assert (fingerprint(command) == fingerprint(SetItem(key, item_id, other_value))) == (
        value == other_value
    )
    request = RequestInfo(request_id=key, serving_data=value)
    assert fingerprint(request) == fingerprint(
        RequestInfo(request_id=other_key, serving_data=value)
    )
    assert (
        fingerprint(request) == fingerprint(RequestInfo(request_id=key, serving_data=other_value))
    ) == (value == other_value)


@dataclass(frozen=True)
class Nested:
    amount: Decimal
    at: datetime
    kind: Color
    tags: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Rich:
    request_id: str
    nested: Nested | None
    items: tuple[Nested, ...]
    values: dict[str, object]
    timeout: timedelta | None = None


def remembered_fingerprint(command: object) -> str:
    """The fingerprint of dataclasses as it was computed when the keys of before were
    remembered (``dataclasses.asdict``): a retry across the upgrade must match."""
    data = dataclasses.asdict(command)  # type: ignore[call-overload]
    data.pop("request_id", None)
    encoded = json.dumps(
        {"type": type(command).__name__, "data": data}, sort_keys=True, default=str
    )
    return hashlib.sha256(encoded.encode()).hexdigest()


_nested = st.builds(
    Nested,
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.datetimes(timezones=st.just(UTC)),
    st.just(Color.RED),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)


@given(
    st.builds(
        Rich,
        st.text(max_size=10),
        st.none() | _nested,
        st.lists(_nested, max_size=3).map(tuple),
        st.dictionaries(
            st.text(max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            max_size=3,
        ),
        st.none() | st.timedeltas(),
    )
)
def test_a_dataclass_fingerprint_is_the_one_remembered_before(command: Rich) -> None:
    assert fingerprint(command) == remembered_fingerprint(command)


# ------------------------------------------------------------------ conflicts


async def test_a_lost_race_runs_again_on_fresh_state(items: AsyncEngine) -> None:
    """The first attempt loads the item, a concurrent writer changes it, the save is
    refused: the second attempt sees the concurrent value and its effects alone commit."""
    if items.dialect.name == "sqlite":
        pytest.skip("SQLite admits one writer at a time: no write lands between read and save")
    uow = unit_of_work(items)
    await uow.write(lambda tx: tx.add(Item("i-1", "start")))
    seen: list[str] = []

    async def append(tx: ItemTransaction) -> Item:
        item = await tx.get("i-1")
        seen.append(item.value)
        if len(seen) == 1:  # another transaction wins in between (by version)
            async with items.connect() as other:
                await other.execute(
                    update(ITEMS).where(ITEMS.c.id == "i-1").values(value="theirs", version=2)
                )
                await other.commit()
        item.set(item.value + "+mine")
        await tx.save(item)
        return item

    result = await uow.write(append)

    assert seen == ["start", "theirs"]
    assert (result.value, result.version) == ("theirs+mine", 3)
    async with items.connect() as conn:
        ids = (await conn.execute(select(OUTBOX.c.message_id))).scalars().all()
    assert ids == [event_message_id("item", "i-1", 3, 0)]  # none of the lost attempt


async def test_conflicts_are_retried_under_the_policy_then_answered_aborted(
    items: AsyncEngine,
) -> None:
    uow = unit_of_work(items, retry=RetryPolicy(attempts=3, base_delay=0))
    calls = 0

    async def always_loses(tx: ItemTransaction) -> None:
        nonlocal calls
        calls += 1
        await tx.add(Item(f"i-{calls}", "v"))
        raise Conflict("lost again")

    with pytest.raises(Conflict):
        await uow.write(always_loses)
    assert calls == 3
    assert await count(items, ITEMS) == 0


async def test_a_unique_key_taken_concurrently_is_a_conflict_and_retried(
    items: AsyncEngine,
) -> None:
    uow = unit_of_work(items)
    await uow.write(lambda tx: tx.add(Item("taken", "v")))
    tries: list[str] = []

    async def add_first_free(tx: ItemTransaction) -> str:
        item_id = "taken" if not tries else "free"
        tries.append(item_id)
        await tx.add(Item(item_id, "v"))
        return item_id

    assert await uow.write(add_first_free) == "free"
    assert tries == ["taken", "free"]


def test_the_retry_delay_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=20, base_delay=0.002, max_delay=0.1)
    for attempt in range(20):
        assert 0 <= policy.delay(attempt) <= min(0.1, 0.002 * 2**attempt)


# ------------------------------------------------------------------ outbox and wake-ups


async def test_events_become_outbox_rows_in_the_transaction_of_the_change(
    items: AsyncEngine,
) -> None:
    uow = unit_of_work(items)

    async def change(tx: ItemTransaction) -> None:
        item = Item("i-1", "")
        item.set("a")
        item.set("b")
        await tx.add(item)

    await uow.write(change)
    async with items.connect() as conn:
        rows = (await conn.execute(select(OUTBOX).order_by(OUTBOX.c.id))).all()
    assert [r.message_id for r in rows] == [
        event_message_id("item", "i-1", 1, 0),
        event_message_id("item", "i-1", 1, 1),
    ]
    assert [StringValue.FromString(r.payload).value for r in rows] == ["a", "b"]
    assert {r.ce_subject for r in rows} == {"i-1"}

    async def change_then_fail(tx: ItemTransaction) -> None:
        item = await tx.get("i-1")
        item.set("c")
        await tx.save(item)
        raise NotFound("fails after the change")

    with pytest.raises(NotFound):
        await uow.write(change_then_fail)
    assert await count(items, OUTBOX) == 2  # rolled back with the change
    assert (await uow.read(lambda tx: tx.get("i-1"))).value == "b"


async def test_wake_ups_run_only_after_the_commit(items: AsyncEngine) -> None:
    signal = OutboxSignal()
    uow = unit_of_work(items, signal)
    observed: list[int] = []

    async def visible_elsewhere() -> None:
        observed.append(await count(items, ITEMS))

    pending: list[asyncio.Future[None]] = []

    def wake() -> None:
        assert signal.is_set()  # the relay is woken too
        pending.append(asyncio.ensure_future(visible_elsewhere()))

    async def change(tx: ItemTransaction) -> None:
        tx.after_commit(wake)
        item = Item("i-1", "")
        item.set("a")
        await tx.add(item)
        assert not pending and not signal.is_set()

    await uow.write(change)
    await asyncio.gather(*pending)
    assert observed == [1]  # the woken code found the row committed

    signal = OutboxSignal()
    woken: list[str] = []

    async def fail(tx: ItemTransaction) -> None:
        tx.after_commit(lambda: woken.append("rolled back"))
        item = Item("i-2", "")
        item.set("a")
        await tx.add(item)
        raise NotFound("no")

    with pytest.raises(NotFound):
        await unit_of_work(items, signal).write(fail)
    assert woken == [] and not signal.is_set()

    async def writes_no_outbox_row(tx: ItemTransaction) -> None:
        tx.after_commit(lambda: woken.append("committed"))
        await tx.add(Item("i-3", "quiet"))  # no event

    await unit_of_work(items, signal).write(writes_no_outbox_row)
    assert woken == ["committed"] and not signal.is_set()


async def test_a_failing_wake_up_does_not_fail_the_committed_command(items: AsyncEngine) -> None:
    woken: list[str] = []

    def broken() -> None:
        raise RuntimeError("the sender is gone")

    async def change(tx: ItemTransaction) -> str:
        tx.after_commit(broken)
        tx.after_commit(lambda: woken.append("next"))
        await tx.add(Item("i-1", "v"))
        return "done"

    assert await unit_of_work(items).write(change) == "done"
    assert woken == ["next"]
    assert await count(items, ITEMS) == 1


async def test_a_transaction_refused_by_a_unique_key_wakes_nobody(items: AsyncEngine) -> None:
    signal = OutboxSignal()
    uow = unit_of_work(items, signal, RetryPolicy(attempts=1))
    await uow.write(lambda tx: tx.add(Item("i-1", "v")))
    woken: list[str] = []

    async def duplicate(tx: ItemTransaction) -> None:
        tx.after_commit(lambda: woken.append("x"))
        item = Item("i-1", "")
        item.set("again")
        await tx.add(item)

    with pytest.raises(Conflict):
        await uow.write(duplicate)
    assert woken == [] and not signal.is_set()


async def test_the_relay_learns_which_messages_were_committed_and_when(
    items: AsyncEngine,
) -> None:
    """The signal is told the message ids of a commit and its instant (the fact lag is
    measured from it), never those of a rollback or of a transaction not of the unit of
    work that ran earlier on the same connection."""
    signal = OutboxSignal()
    uow = unit_of_work(items, signal)
    async with items.begin() as conn:  # a writer of its own, on a pooled connection
        [outside] = await add_many_to_outbox(
            conn, [OutboxMessage(StringValue(value="x"), "test.items.set", "other")]
        )

    async def fail(tx: ItemTransaction) -> None:
        item = Item("i-0", "")
        item.set("rolled back")
        await tx.add(item)
        await tx._flush()  # its rows are in the transaction when it fails
        raise NotFound("no")

    with pytest.raises(NotFound):
        await uow.write(fail)
    assert not signal.is_set()

    async def change(tx: ItemTransaction) -> None:
        item = Item("i-1", "")
        item.set("a")
        item.set("b")
        await tx.add(item)

    before = time.time()
    await uow.write(change)
    after = time.time()
    assert signal.is_set()
    for index in (0, 1):
        committed_at = signal.commit_time(event_message_id("item", "i-1", 1, index))
        assert committed_at is not None and before <= committed_at <= after
    assert signal.commit_time(event_message_id("item", "i-1", 1, 0)) is None  # taken once
    assert signal.commit_time(event_message_id("item", "i-0", 1, 0)) is None
    assert signal.commit_time(outside) is None

    grouped = await asyncio.gather(
        *(uow.write(lambda tx, i=i: tx.add(_changed(f"g-{i}")), grouped=True) for i in range(3))
    )
    assert len(grouped) == 3
    for i in range(3):
        assert signal.commit_time(event_message_id("item", f"g-{i}", 1, 0)) is not None


def _changed(item_id: str) -> Item:
    item = Item(item_id, "")
    item.set("v")
    return item


def test_the_commit_instants_the_signal_keeps_are_bounded() -> None:
    signal = OutboxSignal(max_tracked=10)
    signal.committed([f"m-{i}" for i in range(25)], at=1.0)
    assert signal.commit_time("m-24") == 1.0  # the newest are kept
    assert signal.commit_time("m-0") is None


async def test_the_signal_wakes_its_waiter_or_lets_it_time_out() -> None:
    signal = OutboxSignal()
    signal.notify()
    assert await signal.wait(None)  # a notification before the wait is not lost
    assert not signal.is_set()
    assert not await signal.wait(0.001)
    waiting = asyncio.ensure_future(signal.wait(None))
    await asyncio.sleep(0)
    assert not waiting.done()
    signal.committed(["m-1"])
    assert await waiting
    assert not signal.is_set()


# ------------------------------------------------------------------ inbox, reads, failures


async def test_a_message_is_claimed_once_in_the_transaction_of_its_effect(
    items: AsyncEngine,
) -> None:
    uow = unit_of_work(items)

    async def consume(tx: ItemTransaction) -> bool:
        if not await tx.claim_message("items", "m-1"):
            return False
        await tx.add(Item("from-m-1", "v"))
        return True

    async def consume_and_fail(tx: ItemTransaction) -> None:
        await consume(tx)
        raise NotFound("the effect failed")

    with pytest.raises(NotFound):
        await uow.write(consume_and_fail)  # the claim rolls back with the effect
    assert await uow.write(consume) is True
    assert await uow.write(consume) is False  # a redelivery
    assert await count(items, ITEMS) == 1


async def test_a_read_sees_committed_state_and_writes_nothing(items: AsyncEngine) -> None:
    uow = unit_of_work(items)
    await uow.write(lambda tx: tx.add(Item("i-1", "v")))
    assert (await uow.read(lambda tx: tx.get("i-1"))).value == "v"
    with pytest.raises(NotFound):
        await uow.read(lambda tx: tx.get("missing"))


async def test_a_database_that_cannot_serve_is_answered_unavailable() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    uow = unit_of_work(engine, retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(Unavailable) as read_failed:
            await uow.read(lambda tx: tx.get("i"))
        with pytest.raises(Unavailable) as write_failed:
            await uow.write(lambda tx: tx.add(Item("i", "v")))
    finally:
        await engine.dispose()
    assert read_failed.value.reason == write_failed.value.reason == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize("writes", [False, True])
async def test_a_transaction_cancelled_while_it_begins_returns_its_connection(
    items: AsyncEngine, monkeypatch: pytest.MonkeyPatch, writes: bool
) -> None:
    """Background tasks are cancelled at stop: a transaction cancelled before it began
    must still return its connection (on SQLite it would keep the writers' gate)."""
    uow = unit_of_work(items)
    beginning = asyncio.Event()

    async def begin_forever(self: AsyncTransaction, is_ctxmanager: bool = False) -> None:
        beginning.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patch:
        patch.setattr(AsyncTransaction, "start", begin_forever)
        run = uow.write if writes else uow.read
        task = asyncio.ensure_future(run(lambda tx: tx.get("i")))
        await asyncio.wait_for(beginning.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert items.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    gate = getattr(items, "gate", None)
    assert gate is None or not gate.locked()
    await asyncio.wait_for(uow.write(lambda tx: tx.add(Item("i", "v"))), 10)  # writes go
