"""The producer's cost per event (engine side, no worker running): emit, encode, send,
emit_many, send_many and raw RPUSH, with the Redis round trips each takes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.serializers import JSONSerializer

from lab.bench.config import SUSTAINED_CHUNK, say
from lab.bench.core import Bench
from lab.bench.measure import CountingConnection, chunks, ping_rtt_us
from lab.bench.servers import delete_keys
from producer.producer import Producer


def run_producer_costs(bench: Bench) -> None:
    """Engine-side cost, no worker running (every flow stays pending after its first
    event: the steady state of a busy flow). Round trips counted by the connection."""
    n = min(bench.scale.producer_events, len(bench.data.events))
    data = bench.data.head(n)
    counting = Producer(bench.counting_redis, bench.env.queue_settings)
    by_flow = data.by_flow()
    results: dict[str, Any] = {"events": n, "flows": len(by_flow)}

    def measure(name: str, label: str, fn: Callable[[], None]) -> None:
        ping = ping_rtt_us(bench.redis)
        times, trips = [], []
        for _ in range(bench.scale.runs):
            delete_keys(bench.redis, f"{bench.env.key_prefix}:*")
            Queue(bench.env.queue_name, connection=bench.redis, serializer=JSONSerializer).empty()  # type: ignore[no-untyped-call]
            CountingConnection.sends = 0
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) / n * 1e6)
            trips.append(CountingConnection.sends / n)
        results[name] = {
            "label": label,
            "us_per_event": statistics.median(times),
            "min_us": min(times),
            "max_us": max(times),
            "events_per_s": 1e6 / statistics.median(times),
            "round_trips_per_event": statistics.median(trips),
            "ping_us": ping,
        }
        say(f"producer {label}: {statistics.median(times):.1f} µs/event")

    def emit_each() -> None:
        for event in data.events:
            counting.emit(event)

    def send_each() -> None:
        for event, envelope in zip(data.events, data.envelopes, strict=True):
            counting.send(str(event.flow_id), [envelope])

    def encode_only() -> None:
        for event in data.events:
            counting.encode(event)

    def emit_many() -> None:
        for chunk in chunks(data.events, SUSTAINED_CHUNK):
            counting.emit_many(chunk)

    def send_many() -> None:
        for start in range(0, n, SUSTAINED_CHUNK):
            grouped: dict[str, list[str]] = {}
            for event, envelope in zip(
                data.events[start : start + SUSTAINED_CHUNK],
                data.envelopes[start : start + SUSTAINED_CHUNK],
                strict=True,
            ):
                grouped.setdefault(str(event.flow_id), []).append(envelope)
            counting.send_many(grouped)

    def raw_rpush() -> None:
        keys = counting.keys
        for start in range(0, n, SUSTAINED_CHUNK):
            grouped: dict[str, list[str]] = {}
            for event, envelope in zip(
                data.events[start : start + SUSTAINED_CHUNK],
                data.envelopes[start : start + SUSTAINED_CHUNK],
                strict=True,
            ):
                grouped.setdefault(str(event.flow_id), []).append(envelope)
            pipe = bench.counting_redis.pipeline(transaction=False)
            for flow, envelopes in grouped.items():
                pipe.rpush(keys.queue(flow), *envelopes)
            pipe.execute()

    def raw_rpush_each() -> None:
        keys = counting.keys
        for start in range(0, n, SUSTAINED_CHUNK):
            pipe = bench.counting_redis.pipeline(transaction=False)
            for event, envelope in zip(
                data.events[start : start + SUSTAINED_CHUNK],
                data.envelopes[start : start + SUSTAINED_CHUNK],
                strict=True,
            ):
                pipe.rpush(keys.queue(str(event.flow_id)), envelope)
            pipe.execute()

    measure("emit", "emit (one event, validated + sent)", emit_each)
    measure("encode", "encode only (validate + serialize)", encode_only)
    measure("send", "send (one pre-encoded envelope: the Lua call)", send_each)
    measure("emit_many", f"emit_many ({SUSTAINED_CHUNK:,} events per call)", emit_many)
    measure("send_many", "send_many (pre-encoded envelopes, Lua)", send_many)
    measure("raw_rpush", "raw RPUSH, pipelined (same envelopes, grouped per flow)", raw_rpush)
    measure("raw_rpush_each", "raw RPUSH, pipelined, one command per envelope", raw_rpush_each)
    delete_keys(bench.redis, f"{bench.env.key_prefix}:*")
    Queue(bench.env.queue_name, connection=bench.redis, serializer=JSONSerializer).empty()  # type: ignore[no-untyped-call]
    bench.producer_costs = results
