"""The codec's fast paths, each beside its floor measured in the same run.

- encode + validate (``encode_envelope``, what the producer pays per event) against writing
  the same envelopes, already plain JSON values, with msgspec alone (no check at all);
- the worker's decode + validate (``decode_envelope``) against parsing the same entries with
  orjson (no check, no event built);
- ``PgEventStore.list`` of one long flow against fetching the same rows with psycopg and
  parsing every payload with orjson (kept, as the events are);
- read + replay of that flow (``list`` + ``InMemoryFlowRepository.load``).

orjson appears only here, as the floor a C parser sets; the codec itself is msgspec (see
``domain.codec``).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import orjson

from chem_persistence.domain.codec import kind_json
from chem_persistence.domain.events import FlowInitialized
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.producer.wire import decode_envelope, encode_envelope
from lab.bench.config import BenchError
from lab.bench.core import Bench
from lab.bench.data import flow_definition, flow_kinds
from lab.bench.measure import Row, Stopwatch

TARGET_ENCODE_US = 5.0
TARGET_DECODE_US = 5.0
TARGET_LIST_VS_FLOOR = 0.90
TARGET_REPLAY_EVENTS_PER_S = 100_000.0

#: The row keys, in report order.
KEYS = ("codec.encode", "codec.decode", "codec.list", "codec.replay")


def run_codec(bench: Bench) -> list[Row]:
    """Measure the four rows (each run also times its floor) and return them."""
    rows = [_encode_row(bench), _decode_row(bench)]
    rows += _read_rows(bench)
    return rows


def _per_event(
    bench: Bench,
    row: Row,
    n: int,
    subject: Callable[[], None],
    floors: Mapping[str, Callable[[], None]],
) -> Row:
    """Time ``subject`` over n events per run, and each floor right after it in the same run."""
    floor_rates: dict[str, list[float]] = {name: [] for name in floors}

    def once(watch: Stopwatch) -> None:
        watch.start()
        subject()
        watch.stop(n)
        for name, floor in floors.items():
            start = time.perf_counter()
            floor()
            floor_rates[name].append(n / (time.perf_counter() - start))

    bench.repeat(row, once)
    row.extra["us_per_event"] = 1e6 / row.median
    for name, rates in floor_rates.items():
        row.extra[f"{name}_events_per_s"] = statistics.median(rates)
        row.extra[f"{name}_us_per_event"] = 1e6 / statistics.median(rates)
    return row


def _encode_row(bench: Bench) -> Row:
    n = min(bench.scale.producer_events, len(bench.data.events))
    events = bench.data.events[:n]
    plain = [json.loads(e) for e in bench.data.envelopes[:n]]  # the same envelopes, as values
    encoder = msgspec.json.Encoder()
    row = bench.new_row(
        "codec.encode",
        "codec",
        "codec: encode + validate",
        f"{n:,} events, encode_envelope",
        notes="floor: msgspec writing the same envelopes from plain values, no check",
    )

    def subject() -> None:
        for event in events:
            encode_envelope(event)

    def floor() -> None:
        for value in plain:
            encoder.encode(value)

    def orjson_floor() -> None:
        for value in plain:
            orjson.dumps(value)

    return _per_event(bench, row, n, subject, {"floor": floor, "orjson": orjson_floor})


def _decode_row(bench: Bench) -> Row:
    n = min(bench.scale.producer_events, len(bench.data.events))
    entries = [e.encode() for e in bench.data.envelopes[:n]]  # what a worker reads from Redis
    decoder = msgspec.json.Decoder()
    row = bench.new_row(
        "codec.decode",
        "codec",
        "codec: worker decode + validate",
        f"{n:,} entries, decode_envelope",
        notes="floor: orjson parsing the same entries, no check, no event built",
    )

    def subject() -> None:
        for entry in entries:
            decode_envelope(entry)

    def floor() -> None:
        for entry in entries:
            orjson.loads(entry)

    def msgspec_floor() -> None:
        for entry in entries:
            decoder.decode(entry)

    return _per_event(bench, row, n, subject, {"floor": floor, "msgspec_untyped": msgspec_floor})


def _load_flow(bench: Bench, n: int) -> tuple[UUID, Any]:
    flow = uuid.uuid4()
    kinds = flow_kinds(9_100_000, n)
    first = kinds[0]
    assert isinstance(first, FlowInitialized)
    base = datetime.now(UTC) - timedelta(hours=2)
    bench.reset()
    statement = "COPY event_log (flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
    with bench.conn.cursor() as cur, cur.copy(statement) as copy:
        for position, kind in enumerate(kinds):
            ts = base + timedelta(microseconds=position)
            copy.write_row((flow, position, ts, kind.event_type, kind_json(kind).decode()))
    bench.conn.commit()
    with bench.conn.transaction():
        bench.conn.execute("ANALYZE event_log")  # as autovacuum would after a bulk load
    return flow, flow_definition(first.step_count)


def _fetch_and_parse(bench: Bench, flow: UUID) -> int:
    """The floor: the same rows fetched by psycopg (payload as text) and every payload
    parsed by orjson, the parsed values kept (as ``list`` keeps its events)."""
    with bench.conn.cursor() as cur:
        cur.execute(
            "SELECT seq, flow_seq, ts, payload::text FROM event_log "
            "WHERE flow_id = %s ORDER BY flow_seq",
            (flow,),
        )
        rows = cur.fetchall()
    bench.conn.commit()
    parsed = [orjson.loads(row[3]) for row in rows]
    return len(parsed)


def _read_rows(bench: Bench) -> list[Row]:
    n = bench.scale.replay_events
    flow, definition = _load_flow(bench, n)
    listed = bench.new_row(
        "codec.list",
        "codec",
        "codec: PgEventStore.list",
        f"one flow of {n:,} events",
        notes="floor: psycopg fetch of the same rows + orjson parse of every payload",
    )
    replayed = bench.new_row(
        "codec.replay",
        "codec",
        "codec: read + replay",
        f"one flow of {n:,} events, list + InMemoryFlowRepository.load",
        notes="floor: as for PgEventStore.list",
    )
    floors: list[float] = []
    replays: list[float] = []

    def once(watch: Stopwatch) -> None:
        start = time.perf_counter()
        if _fetch_and_parse(bench, flow) != n:
            raise BenchError(f"codec: the floor read fewer than {n} rows")
        floors.append(n / (time.perf_counter() - start))
        watch.start()
        events = bench.store.list(flow)
        watch.stop(n)
        instance = InMemoryFlowRepository.load(flow, events, definition)
        replays.append(n / (time.perf_counter() - watch.started))
        if len(events) != n or not instance.completed:
            raise BenchError(f"codec: read {len(events)} of {n} events")
        del events, instance

    # The harness's own objects must not tax the collections the new events trigger.
    gc.collect()
    gc.freeze()
    try:
        bench.repeat(listed, once)
    finally:
        gc.unfreeze()
    floor = statistics.median(floors)
    listed.extra["floor_events_per_s"] = floor
    listed.extra["ratio_to_floor"] = listed.median / floor
    replayed.runs = list(replays)
    replayed.extra["floor_events_per_s"] = floor
    replayed.extra["ratio_to_floor"] = replayed.median / floor
    bench.reset()
    return [listed, replayed]


def codec_targets(scenarios: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The four codec targets, each with the floor measured beside it."""
    by_key = {s["key"]: s for s in scenarios}
    targets: list[dict[str, Any]] = []

    def add(name: str, required: str, measured: str, met: bool) -> None:
        value, _, floor = measured.partition(" (")
        targets.append(
            {
                "target": name,
                "required": required,
                "measured": value,
                "reference": floor.rstrip(")") or "-",
                "met": met,
            }
        )

    if "codec.encode" in by_key:
        row = by_key["codec.encode"]
        us = 1e6 / row["median"]
        add(
            "producer encode + validate per event",
            f"≤ {TARGET_ENCODE_US:.0f} µs",
            f"{us:.2f} µs (floor: msgspec writing the same envelopes, no check, "
            f"{row['extra']['floor_us_per_event']:.2f} µs; orjson "
            f"{row['extra']['orjson_us_per_event']:.2f} µs)",
            us <= TARGET_ENCODE_US,
        )
    if "codec.decode" in by_key:
        row = by_key["codec.decode"]
        us = 1e6 / row["median"]
        add(
            "worker decode + validate per event",
            f"≤ {TARGET_DECODE_US:.0f} µs",
            f"{us:.2f} µs (floor: orjson parsing the same entries "
            f"{row['extra']['floor_us_per_event']:.2f} µs; msgspec untyped "
            f"{row['extra']['msgspec_untyped_us_per_event']:.2f} µs)",
            us <= TARGET_DECODE_US,
        )
    if "codec.list" in by_key:
        row = by_key["codec.list"]
        ratio = row["extra"]["ratio_to_floor"]
        add(
            "PgEventStore.list vs psycopg fetch + orjson parse of the same rows",
            f"≥ {TARGET_LIST_VS_FLOOR:.0%}",
            f"{ratio:.0%} ({row['median']:,.0f} events/s vs "
            f"{row['extra']['floor_events_per_s']:,.0f} events/s)",
            ratio >= TARGET_LIST_VS_FLOOR,
        )
    if "codec.replay" in by_key:
        row = by_key["codec.replay"]
        add(
            "read + replay of one flow (codec run)",
            f"≥ {TARGET_REPLAY_EVENTS_PER_S:,.0f} events/s",
            f"{row['median']:,.0f} events/s (floor: fetch + orjson parse "
            f"{row['extra']['floor_events_per_s']:,.0f} events/s)",
            row["median"] >= TARGET_REPLAY_EVENTS_PER_S,
        )
    return targets
