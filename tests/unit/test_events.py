"""The kinds take what a Python caller naturally passes, stay immutable, and refuse a value of
the wrong type when they are built, naming the field path and the value."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
import pytest
from hypothesis import assume, given, settings

from chem_persistence.domain.errors import InvalidKind, InvalidValue
from chem_persistence.domain.events import (
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    InvalidTransition,
    MessageError,
    PropertyPreferenceAssigned,
    RetryNotAllowed,
    StepFailed,
    StepFinished,
    StepSignal,
    StepStarted,
    UnitError,
)
from chem_persistence.domain.json_values import InvalidJson, text_ok
from chem_persistence.producer.wire import decode_envelope, encode_envelope
from tests.fuzz_strategies import bad_fields

H1 = "a" * 64
H2 = "b" * 64
FP = "c" * 64
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_the_natural_call_with_a_list_of_outputs_is_accepted_and_kept_immutable() -> None:
    outputs = [H1, H2]
    kind = StepFinished(step_index=0, step_id="s", outputs=outputs, fingerprint=FP)  # type: ignore[arg-type]
    assert kind.outputs == (H1, H2) and type(kind.outputs) is tuple
    outputs.append("changed later")
    assert kind.outputs == (H1, H2)
    with pytest.raises(AttributeError):
        kind.step_index = 1  # type: ignore[misc]
    event = FlowEvent(0, UUID(int=1), kind, T0)
    assert decode_envelope(encode_envelope(event)) == (event, {})
    assert kind == StepFinished(0, "s", (H1, H2), FP)
    assert hash(kind) == hash(StepFinished(0, "s", (H1, H2), FP))


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (lambda: StepStarted("0", "a"), "StepStarted.step_index", "0"),
        (lambda: StepStarted(True, "a"), "StepStarted.step_index", True),
        (lambda: StepStarted(1.0, "a"), "StepStarted.step_index", 1.0),
        (lambda: StepStarted(-1, "a"), "StepStarted.step_index", -1),
        (lambda: StepStarted(0, 7), "StepStarted.step_id", 7),
        (lambda: StepStarted(0, "a\x00"), "StepStarted.step_id", "a\x00"),
        (lambda: StepStarted(0, "\ud800"), "StepStarted.step_id", "\ud800"),
        (lambda: FlowInitialized(H1, 2.0), "FlowInitialized.step_count", 2.0),
        (lambda: StepFinished(0, "s", [H1, 2], FP), "StepFinished.outputs[1]", 2),
        (lambda: StepFinished(0, "s", H1, FP), "StepFinished.outputs", H1),
        (lambda: StepFinished(0, "s", None, FP), "StepFinished.outputs", None),
        (lambda: StepFinished(0, "s", (), None), "StepFinished.fingerprint", None),
        (lambda: StepFailed(0, "s", "MissingInputs", FP), "StepFailed.error", "MissingInputs"),
        (lambda: StepSignal(0, "s", "S", {"x": [1, float("inf")]}), "StepSignal.data.x[1]", None),
        (lambda: StepSignal(0, "s", "S", {1: "one"}), "StepSignal.data", 1),
        (lambda: StepSignal(0, "s", "S", (1, 2)), "StepSignal.data", (1, 2)),
        (
            lambda: PropertyPreferenceAssigned("k", "p", H1, {"s": {1}}),
            "PropertyPreferenceAssigned.rationale.s",
            {1},
        ),
        (lambda: FlowCompleted(b"fp"), "FlowCompleted.flow_fingerprint", b"fp"),
        (lambda: UnitError("Nope"), "UnitError.variant", "Nope"),
        (lambda: MessageError("MissingInputs", "m"), "MessageError.variant", "MissingInputs"),
        (lambda: MessageError("Internal", 5), "MessageError.message", 5),
        (lambda: InvalidTransition(None, "b"), "InvalidTransition.from_state", None),
        (lambda: RetryNotAllowed("s", False), "RetryNotAllowed.reason", False),
    ],
)
def test_a_wrong_value_fails_at_construction_naming_the_field_and_the_value(
    build: object, field: str, value: object
) -> None:
    with pytest.raises(InvalidValue) as caught:
        build()  # type: ignore[operator]
    error = caught.value
    assert isinstance(error, InvalidKind | InvalidJson) and isinstance(error, ValueError)
    assert error.field == field
    assert str(error) == f"{field}: {error.why} (got {error.value!r:.200})"
    if value is not None:
        assert repr(error.value) == repr(value)


def _storable(item: object) -> bool:
    return isinstance(item, str) and text_ok(item)


@settings(max_examples=200, deadline=None)
@given(bad_fields())
def test_any_bad_field_fails_at_construction(case: tuple[FlowEventKind, str, object]) -> None:
    kind, name, bad = case
    # a string that is no hash is still a string: the producer refuses it (by its format)
    assume(not (name == "outputs" and isinstance(bad, tuple) and all(map(_storable, bad))))
    fields = {f: getattr(kind, f) for f in kind.__struct_fields__}
    with pytest.raises(InvalidValue) as caught:
        type(kind)(**{**fields, name: bad})
    assert caught.value.field.startswith(f"{type(kind).__name__}.{name}")


@settings(max_examples=50, deadline=None)
@given(bad_fields())
def test_replace_checks_like_the_constructor(case: tuple[FlowEventKind, str, object]) -> None:
    kind, name, bad = case
    assume(not (name == "outputs" and isinstance(bad, tuple) and all(map(_storable, bad))))
    with pytest.raises(InvalidValue):
        msgspec.structs.replace(kind, **{name: bad})


def test_every_refusal_is_one_error_type_with_field_value_and_why() -> None:
    """The codec's DecodeError, the JSON checks' InvalidJson, the kinds' InvalidKind and the
    producer's InvalidEvent share one base, whose message is built in one place."""
    from chem_persistence.domain.codec import DecodeError
    from chem_persistence.producer.wire import InvalidEvent

    for cls in (DecodeError, InvalidJson, InvalidKind, InvalidEvent):
        error = cls("kind.StepStarted.step_id", 7, "expected a string")
        assert isinstance(error, InvalidValue) and isinstance(error, ValueError)
        assert (error.field, error.value, error.why) == (
            "kind.StepStarted.step_id",
            7,
            "expected a string",
        )
        assert str(error) == "kind.StepStarted.step_id: expected a string (got 7)"
    with pytest.raises(InvalidEvent) as caught:
        encode_envelope(FlowEvent(0, UUID(int=1), StepStarted(0, "a"), datetime(2024, 5, 1)))
    assert (caught.value.field, caught.value.why) == ("ts", "must be a timezone-aware datetime")
    assert str(caught.value).count("(got ") == 1
