"""The domain's errors: the one base of every refused value, and the errors every event store
raises the same way, in memory and in PostgreSQL."""

from __future__ import annotations

from uuid import UUID

#: How much of an offending value a message shows.
SHOWN_CHARS = 200


class InvalidValue(ValueError):
    """A value refused where it is checked: ``field`` is the path to it
    (``StepFinished.outputs[1]``, ``payload.StepStarted.step_index``), ``value`` what was found
    there, ``why`` what is wrong.

    The base of every such error (a kind built wrong, JSON that cannot be stored, an envelope
    that cannot be decoded, an event the producer refuses); the message is built here only.
    """

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"{field}: {why} (got {value!r:.{SHOWN_CHARS}})")
        self.field = field
        self.value = value
        self.why = why


class InvalidKind(InvalidValue):
    """An event kind (or a CoreEngineError) built with a field of the wrong type or value."""


class StoreError(Exception):
    """Base of the event-store errors."""


class SeqConflict(StoreError):
    """A different event is already stored at this position of the flow: never overwritten."""

    def __init__(self, flow_id: UUID, seq: int, detail: str = "") -> None:
        super().__init__(
            f"flow {flow_id}: a different event is already stored at position {seq}"
            + (f" ({detail})" if detail else "")
        )
        self.flow_id = flow_id
        self.seq = seq


class SeqGap(StoreError):
    """The event's position is past the flow's next free position: events are missing before it."""

    def __init__(self, flow_id: UUID, seq: int, expected: int) -> None:
        super().__init__(
            f"flow {flow_id}: event at position {seq}, but the next position is {expected}"
        )
        self.flow_id = flow_id
        self.seq = seq
        self.expected = expected


class ArtifactHashMismatch(StoreError):
    """An artifact body whose content hash is not the hash it travels under."""

    def __init__(self, claimed: str, actual: str) -> None:
        super().__init__(f"artifact body hashes to {actual}, not to its claimed hash {claimed}")
        self.claimed = claimed
        self.actual = actual
