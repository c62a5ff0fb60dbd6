"""The wire format: the versioned envelope of one event (the key names are in keys.py).

Envelope (JSON): {"v": 1, "flow_id", "seq", "ts", "event_type", "payload", "artifacts"?}
where payload is the kind's externally tagged JSON and artifacts, when the engine has the
bodies, is a list of {"hash", "kind", "payload", "metadata"} for outputs of a StepFinished.
Written and read by the codec (``domain.codec``); here the producer's and the worker's names
for it, with their error, InvalidEvent.
"""

from __future__ import annotations

from collections.abc import Sequence

from chem_persistence.domain import codec
from chem_persistence.domain.codec import ENVELOPE_VERSION
from chem_persistence.domain.errors import InvalidValue
from chem_persistence.domain.events import Artifact, FlowEvent

__all__ = ["ENVELOPE_VERSION", "InvalidEvent", "decode_envelope", "encode_envelope"]


class InvalidEvent(InvalidValue):
    """An event the producer refuses (nothing was enqueued), or an entry a worker cannot
    decode. ``field`` names what is wrong, ``value`` what was found there."""


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
