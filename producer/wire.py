"""The wire format: the versioned envelope of one event, and the Redis key names.

Envelope (JSON): {"v": 1, "flow_id", "seq", "ts", "event_type", "payload", "artifacts"?}
where payload is the kind's externally tagged JSON and artifacts, when the engine has the
bodies, is a list of {"hash", "kind", "payload", "metadata"} for outputs of a StepFinished.
Written and read by the codec (``domain.codec``); here the producer's and the worker's names
for it, with their error, InvalidEvent.

Per-flow keys share the hash tag ``{flow_id}`` so that one flow lives in one cluster slot.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from domain import codec
from domain.codec import ENVELOPE_VERSION
from domain.errors import InvalidValue
from domain.events import Artifact, FlowEvent

__all__ = ["ENVELOPE_VERSION", "InvalidEvent", "Keys", "decode_envelope", "encode_envelope"]


def now_ms() -> int:
    """Scores of the pending and parked indexes are Unix times in milliseconds."""
    return int(time.time() * 1000)


class InvalidEvent(InvalidValue):
    """An event the producer refuses (nothing was enqueued), or an entry a worker cannot
    decode. ``field`` names what is wrong, ``value`` what was found there."""


@dataclass(frozen=True)
class Keys:
    prefix: str

    def queue(self, flow_id: str) -> str:
        return f"{self.prefix}:{{{flow_id}}}:q"

    def lock(self, flow_id: str) -> str:
        return f"{self.prefix}:{{{flow_id}}}:lock"

    def dead(self, flow_id: str) -> str:
        return f"{self.prefix}:{{{flow_id}}}:dead"

    def job(self, flow_id: str) -> str:
        """The id of the last drain job enqueued for the flow (see reconcile)."""
        return f"{self.prefix}:{{{flow_id}}}:job"

    def parked(self, flow_id: str) -> str:
        return f"{self.prefix}:{{{flow_id}}}:parked"

    @property
    def pending(self) -> str:
        """Sorted set of flows owed a drain, scored by when they became pending (ms)."""
        return f"{self.prefix}:pending"

    @property
    def parked_index(self) -> str:
        """Sorted set of parked flows, scored by when they were parked (ms)."""
        return f"{self.prefix}:parked"

    def flow_keys(self, flow_id: str) -> list[str]:
        """Per-flow keys in the order the Lua scripts expect them."""
        return [self.queue(flow_id), self.lock(flow_id), self.dead(flow_id), self.parked(flow_id)]


def encode_envelope(
    event: FlowEvent, artifacts: Sequence[Artifact] = (), max_bytes: int | None = None
) -> str:
    """Validate everything, then write the envelope; InvalidEvent names the first bad field.
    An aware time with any UTC offset is written in UTC."""
    try:
        return codec.encode_envelope(event, artifacts, max_bytes).decode("utf-8")
    except InvalidValue as exc:
        raise InvalidEvent(exc.field, exc.value, exc.why) from exc


def decode_envelope(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    """The worker's side: parse and check an entry read from Redis; InvalidEvent if malformed
    (never another exception)."""
    try:
        return codec.decode_envelope(raw)
    except InvalidValue as exc:
        raise InvalidEvent(exc.field, exc.value, exc.why) from exc
