"""Reads return position order and UTC, whatever the physical order of the rows and the
session's time zone.

- Rows written out of position order (as a restore, a replica or a concurrent history may
  leave them) come back by ``flow_seq``, from ``list`` and from the re-append comparison
  (``events_in_range``): the scans here are forced to follow the heap, so a query without
  ``ORDER BY flow_seq`` would return them in their physical order.
- A session whose ``TimeZone`` is not UTC (+05:30, -03:30) still reads every timestamp as UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from uuid import UUID

import psycopg
import pytest

from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.events import FlowEvent, FlowInitialized, StepSignal, StepStarted
from chem_persistence.domain.json_values import dumps
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.store import PgEventStore

T0 = datetime(2024, 9, 1, 23, 30, 0, 250000, tzinfo=UTC)
#: Physical order of the rows: positions 3, 0, 2, 1.
HEAP_ORDER = (3, 0, 2, 1)


def events(flow: UUID) -> list[FlowEvent]:
    kinds = [
        FlowInitialized("a" * 64, 3),
        StepStarted(0, "acquire"),
        StepSignal(0, "acquire", "ACQUIRED", {"n": 1}),
        StepStarted(1, "compute"),
    ]
    return [FlowEvent(i, flow, k, T0 + timedelta(seconds=i)) for i, k in enumerate(kinds)]


def with_options(url: str, options: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(options)}"


@contextmanager
def store_pool(url: str) -> Iterator[Pool]:
    settings = DatabaseSettings(url=url, min_connections=1, max_connections=1)
    pool = open_pool(settings, migrate=False, name="chem-test-read")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def heap_order_pool(migrated_database_url: str) -> Iterator[Pool]:
    """Sequential scans only: rows come back in their physical order unless sorted. On a fresh
    database of its own: in the session's shared one, space freed by other tests (rolled-back
    inserts, then vacuum) would put the rows elsewhere than in the order they are written."""
    with store_pool(
        with_options(migrated_database_url, "-c enable_indexscan=off -c enable_bitmapscan=off")
    ) as pool:
        yield pool


def write_out_of_order(database_url: str, flow: UUID) -> list[FlowEvent]:
    """Insert the flow's rows in HEAP_ORDER, not by position; return the events by position."""
    wanted = events(flow)
    with psycopg.connect(database_url) as conn:
        for position in HEAP_ORDER:
            event = wanted[position]
            conn.execute(
                "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)"
                " VALUES (%s, %s, %s, %s, %s::jsonb)",
                [flow, position, event.ts, event.event_type, dumps(encode_kind(event.kind))],
            )
        physical = conn.execute(
            "SELECT flow_seq FROM event_log WHERE flow_id = %s ORDER BY ctid", [flow]
        ).fetchall()
    assert [row[0] for row in physical] == list(HEAP_ORDER)  # the precondition of the test
    return wanted


def test_list_returns_position_order_whatever_the_physical_order(
    migrated_database_url: str, heap_order_pool: Pool
) -> None:
    flow = uuid.uuid4()
    wanted = write_out_of_order(migrated_database_url, flow)
    got = PgEventStore(heap_order_pool).list(flow)
    assert [e.seq for e in got] == [0, 1, 2, 3]
    assert [(e.seq, e.kind, e.ts) for e in got] == [(e.seq, e.kind, e.ts) for e in wanted]


def test_an_identical_reappend_over_out_of_order_rows_is_a_no_op(
    migrated_database_url: str, heap_order_pool: Pool
) -> None:
    flow = uuid.uuid4()
    wanted = write_out_of_order(migrated_database_url, flow)
    store = PgEventStore(heap_order_pool)
    # the comparison reads positions 0..3 (events_in_range) and must pair them by position
    again = store.append_batch(flow, wanted)
    assert [e.seq for e in again] == [0, 1, 2, 3]
    extended = store.append_batch(
        flow, [*wanted[1:], FlowEvent(4, flow, StepStarted(2, "report"), T0)]
    )
    assert [e.seq for e in extended] == [1, 2, 3, 4]
    assert len(store.list(flow)) == 5


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/St_Johns"])
def test_timestamps_come_back_in_utc_from_a_session_in_another_zone(
    database_url: str, pool: Pool, zone: str
) -> None:
    flow = uuid.uuid4()
    wanted = events(flow)
    PgEventStore(pool).append_batch(flow, wanted)
    with store_pool(with_options(database_url, f"-c TimeZone={zone}")) as zoned_pool:
        with zoned_pool.connection() as conn:
            shown = conn.execute("SHOW TimeZone").fetchone()
        assert shown == (zone,)  # the precondition: this session is not in UTC
        got = PgEventStore(zoned_pool).list(flow)
    assert [e.ts for e in got] == [e.ts for e in wanted]  # the same instants...
    assert [e.ts.utcoffset() for e in got] == [timedelta(0)] * len(wanted)  # ...read as UTC
    assert [e.ts.isoformat() for e in got] == [e.ts.isoformat() for e in wanted]
    assert all(e.ts.tzinfo is UTC for e in got)


def test_a_naive_timestamp_is_refused_and_nothing_is_stored(pool: Pool) -> None:
    # Without the check the server would read it in its session's TimeZone: a silent shift.
    store = PgEventStore(pool)
    flow = uuid.uuid4()
    naive = datetime(2024, 9, 1, 12, 0)
    with pytest.raises(ValueError, match="no time zone"):
        store.append(flow, FlowInitialized("a" * 64, 1), naive)
    with pytest.raises(ValueError, match=r"events\[1\]\.ts"):
        store.append_batch(
            flow,
            [
                FlowEvent(0, flow, FlowInitialized("a" * 64, 1), T0),
                FlowEvent(1, flow, StepStarted(0, "acquire"), naive),
            ],
        )
    assert store.list(flow) == []
