"""The wire format: the versioned envelope of one event, and the Redis key names.

Envelope (JSON): {"v": 1, "flow_id", "seq", "ts", "event_type", "payload", "artifacts"?}
where payload is the kind's externally tagged JSON and artifacts, when the engine has the
bodies, is a list of {"hash", "kind", "payload", "metadata"} for outputs of a StepFinished.

Per-flow keys share the hash tag ``{flow_id}`` so that one flow lives in one cluster slot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from domain.canonical import is_hash
from domain.codec import DecodeError, decode_kind, encode_kind
from domain.events import KIND_CLASSES, Artifact, FlowEvent, FlowEventKind, StepFinished
from domain.json_values import InvalidJson, JsonValue, check_json, dumps

ENVELOPE_VERSION = 1


def now_ms() -> int:
    """Scores of the pending and parked indexes are Unix times in milliseconds."""
    return int(time.time() * 1000)


class InvalidEvent(ValueError):
    """An event the producer refuses; nothing was enqueued. ``field`` names what is wrong."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"{field}: {why} (got {value!r:.200})")
        self.field = field
        self.value = value


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
    """Validate everything, then write the envelope; InvalidEvent names the first bad field."""
    flow_id = _flow_id(event.flow_id)
    if isinstance(event.seq, bool) or not isinstance(event.seq, int) or event.seq < 0:
        raise InvalidEvent("seq", event.seq, "must be a non-negative integer")
    if not isinstance(event.ts, datetime) or event.ts.utcoffset() is None:
        raise InvalidEvent("ts", event.ts, "must be a timezone-aware datetime")
    _check_utc_range(event.ts, event.ts)
    if not isinstance(event.kind, KIND_CLASSES):
        raise InvalidEvent("kind", event.kind, "not one of the seven event kinds")
    payload = _validated_payload(event)
    envelope: dict[str, JsonValue] = {
        "v": ENVELOPE_VERSION,
        "flow_id": flow_id,
        "seq": event.seq,
        "ts": event.ts.isoformat(),
        "event_type": event.event_type,
        "payload": payload,
    }
    if artifacts:
        envelope["artifacts"] = _artifacts(event, artifacts)
    text = dumps(envelope)
    if max_bytes is not None and len(text.encode("utf-8")) > max_bytes:
        size = len(text.encode("utf-8"))
        raise InvalidEvent("envelope", f"{size} bytes", f"larger than the limit of {max_bytes}")
    return text


def _flow_id(value: object) -> str:
    if isinstance(value, UUID):
        return str(value)
    raise InvalidEvent("flow_id", value, "must be a uuid.UUID")


def _validated_payload(event: FlowEvent) -> dict[str, JsonValue]:
    try:
        payload = encode_kind(event.kind)
        check_json(payload, "kind")
        decoded = decode_kind(json.loads(dumps(payload)))
    except (DecodeError, InvalidJson) as exc:
        raise InvalidEvent(exc.field, exc.value, _why(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidEvent("kind", event.kind, f"cannot be encoded: {exc}") from exc
    if decoded != event.kind:
        raise InvalidEvent(
            "kind", event.kind, "a field has the wrong type (it does not round-trip)"
        )
    if isinstance(event.kind, StepFinished):
        for i, output in enumerate(event.kind.outputs):
            if not is_hash(output):
                raise InvalidEvent(f"kind.outputs[{i}]", output, "not 64 lowercase hex characters")
    return payload


def _artifacts(event: FlowEvent, artifacts: Sequence[Artifact]) -> list[JsonValue]:
    if not isinstance(event.kind, StepFinished):
        raise InvalidEvent("artifacts", len(artifacts), "only a StepFinished carries artifacts")
    outputs = set(event.kind.outputs)
    result: list[JsonValue] = []
    for i, artifact in enumerate(artifacts):
        where = f"artifacts[{i}]"
        if not isinstance(artifact, Artifact):
            raise InvalidEvent(where, artifact, "must be a domain Artifact")
        if not isinstance(artifact.kind, str) or not artifact.kind:
            raise InvalidEvent(f"{where}.kind", artifact.kind, "must be a non-empty string")
        try:
            check_json(artifact.payload, f"{where}.payload")
            check_json(artifact.metadata, f"{where}.metadata")
        except InvalidJson as exc:
            raise InvalidEvent(exc.field, exc.value, _why(exc)) from exc
        if artifact.hash not in outputs:
            raise InvalidEvent(f"{where}.hash", artifact.hash, "is not among the event's outputs")
        body: dict[str, JsonValue] = {
            "hash": artifact.hash,
            "kind": artifact.kind,
            "payload": artifact.payload,
            "metadata": artifact.metadata,
        }
        result.append(body)
    return result


def decode_envelope(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    """The worker's side: parse and check an entry read from Redis; InvalidEvent if malformed.

    It accepts what ``encode_envelope`` writes and nothing else that could fail later: any
    other entry (garbage, nesting too deep for Python's json, text PostgreSQL cannot store,
    malformed artifact bodies) is an InvalidEvent, never another exception.
    """
    try:
        return _decode(raw)
    except RecursionError:
        raise InvalidEvent("envelope", raw[:80], "nested too deeply to decode") from None


def _decode(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent("envelope", raw[:80], f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent("envelope", data, "not a JSON object")
    version = data.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:  # not true, not 1.0
        raise InvalidEvent(
            "v", version, f"unsupported envelope version (expected {ENVELOPE_VERSION})"
        )
    flow = _field(data, "flow_id", str)
    try:
        flow_id = UUID(flow)
    except ValueError:
        raise InvalidEvent("flow_id", flow, "not a UUID") from None
    seq = _field(data, "seq", int)
    if isinstance(seq, bool) or seq < 0:
        raise InvalidEvent("seq", seq, "must be a non-negative integer")
    ts_text = _field(data, "ts", str)
    try:
        ts = datetime.fromisoformat(ts_text)
    except ValueError:
        raise InvalidEvent("ts", ts_text, "not an ISO 8601 time") from None
    if ts.utcoffset() is None:
        raise InvalidEvent("ts", ts_text, "has no time zone")
    _check_utc_range(ts, ts_text)
    try:
        check_json(data.get("payload"), "payload")  # every string storable, not only JSON data
        kind = decode_kind(data.get("payload"), "payload")
    except (DecodeError, InvalidJson) as exc:
        raise InvalidEvent(exc.field, exc.value, _why(exc)) from exc
    if data.get("event_type") != kind.event_type:
        raise InvalidEvent(
            "event_type", data.get("event_type"), f"does not match {kind.event_type}"
        )
    return FlowEvent(seq, flow_id, kind, ts), _decode_artifacts(kind, data.get("artifacts"))


def _decode_artifacts(kind: FlowEventKind, items: object) -> dict[str, Artifact]:
    """Artifact bodies under the rules ``_artifacts`` enforces when encoding."""
    if items is None or items == []:
        return {}
    if not isinstance(items, list):
        raise InvalidEvent("artifacts", items, "not a list")
    outputs = kind.outputs if isinstance(kind, StepFinished) else ()
    bodies: dict[str, Artifact] = {}
    for i, item in enumerate(items):
        where = f"artifacts[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
            raise InvalidEvent(where, item, "not an artifact object")
        unknown = sorted(set(item) - {"hash", "kind", "payload", "metadata"})
        if unknown:
            raise InvalidEvent(f"{where}.{unknown[0]}", item[unknown[0]], "unknown field")
        if not item["kind"]:
            raise InvalidEvent(f"{where}.kind", item["kind"], "must be a non-empty string")
        claimed = item.get("hash")
        if not is_hash(claimed) or claimed not in outputs:
            # (only a StepFinished has outputs: no other kind carries artifacts)
            raise InvalidEvent(f"{where}.hash", claimed, "is not among the event's outputs")
        try:
            check_json(item.get("payload"), f"{where}.payload")
            check_json(item.get("metadata"), f"{where}.metadata")
        except InvalidJson as exc:
            raise InvalidEvent(exc.field, exc.value, _why(exc)) from exc
        body = Artifact(item["kind"], item.get("payload"), item.get("metadata"))
        bodies[cast(str, claimed)] = body
    return bodies


def _check_utc_range(ts: datetime, shown: object) -> None:
    """The instant must exist as a UTC datetime: PostgreSQL would store it, but reading it
    back (psycopg, in UTC) would fail for ever."""
    try:
        ts.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent("ts", shown, "out of range once converted to UTC") from None


def _why(exc: DecodeError | InvalidJson) -> str:
    """The reason alone: InvalidEvent names the field and shows the value itself."""
    text = str(exc).removeprefix(f"{exc.field}: ")
    return text.removesuffix(f" (got {exc.value!r:.200})")


def _field(data: dict[str, Any], name: str, typ: type) -> Any:
    value = data.get(name)
    if not isinstance(value, typ):
        raise InvalidEvent(name, value, f"missing or not a {typ.__name__}")
    return value
