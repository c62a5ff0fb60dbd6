"""The producer's cost per event (engine side, no worker running), against one raw EVALSHA round
trip of a trivial 3-command script carrying the same envelope, and a PING."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from chem_persistence.domain.events import FlowEvent
from lab.bench.config import SUSTAINED_CHUNK, say
from lab.bench.core import Bench
from lab.bench.measure import chunks

#: The reference: one EVALSHA of a script of three commands (the envelope pushed, an index
#: touched, a length read back), on the same connection, with the same envelope.
RAW_SCRIPT = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[2])
return redis.call('LLEN', KEYS[1])
"""


def run_producer_costs(bench: Bench) -> None:
    """``emit`` as the trickle sees it: every event goes to a flow whose queue is empty (a
    new flow each time: the flow becomes ready, a sweep is asked for if none is queued), and
    as a busy flow sees it (its queue already holds events). No worker runs."""
    n = bench.scale.producer_events
    data = bench.data.head(min(n, len(bench.data.events)))
    producer = bench.producer
    raw = bench.redis.register_script(RAW_SCRIPT)
    results: dict[str, Any] = {"events": n}
    template, envelopes = data.events, data.envelopes
    prefix = bench.env.key_prefix

    def first_events() -> list[FlowEvent]:
        # the data set's events (same kinds and sizes as the raw script's envelopes), each at
        # position 0 of a new flow: every emit finds its flow idle (the trickle's case)
        return [
            FlowEvent(0, uuid.uuid4(), template[i % len(template)].kind, template[0].ts)
            for i in range(n)
        ]

    def measure(
        name: str, label: str, prepare: Callable[[], Any], fn: Callable[[Any], int]
    ) -> None:
        times = []
        for _ in range(bench.scale.runs):
            bench.reset_all()
            arg = prepare()
            start = time.perf_counter()
            count = fn(arg)
            times.append((time.perf_counter() - start) / count * 1e6)
        results[name] = {
            "label": label,
            "us_per_event": statistics.median(times),
            "min_us": min(times),
            "max_us": max(times),
        }
        say(f"producer {label}: {statistics.median(times):.1f} µs/event")

    def emit_each(events: list[FlowEvent]) -> int:
        for event in events:
            producer.emit(event)
        return len(events)

    def encoded() -> list[tuple[str, str]]:
        return [(str(e.flow_id), producer.encode(e)) for e in first_events()]

    def send_each(pairs: list[tuple[str, str]]) -> int:
        for flow, envelope in pairs:
            producer.send(flow, [envelope])
        return len(pairs)

    def encode_each(events: list[FlowEvent]) -> int:
        for event in events:
            producer.encode(event)
        return len(events)

    def emit_many(events: list[FlowEvent]) -> int:
        for chunk in chunks(events, SUSTAINED_CHUNK):
            producer.emit_many(chunk)
        return len(events)

    def raw_evalsha(_: object) -> int:
        keys = [f"{prefix}:raw:q", f"{prefix}:raw:z"]
        for i in range(n):
            raw(keys=keys, args=[envelopes[i % len(envelopes)], i])
        return n

    def ping(_: object) -> int:
        for _i in range(n):
            bench.redis.ping()
        return n

    measure("emit", "emit, each to an idle flow (the trickle's case)", first_events, emit_each)
    measure(
        "emit_busy",
        "emit, to flows whose queues hold events",
        lambda: list(data.events),
        emit_each,
    )
    measure("send", "send (pre-encoded: the emit script alone)", encoded, send_each)
    measure("encode", "encode only (validate + serialize)", first_events, encode_each)
    measure(
        "emit_many", f"emit_many ({SUSTAINED_CHUNK:,} events per call)", first_events, emit_many
    )
    raw_evalsha(None)  # loads the script: the timed calls are EVALSHA hits
    measure("raw_evalsha", "raw EVALSHA of a 3-command script, same envelope", list, raw_evalsha)
    measure("ping", "PING round trip", list, ping)
    bench.reset_all()
    emit, reference = results["emit"]["us_per_event"], results["raw_evalsha"]["us_per_event"]
    results["emit_vs_evalsha"] = emit / reference
    results["lua_share_us"] = emit - results["encode"]["us_per_event"]
    bench.results["producer"] = results
