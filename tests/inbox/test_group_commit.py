"""Group commit against a real database and a real Redis: webhooks that arrive together share
one transaction, each is answered only once that transaction has committed, and a transaction
that fails answers every webhook in it with a 503 and stores none of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from httpx import AsyncClient
from sqlalchemy import event, func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.kommo.webhook import parse_webhook
from app.db import create_engine, dialect_name
from app.errors import ServiceUnavailable
from app.inbox.group_commit import GroupCommit
from app.inbox.intake import kommo_events
from app.inbox.models import InboxEvent
from app.inbox.repository import NewEvent, due_ids, first_of_each_key
from app.queue import QUEUE_NAME, Queue
from tests.conftest import WEBHOOK_SECRET
from tests.helpers import lead_entry, status_webhook

URL = f"/webhooks/kommo/{WEBHOOK_SECRET}"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Maker = async_sessionmaker[AsyncSession]
WIDE_WINDOW_S = 0.05  # long enough that every sender in a test joins the first group


Intakes = Callable[..., GroupCommit]


@pytest.fixture
async def intakes(sessionmaker: Maker, queue: ArqRedis) -> AsyncIterator[Intakes]:
    """GroupCommit(engine, queue, **options), closed after the test (it keeps connections)."""
    made: list[GroupCommit] = []

    def make(**options: Any) -> GroupCommit:
        made.append(GroupCommit(sessionmaker.kw["bind"], Queue(queue), **options))
        return made[-1]

    yield make
    for intake in made:
        await intake.close()


def trigger(deal_id: int) -> list[NewEvent]:
    hook = parse_webhook(status_webhook(lead_entry(deal_id)))
    return kommo_events(
        hook, account_id="29000001", trigger_pipeline_id="500", trigger_status_id="503"
    )


async def rows(sessionmaker: Maker) -> list[InboxEvent]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(InboxEvent).order_by(InboxEvent.id))).all())


class WriteTransactions:
    """How many transactions wrote the inbox's rows. PostgreSQL stamps each row with the id of
    the transaction that wrote it (xmin), whichever way it was sent (group commit sends its
    INSERT on the asyncpg connection, past SQLAlchemy's events); on SQLite, where every write
    goes through SQLAlchemy, its commits are counted as they happen."""

    def __init__(self, sessionmaker: Maker) -> None:
        self.sessionmaker = sessionmaker
        self.commits = 0
        event.listen(sessionmaker.kw["bind"].sync_engine, "commit", self._on_commit)

    def _on_commit(self, _conn: Any) -> None:
        self.commits += 1

    async def count(self) -> int:
        async with self.sessionmaker() as session:
            if dialect_name(session) != "postgresql":
                return self.commits
            xmins = select(func.count(text("DISTINCT xmin::text"))).select_from(InboxEvent)
            return int(await session.scalar(xmins) or 0)


async def test_webhooks_arriving_together_share_one_commit_and_each_gets_its_own_ids(
    sessionmaker: Maker, queue: ArqRedis, intakes: Intakes
) -> None:
    intake = intakes(window_s=WIDE_WINDOW_S)
    writes = WriteTransactions(sessionmaker)

    due = await asyncio.gather(*(intake.accept(trigger(d), retry_hint="-") for d in (1, 2, 3)))

    stored = await rows(sessionmaker)
    assert [r.deal_id for r in stored] == ["1", "2", "3"]
    assert due == [[stored[0].id], [stored[1].id], [stored[2].id]]
    assert await writes.count() == 1
    for row in stored:
        job = Job(f"event:{row.id}:0", queue, _queue_name=QUEUE_NAME)
        assert await job.status() == JobStatus.queued


async def test_a_duplicate_in_the_same_group_is_one_row_and_queued_once(
    sessionmaker: Maker, queue: ArqRedis, intakes: Intakes
) -> None:
    intake = intakes(window_s=WIDE_WINDOW_S)

    first, again = await asyncio.gather(
        intake.accept(trigger(7), retry_hint="-"), intake.accept(trigger(7), retry_hint="-")
    )

    (row,) = await rows(sessionmaker)
    assert (first, again) == ([row.id], [])
    assert await queue.zcard(QUEUE_NAME) == 1


async def test_a_failed_commit_answers_503_to_every_webhook_in_the_group_and_stores_nothing(
    sessionmaker: Maker, queue: ArqRedis, intakes: Intakes
) -> None:
    intake = intakes(window_s=WIDE_WINDOW_S)
    # deal_id is NOT NULL: this member's row makes the whole INSERT fail on either database.
    broken = [replace(trigger(5)[0], deal_id=None)]  # type: ignore[arg-type]

    answers = await asyncio.gather(
        intake.accept(trigger(4), retry_hint="Kommo will retry"),
        intake.accept(broken, retry_hint="Kommo will retry"),
        intake.accept(trigger(6), retry_hint="Kommo will retry"),
        return_exceptions=True,
    )

    assert all(isinstance(a, ServiceUnavailable) for a in answers)
    assert {a.detail for a in answers if isinstance(a, ServiceUnavailable)} == {
        "the event could not be stored (database unavailable); Kommo will retry"
    }
    assert await rows(sessionmaker) == []
    assert await queue.zcard(QUEUE_NAME) == 0
    # The next group is unaffected.
    assert len(await intake.accept(trigger(4), retry_hint="-")) == 1


async def test_every_accepted_webhook_is_committed_when_its_answer_arrives(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    async def post_then_look(deal_id: int) -> tuple[int, int]:
        response = await client.post(URL, content=status_webhook(lead_entry(deal_id)), headers=FORM)
        async with sessionmaker() as session:  # another connection: sees only what committed
            found = await session.scalar(
                select(func.count())
                .select_from(InboxEvent)
                .where(InboxEvent.deal_id == str(deal_id))
            )
        return response.status_code, int(found or 0)

    answers = await asyncio.gather(*(post_then_look(d) for d in range(100, 140)))

    assert answers == [(200, 1)] * 40


@pytest.mark.parametrize("members", [1, 300])
async def test_groups_are_bounded_and_all_are_written(
    sessionmaker: Maker, queue: ArqRedis, intakes: Intakes, members: int
) -> None:
    intake = intakes(window_s=WIDE_WINDOW_S, max_members=128)
    writes = WriteTransactions(sessionmaker)

    due = await asyncio.gather(
        *(intake.accept(trigger(1000 + i), retry_hint="-") for i in range(members))
    )

    assert all(len(ids) == 1 for ids in due)
    assert len(await rows(sessionmaker)) == members
    assert await writes.count() == -(-members // 128)


async def test_groups_written_at_once_with_the_same_deals_in_opposite_orders_both_commit(
    sessionmaker: Maker, queue: ArqRedis, intakes: Intakes
) -> None:
    """One group per sender, the same deals in opposite orders: rows go in key order and each
    deal is stored once. (The senders here mostly share one writer; that two writers lock rows
    in the same order is what the next test holds `due_ids` to, and the INSERT sorts by key.)"""
    intake = intakes(window_s=0, max_members=1)
    forward = trigger(21) + trigger(22)
    backward = trigger(22) + trigger(21)

    answers = await asyncio.gather(
        *(intake.accept(events, retry_hint="-") for events in (forward, backward) * 3)
    )

    stored = await rows(sessionmaker)
    assert sorted(r.deal_id for r in stored) == ["21", "22"]
    assert sorted(i for ids in answers for i in ids) == sorted(r.id for r in stored)


async def test_stored_events_are_reopened_in_key_order_whatever_order_they_came_in() -> None:
    """Reopening locks a stored row until the transaction ends: two writers' groups reopening
    the same deals in opposite orders would deadlock (PostgreSQL answers one of them 503)."""
    groups = [trigger(22) + trigger(21), trigger(23)]
    new_row = {groups[1][0].dedupe_key: 123}  # deal 23 is new; 21 and 22 were stored before
    reopened: list[str] = []

    async def reopen(new: NewEvent) -> int:
        reopened.append(new.deal_id)
        return 1000 + int(new.deal_id)

    due = await due_ids(groups, first_of_each_key(groups), new_row, reopen)

    assert reopened == ["21", "22"]
    assert due == [[1022, 1021], [123]]  # each group's ids still in its own order


# PostgreSQL on asyncpg: group commit sends its INSERT on the driver's connection
# (repository.UnnestInsert), past SQLAlchemy; these hold it to what SQLAlchemy's path does.


async def test_a_value_too_long_for_its_column_is_refused_not_cut_short(
    postgres_url: str | None, sessionmaker: Maker, queue: ArqRedis, intakes: Intakes
) -> None:
    if not postgres_url:
        pytest.skip("SQLite does not enforce column lengths; needs TEST_DATABASE_URL")
    intake = intakes(window_s=WIDE_WINDOW_S)
    long_key = [replace(trigger(51)[0], dedupe_key="kommo:" + "9" * 300)]

    answers = await asyncio.gather(
        intake.accept(trigger(50), retry_hint="-"),
        intake.accept(long_key, retry_hint="-"),
        return_exceptions=True,
    )

    assert all(isinstance(a, ServiceUnavailable) for a in answers)
    assert await rows(sessionmaker) == []


async def test_a_broken_connection_is_dropped_and_the_retry_is_stored_once(
    postgres_url: str | None, sessionmaker: Maker, queue: ArqRedis, intakes: Intakes
) -> None:
    """PostgreSQL restarted under the API: each pooled connection that died fails one group
    with a 503 (Kommo retries) and leaves the pool; none is handed out again."""
    if not postgres_url:
        pytest.skip("ends PostgreSQL's connections; needs TEST_DATABASE_URL")
    engine = sessionmaker.kw["bind"]
    intake = intakes(window_s=0)
    assert len(await intake.accept(trigger(60), retry_hint="-")) == 1
    await _end_every_other_connection(postgres_url)

    failures = 0
    for _ in range(engine.pool.size() + 2):
        try:
            due = await intake.accept(trigger(61), retry_hint="Kommo will retry")
            break
        except ServiceUnavailable:
            failures += 1
    else:
        pytest.fail("every retry failed: a broken connection went back to the pool")

    assert failures >= 1 and len(due) == 1
    assert len(await intake.accept(trigger(62), retry_hint="-")) == 1  # no dead one left
    assert [r.deal_id for r in await rows(sessionmaker)] == ["60", "61", "62"]


class WithholdsHangUp:
    """A TCP proxy to PostgreSQL that passes every byte on but not the server's hang-up, so
    the client reads the server's FATAL message ("terminating connection") and no end of the
    stream after it: what a client sees for a moment when PostgreSQL restarts."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.pipes: set[asyncio.Task[None]] = set()
        self.clients: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Hangs up on every client (a connection closing waits for the server's hang-up)."""
        self.server.close()
        for client in self.clients:
            client.close()
        for pipe in self.pipes:
            pipe.cancel()

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        self.clients.append(client_w)
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        for pipe in (_pipe(client_r, server_w, close=True), _pipe(server_r, client_w, close=False)):
            task = asyncio.create_task(pipe)
            self.pipes.add(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, close: bool) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    if close:
        writer.close()


async def test_a_connection_the_server_ended_before_its_hang_up_arrived_is_a_503(
    postgres_url: str | None, sessionmaker: Maker, queue: ArqRedis
) -> None:
    """asyncpg reports that state as an InternalClientError, not a connection error: it must
    still be the senders' 503 (not a 500) and the connection must not be used again."""
    if not postgres_url:
        pytest.skip("ends PostgreSQL's connections; needs TEST_DATABASE_URL")
    url = make_url(postgres_url)
    proxy = WithholdsHangUp(url.host or "127.0.0.1", url.port or 5432)
    engine = create_engine(
        url.set(host="127.0.0.1", port=await proxy.start()).render_as_string(False)
    )
    intake = GroupCommit(engine, Queue(queue), window_s=0)
    try:
        assert len(await intake.accept(trigger(90), retry_hint="-")) == 1
        await _end_every_other_connection(postgres_url)
        await asyncio.sleep(0.3)  # the FATAL message is in the kept connection's buffer

        with pytest.raises(ServiceUnavailable):
            await intake.accept(trigger(91), retry_hint="Kommo will retry")
        assert len(await intake.accept(trigger(91), retry_hint="-")) == 1  # a new connection
    finally:
        await intake.close()
        await proxy.stop()
        await engine.dispose()


async def _end_every_other_connection(url: str) -> None:
    admin = create_engine(url)
    async with admin.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    await admin.dispose()
