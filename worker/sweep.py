"""The sweep: move the queued events of many flows into PostgreSQL, in order, exactly once.

One cycle (see ARCHITECTURE.md, Queue protocol):
1. ``claim``: lease up to K of the shard's oldest ready flows under one fencing token and read
   their first entries, in one round trip (expired leases are reaped on the way);
2. decode and check every entry; ONE PostgreSQL transaction for all the flows
   (PgEventStore.append_flows), each flow judged alone;
3. ``ack``: one round trip for the whole claim, after COMMIT: remove exactly the committed
   entries, move each flow's poison entry to its dead letters (parking the flow), release.

A sweep killed after COMMIT and before the ack leaves the entries queued: its leases expire,
the flows are claimed again, and the idempotency key (flow_id, flow_seq) turns the re-append
into a no-op. A sweep that cannot store (PostgreSQL down past the retry budget) gives its
flows back unchanged and waits; nothing is ever dead-lettered for a transient reason.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from uuid import UUID

import redis.exceptions
from redis import Redis
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from chem_persistence.domain.batches import FlowBatch, FlowOutcome
from chem_persistence.domain.errors import ArtifactHashMismatch
from chem_persistence.domain.events import Artifact, FlowEvent
from chem_persistence.domain.store import check_artifact_bodies
from chem_persistence.eventlog.errors import sqlstate_of
from chem_persistence.producer.dead_letter import make_record, printable
from chem_persistence.producer.jobs import QUEUED_SWEEP_TTL_MS
from chem_persistence.producer.keys import ShardKeys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import InvalidEvent, decode_envelope
from chem_persistence.worker import metrics
from chem_persistence.worker.backoff import Backoff
from chem_persistence.worker.config import WorkerSettings

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
REASON_MAX_CHARS = 1000


class FlowsStore(Protocol):
    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> list[FlowOutcome]: ...


@dataclass(frozen=True)
class SweepHooks:
    """Seams for the lab's crash tests and benchmark; production passes none.

    ``before_commit``: inside the transaction, everything written, not yet committed.
    ``after_commit``: committed, not yet acked (the redelivery window).
    """

    before_commit: Callable[[], None] | None = None
    after_commit: Callable[[list[FlowOutcome]], None] | None = None


@dataclass(frozen=True)
class Claimed:
    flow_id: str
    removed: int  # the flow's count of removed entries when claimed (the ack checks it)
    entries: list[bytes]


@dataclass(frozen=True)
class _Poison:
    index: int  # into the flow's claimed entries
    error: BaseException
    position: int | None


@dataclass
class CycleResult:
    flows: int = 0
    events: int = 0  # entries removed from Redis (stored, or identical re-appends)
    parked: int = 0
    lost: int = 0  # flows whose lease was lost before the ack (someone else has them)
    full: bool = False  # the claim hit a limit: more flows are probably ready
    seconds: float = 0.0


@dataclass
class _Decoded:
    batch: FlowBatch
    poison: _Poison | None = None
    events: list[FlowEvent] = field(default_factory=list)


class StorageUnavailable(RuntimeError):
    """PostgreSQL could not take the claim (retries spent, or an unexpected error)."""


class Sweeper:
    """Runs cycles on one shard; ``run`` is the body of one rq sweep job."""

    def __init__(
        self,
        redis: Redis,
        store: FlowsStore,
        scripts: Scripts,
        settings: WorkerSettings,
        start_sweep: Callable[[str, int], None],
        hooks: SweepHooks | None = None,
    ) -> None:
        """``start_sweep(job_id, shard)`` enqueues the rq job of a sweep a script registered."""
        self.redis = redis
        self.store = store
        self.scripts = scripts
        self.settings = settings
        self.start_sweep = start_sweep
        self.hooks = hooks or SweepHooks()

    # --- one cycle -----------------------------------------------------------------------------

    def cycle(self, shard: ShardKeys, sweep_id: str) -> CycleResult:
        started = time.monotonic()
        token = secrets.token_hex(16)
        claimed = self._claim(shard, token, sweep_id)
        result = CycleResult(flows=len(claimed))
        if not claimed:
            return result
        result.full = len(claimed) >= self.settings.claim_flows or (
            sum(len(c.entries) for c in claimed) >= self.settings.batch_size
        )
        decoded = [_decode(c) for c in claimed]
        try:
            outcomes = self.store.append_flows(
                [d.batch for d in decoded if d.batch.events], self.hooks.before_commit
            )
        except Exception as exc:
            self._ack(shard, token, [(c, 0, None) for c in claimed])  # give them back
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if self.hooks.after_commit is not None:
            self.hooks.after_commit(outcomes)
        by_flow = {o.flow_id: o for o in outcomes}
        acks: list[tuple[Claimed, int, _Poison | None]] = []
        for c, d in zip(claimed, decoded, strict=True):
            outcome = by_flow.get(d.batch.flow_id)
            accepted = outcome.accepted if outcome is not None else 0
            poison = d.poison
            if outcome is not None and outcome.poison is not None:
                event = d.batch.events[accepted]
                poison = _Poison(accepted, outcome.poison, event.seq)
            acks.append((c, accepted, poison))
            if outcome is not None:
                _observe_stored(outcome.stored)
        _, lost, parked = self._ack(shard, token, acks)
        result.events = sum(n for _, n, _ in acks)
        result.parked, result.lost = parked, lost
        result.seconds = time.monotonic() - started
        metrics.CYCLES.labels("work").inc()
        metrics.CLAIMED_FLOWS.observe(len(claimed))
        metrics.BATCH_SIZE.observe(result.events)
        metrics.APPEND_SECONDS.observe(result.seconds)
        if lost:
            log.warning("action=lease_lost shard=%d flows=%d", shard.shard, lost)
        return result

    def _claim(self, shard: ShardKeys, token: str, sweep_id: str) -> list[Claimed]:
        keys = [shard.ready, shard.leased, shard.leases, shard.removed, shard.sweeps]
        args: list[str | int] = [
            shard.base,
            self.settings.claim_flows,
            self.settings.batch_size,
            self.settings.batch_bytes,
            self.settings.lease_ttl_ms,
            token,
            sweep_id,
            self.settings.lease_ttl_ms,
        ]
        reply = cast(list[Any], self.scripts.claim(keys=keys, args=args))
        if reply[1]:
            metrics.REAPED.inc(int(reply[1]))
            log.info("action=reap shard=%d flows=%d", shard.shard, reply[1])
        return [Claimed(f.decode(), int(r), list(e)) for f, r, e in reply[2:]]

    def _ack(
        self,
        shard: ShardKeys,
        token: str,
        acks: Sequence[tuple[Claimed, int, _Poison | None]],
    ) -> tuple[int, int, int]:
        """One ack for the claim; retried (it is safe to replay) until the leases would lapse."""
        args: list[str | int | bytes] = [shard.base, token]
        for claimed, count, poison in acks:
            if poison is None:
                args += [claimed.flow_id, claimed.removed, count, "", "", ""]
                continue
            entry = claimed.entries[poison.index]
            reason = printable(
                f"{type(poison.error).__name__} at position {poison.position}: {poison.error}"
            )
            record = make_record(entry, poison.error, poison.position, sqlstate_of(poison.error))
            args += [
                claimed.flow_id,
                claimed.removed,
                count,
                entry,
                record,
                reason[:REASON_MAX_CHARS],
            ]
            metrics.DEAD_LETTERS.labels(type(poison.error).__name__).inc()
            log.error(
                "action=dead_letter flow=%s position=%s reason=%s",
                claimed.flow_id,
                poison.position,
                type(poison.error).__name__,
            )
        keys = [shard.ready, shard.leased, shard.leases, shard.removed, shard.parked, shard.wake]
        try:
            reply = self.scripts.ack(keys=keys, args=args)  # no retry machinery when it works
        except REDIS_ERRORS:
            retrying = Retrying(
                retry=retry_if_exception_type(REDIS_ERRORS),
                stop=stop_after_delay(self.settings.lease_ttl_ms / 1000),
                wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
                reraise=True,
            )
            reply = retrying(lambda: self.scripts.ack(keys=keys, args=args))
        released, lost, parked = (int(x) for x in cast(list[Any], reply))
        return released, lost, parked

    # --- the job's loop ------------------------------------------------------------------------

    def run(
        self,
        shard: ShardKeys,
        sweep_id: str,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[SweepTotals], None] | None = None,
        max_sweeps: Callable[[], int] = lambda: 1,
    ) -> SweepTotals:
        """Cycle until the slice ends (then hand over) or idle for the linger period, or stop.

        Transient trouble (Redis or PostgreSQL away) is waited out with backoff: the job
        never fails for it. Returns what the sweep did.
        """
        settings = self.settings
        totals = SweepTotals(shard.shard, sweep_id)
        started = time.monotonic()
        idle_since: float | None = None
        trouble = Backoff()
        last_progress = last_spawn = 0.0
        while True:
            now = time.monotonic()
            if (
                stop is not None and stop.is_set()
            ) or now - started >= settings.sweep_slice_seconds:
                totals.successor = self._end(
                    shard, sweep_id, handing_over=True, max_sweeps=max_sweeps
                )
                return totals
            try:
                result = self.cycle(shard, sweep_id)
                trouble.reset()
            except (StorageUnavailable, *REDIS_ERRORS) as exc:
                trouble.wait(exc, stop)
                continue
            totals.add(result)
            if result.flows:
                idle_since = None
                if result.full and now - last_spawn >= 1.0:
                    last_spawn = now
                    self._spawn(shard, max_sweeps())
            else:
                idle_since = idle_since or now
                if now - idle_since >= settings.sweep_linger_seconds:
                    if self._end(shard, sweep_id, handing_over=False, max_sweeps=max_sweeps) == 1:
                        return totals
                    idle_since = None  # a flow became ready meanwhile: go on
                else:
                    self._wait_for_wake(shard, stop)
            if progress is not None and now - last_progress >= 2.0:
                last_progress = now
                progress(totals)

    def _wait_for_wake(self, shard: ShardKeys, stop: threading.Event | None) -> None:
        try:
            self.redis.blpop([shard.wake], timeout=self.settings.wake_wait_seconds)
        except REDIS_ERRORS:
            if stop is not None:
                stop.wait(self.settings.wake_wait_seconds)

    def _spawn(self, shard: ShardKeys, max_sweeps: int) -> None:
        try:
            job_id = self.scripts.spawn(
                keys=[shard.ready, shard.sweeps],
                args=[shard.base, QUEUED_SWEEP_TTL_MS, max_sweeps],
            )
        except REDIS_ERRORS:
            return
        if isinstance(job_id, bytes):
            self.start_sweep(job_id.decode(), shard.shard)

    def _end(
        self,
        shard: ShardKeys,
        sweep_id: str,
        *,
        handing_over: bool,
        max_sweeps: Callable[[], int],
    ) -> int | str:
        args: list[str | int] = [
            shard.base,
            sweep_id,
            int(handing_over),
            QUEUED_SWEEP_TTL_MS,
            max_sweeps(),
        ]
        try:
            reply = self.scripts.sweep_end(keys=[shard.ready, shard.sweeps], args=args)
        except REDIS_ERRORS:
            return 1  # leave; the periodic check starts a sweep if flows are ready
        if isinstance(reply, bytes):
            self.start_sweep(reply.decode(), shard.shard)
            return reply.decode()
        return int(reply)


@dataclass
class SweepTotals:
    shard: int
    sweep_id: str
    cycles: int = 0
    flows: int = 0
    events: int = 0
    parked: int = 0
    successor: int | str = 0

    def add(self, result: CycleResult) -> None:
        if result.flows:
            self.cycles += 1
        self.flows += result.flows
        self.events += result.events
        self.parked += result.parked

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "cycles": self.cycles,
            "flows": self.flows,
            "events": self.events,
            "parked": self.parked,
        }


def _decode(claimed: Claimed) -> _Decoded:
    """The claimed entries as events, up to the first one that can never be stored."""
    flow_id = UUID(claimed.flow_id)
    events: list[FlowEvent] = []
    bodies: list[dict[str, Artifact]] = []
    poison: _Poison | None = None
    for i, entry in enumerate(claimed.entries):
        position: int | None = None  # unknown until the entry decodes
        try:
            event, event_bodies = decode_envelope(entry)
            if event.flow_id != flow_id:
                raise InvalidEvent("flow_id", str(event.flow_id), f"queued under flow {flow_id}")
            position = event.seq  # a body that does not match its hash still names its event
            check_artifact_bodies(event_bodies)
        except (InvalidEvent, ArtifactHashMismatch) as exc:
            poison = _Poison(i, exc, position)
            break
        events.append(event)
        bodies.append(event_bodies)
    return _Decoded(FlowBatch(flow_id, events, bodies), poison)


def _observe_stored(stored: Sequence[FlowEvent]) -> None:
    if not stored:
        return
    committed = time.time()
    metrics.EVENTS_APPENDED.inc(len(stored))
    for event in stored:
        metrics.EMIT_TO_DURABLE_SECONDS.observe(max(0.0, committed - event.ts.timestamp()))
