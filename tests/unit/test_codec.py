"""The event kinds' JSON: externally tagged exactly as the engine writes it, decoded strictly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest

from chem_persistence.domain.codec import (
    DecodeError,
    decode_error,
    decode_kind,
    encode_error,
    encode_kind,
)
from chem_persistence.domain.events import (
    EVENT_TYPES,
    KIND_CLASSES,
    MESSAGE_ERRORS,
    UNIT_ERRORS,
    CoreEngineError,
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
from chem_persistence.domain.json_values import dumps

H1 = "a" * 64
H2 = "b" * 64
FP = "c" * 64

ALL_ERRORS: list[CoreEngineError] = [
    *(UnitError(v) for v in UNIT_ERRORS),
    *(MessageError(v, f"{v} happened: é") for v in MESSAGE_ERRORS),
    InvalidTransition("Pending", "FinishedOk"),
    RetryNotAllowed("acquire", "not a failed step"),
]

ONE_OF_EACH_KIND: list[FlowEventKind] = [
    FlowInitialized(H1, 4),
    StepStarted(0, "acquire"),
    StepFinished(1, "properties", (H1, H2), FP),
    StepFinished(2, "empty", (), FP),
    StepFailed(3, "choose", UnitError("MissingInputs"), FP),
    StepSignal(0, "acquire", "ACQUIRED", {"count": 3, "names": ["β-carotène", None, 1.5, True]}),
    StepSignal(0, "acquire", "NOTHING", None),
    PropertyPreferenceAssigned("weight", "minvar", H2, {"why": "lowest variance", "n": 2}),
    PropertyPreferenceAssigned("logp", "first", H2, None),
    FlowCompleted(FP),
]

ALL_KINDS: list[FlowEventKind] = [
    *ONE_OF_EACH_KIND,
    *(StepFailed(1, "properties", error, FP) for error in ALL_ERRORS),
]


def test_the_samples_cover_every_kind_and_every_error_variant() -> None:
    assert {type(k) for k in ALL_KINDS} == set(KIND_CLASSES)
    assert len(KIND_CLASSES) == 7
    variants = {getattr(e, "variant", type(e).__name__) for e in ALL_ERRORS}
    assert variants == {*UNIT_ERRORS, *MESSAGE_ERRORS, "InvalidTransition", "RetryNotAllowed"}
    assert len(UNIT_ERRORS) == 6 and len(MESSAGE_ERRORS) == 3


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS, ids=repr)
def test_kind_round_trips_through_encode_decode(kind: FlowEventKind) -> None:
    encoded = encode_kind(kind)
    assert list(encoded) == [type(kind).__name__]
    assert decode_kind(encoded) == kind


@pytest.mark.parametrize("kind", ALL_KINDS, ids=repr)
def test_kind_round_trips_through_json_text(kind: FlowEventKind) -> None:
    text = json.dumps(encode_kind(kind))
    decoded = decode_kind(json.loads(text))
    assert decoded == kind
    assert type(decoded) is type(kind)
    # and through the pipeline's own serializer
    assert decode_kind(json.loads(dumps(encode_kind(kind)))) == kind


@pytest.mark.parametrize("error", ALL_ERRORS, ids=repr)
def test_error_round_trips_through_json_text(error: CoreEngineError) -> None:
    text = json.dumps(encode_error(error))
    assert decode_error(json.loads(text)) == error


def test_decoded_outputs_are_a_tuple_like_the_kind_holds() -> None:
    decoded = decode_kind({"StepFinished": {**_FINISHED, "outputs": [H1, H2]}})
    assert isinstance(decoded, StepFinished)
    assert decoded.outputs == (H1, H2)


# --- golden JSON (the engine's own serialization, byte for byte) ------------------------------


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (StepStarted(0, "acquire"), '{"StepStarted":{"step_index":0,"step_id":"acquire"}}'),
        (
            FlowInitialized("d" * 64, 3),
            '{"FlowInitialized":{"definition_hash":"' + "d" * 64 + '","step_count":3}}',
        ),
        (
            StepFinished(2, "report", ("h1", "h2"), "fp"),
            '{"StepFinished":{"step_index":2,"step_id":"report","outputs":["h1","h2"],'
            '"fingerprint":"fp"}}',
        ),
        (
            StepFailed(1, "properties", UnitError("MissingInputs"), "fp"),
            '{"StepFailed":{"step_index":1,"step_id":"properties","error":"MissingInputs",'
            '"fingerprint":"fp"}}',
        ),
        (
            StepFailed(1, "p", MessageError("PolicyViolation", "msg"), "fp"),
            '{"StepFailed":{"step_index":1,"step_id":"p","error":{"PolicyViolation":"msg"},'
            '"fingerprint":"fp"}}',
        ),
        (
            StepFailed(0, "s", InvalidTransition("a", "b"), "fp"),
            '{"StepFailed":{"step_index":0,"step_id":"s",'
            '"error":{"InvalidTransition":{"from":"a","to":"b"}},"fingerprint":"fp"}}',
        ),
        (
            StepSignal(0, "acquire", "ACQUIRED", {"count": 3}),
            '{"StepSignal":{"step_index":0,"step_id":"acquire","signal":"ACQUIRED",'
            '"data":{"count":3}}}',
        ),
        (
            PropertyPreferenceAssigned("weight", "minvar", "ph", {"why": "é"}),
            '{"PropertyPreferenceAssigned":{"property_key":"weight","policy_id":"minvar",'
            '"params_hash":"ph","rationale":{"why":"é"}}}',
        ),
        (FlowCompleted("ff"), '{"FlowCompleted":{"flow_fingerprint":"ff"}}'),
    ],
)
def test_golden_kind_json(kind: FlowEventKind, expected: str) -> None:
    assert _compact(encode_kind(kind)) == expected
    assert decode_kind(json.loads(expected)) == kind


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        *((UnitError(v), f'"{v}"') for v in UNIT_ERRORS),
        (MessageError("PolicyViolation", "msg"), '{"PolicyViolation":"msg"}'),
        (MessageError("StorageError", "disk"), '{"StorageError":"disk"}'),
        (MessageError("Internal", "boom"), '{"Internal":"boom"}'),
        (InvalidTransition("a", "b"), '{"InvalidTransition":{"from":"a","to":"b"}}'),
        (
            RetryNotAllowed("acquire", "why"),
            '{"RetryNotAllowed":{"step_id":"acquire","reason":"why"}}',
        ),
    ],
)
def test_golden_error_json(error: CoreEngineError, expected: str) -> None:
    assert _compact(encode_error(error)) == expected
    assert decode_error(json.loads(expected)) == error


def test_a_unit_error_is_a_bare_string() -> None:
    assert encode_error(UnitError("MissingInputs")) == "MissingInputs"


# --- event_type -------------------------------------------------------------------------------


def test_event_types_are_the_seven_lowercase_kind_names() -> None:
    assert EVENT_TYPES == (
        "flowinitialized",
        "stepstarted",
        "stepfinished",
        "stepfailed",
        "stepsignal",
        "propertypreferenceassigned",
        "flowcompleted",
    )


@pytest.mark.parametrize("kind", ONE_OF_EACH_KIND, ids=repr)
def test_event_type_is_the_lowercase_kind_name(kind: FlowEventKind) -> None:
    name = type(kind).__name__
    assert kind.event_type == name.lower()
    event = FlowEvent(0, UUID(int=1), kind, datetime(2024, 1, 1, tzinfo=UTC))
    assert event.event_type == name.lower()
    assert event.event_type in EVENT_TYPES


# --- strict decoding --------------------------------------------------------------------------

_STARTED = {"step_index": 0, "step_id": "acquire"}
_FINISHED = {"step_index": 0, "step_id": "acquire", "outputs": [H1], "fingerprint": FP}


def _failed(error: object) -> dict[str, object]:
    return {"StepFailed": {"step_index": 1, "step_id": "p", "error": error, "fingerprint": FP}}


@pytest.mark.parametrize(
    ("payload", "field", "shown"),
    [
        pytest.param({"Bogus": {}}, "kind", "'Bogus'", id="unknown-kind"),
        pytest.param({"stepstarted": _STARTED}, "kind", "'stepstarted'", id="kind-wrong-case"),
        pytest.param("StepStarted", "kind", "'StepStarted'", id="kind-not-an-object"),
        pytest.param({}, "kind", "{}", id="no-kind"),
        pytest.param(
            {"StepStarted": _STARTED, "FlowCompleted": {"flow_fingerprint": FP}},
            "kind",
            "FlowCompleted",
            id="two-kinds",
        ),
        pytest.param({"StepStarted": [0, "acquire"]}, "kind.StepStarted", "[0, 'acquire']"),
        pytest.param(
            {"StepStarted": {"step_index": 0}},
            "kind.StepStarted.step_id",
            "{'step_index': 0}",
            id="missing-field",
        ),
        pytest.param(
            {"StepStarted": {**_STARTED, "attempt": 42}},
            "kind.StepStarted.attempt",
            "42",
            id="extra-field",
        ),
        pytest.param(
            {"StepStarted": {**_STARTED, "step_index": "0"}},
            "kind.StepStarted.step_index",
            "'0'",
            id="string-for-int",
        ),
        pytest.param(
            {"StepStarted": {**_STARTED, "step_index": True}},
            "kind.StepStarted.step_index",
            "True",
            id="bool-for-int",
        ),
        pytest.param(
            {"StepStarted": {**_STARTED, "step_index": 1.0}},
            "kind.StepStarted.step_index",
            "1.0",
            id="float-for-int",
        ),
        pytest.param(
            {"StepStarted": {**_STARTED, "step_index": -1}},
            "kind.StepStarted.step_index",
            "-1",
            id="negative-step-index",
        ),
        pytest.param(
            {"StepStarted": {**_STARTED, "step_id": 7}},
            "kind.StepStarted.step_id",
            "7",
            id="int-for-string",
        ),
        pytest.param(
            {"FlowInitialized": {"definition_hash": H1, "step_count": -3}},
            "kind.FlowInitialized.step_count",
            "-3",
            id="negative-step-count",
        ),
        pytest.param(
            {"StepFinished": {**_FINISHED, "outputs": "abc"}},
            "kind.StepFinished.outputs",
            "'abc'",
            id="outputs-not-a-list",
        ),
        pytest.param(
            {"StepFinished": {**_FINISHED, "outputs": {"h": 1}}},
            "kind.StepFinished.outputs",
            "{'h': 1}",
            id="outputs-an-object",
        ),
        pytest.param(
            {"StepFinished": {**_FINISHED, "outputs": [H1, 77]}},
            "kind.StepFinished.outputs[1]",
            "77",
            id="non-string-in-outputs",
        ),
        pytest.param(
            {"StepFinished": {**_FINISHED, "fingerprint": None}},
            "kind.StepFinished.fingerprint",
            "None",
            id="null-fingerprint",
        ),
        pytest.param(
            {"FlowCompleted": {"flow_fingerprint": ["x"]}},
            "kind.FlowCompleted.flow_fingerprint",
            "['x']",
        ),
        pytest.param(
            _failed("NoSuchError"), "kind.StepFailed.error", "'NoSuchError'", id="unknown-unit"
        ),
        pytest.param(
            _failed({"NoSuchError": "x"}),
            "kind.StepFailed.error",
            "'NoSuchError'",
            id="unknown-variant-object",
        ),
        pytest.param(
            _failed({"MissingInputs": None}),
            "kind.StepFailed.error",
            "MissingInputs",
            id="unit-variant-as-object",
        ),
        pytest.param(
            _failed({"FlowHasFailed": {}}),
            "kind.StepFailed.error",
            "FlowHasFailed",
            id="unit-variant-as-empty-object",
        ),
        pytest.param(
            _failed({"Internal": 5}), "kind.StepFailed.error.Internal", "5", id="message-not-str"
        ),
        pytest.param(
            _failed("PolicyViolation"),
            "kind.StepFailed.error",
            "'PolicyViolation'",
            id="message-variant-as-bare-string",
        ),
        pytest.param(
            _failed({"Internal": "a", "StorageError": "b"}),
            "kind.StepFailed.error",
            "StorageError",
            id="error-two-variants",
        ),
        pytest.param(_failed(3), "kind.StepFailed.error", "3", id="error-a-number"),
        pytest.param(
            _failed({"InvalidTransition": {"from": "a"}}),
            "kind.StepFailed.error.InvalidTransition.to",
            "{'from': 'a'}",
            id="struct-variant-missing-field",
        ),
        pytest.param(
            _failed({"InvalidTransition": {"from": "a", "to": "b", "via": "c"}}),
            "kind.StepFailed.error.InvalidTransition.via",
            "'c'",
            id="struct-variant-extra-field",
        ),
        pytest.param(
            _failed({"InvalidTransition": {"from": 1, "to": "b"}}),
            "kind.StepFailed.error.InvalidTransition.from",
            "1",
        ),
        pytest.param(
            _failed({"RetryNotAllowed": {"step_id": "s", "reason": False}}),
            "kind.StepFailed.error.RetryNotAllowed.reason",
            "False",
        ),
        pytest.param(
            _failed({"RetryNotAllowed": "s"}),
            "kind.StepFailed.error.RetryNotAllowed",
            "'s'",
            id="struct-variant-as-newtype",
        ),
        pytest.param(
            {"StepSignal": {**_STARTED, "signal": "S", "data": {"a": [1, float("nan")]}}},
            "kind.StepSignal.data.a[1]",
            "nan",
            id="signal-data-nan",
        ),
        pytest.param(
            {"StepSignal": {**_STARTED, "signal": "S", "data": ["ok", "nul\x00"]}},
            "kind.StepSignal.data[1]",
            "nul\\x00",
            id="signal-data-nul",
        ),
        pytest.param(
            {
                "PropertyPreferenceAssigned": {
                    "property_key": "k",
                    "policy_id": "p",
                    "params_hash": H1,
                    "rationale": {"score": float("inf")},
                }
            },
            "kind.PropertyPreferenceAssigned.rationale.score",
            "inf",
            id="rationale-infinity",
        ),
        pytest.param(
            {
                "PropertyPreferenceAssigned": {
                    "property_key": "k",
                    "policy_id": "p",
                    "params_hash": 12,
                    "rationale": None,
                }
            },
            "kind.PropertyPreferenceAssigned.params_hash",
            "12",
        ),
    ],
)
def test_decode_error_names_the_field_and_the_value(
    payload: object, field: str, shown: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_kind(payload)
    assert caught.value.field == field
    assert shown in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_decode_error_is_a_value_error_carrying_the_value() -> None:
    with pytest.raises(ValueError) as caught:
        decode_kind({"StepStarted": {**_STARTED, "step_index": "zero"}})
    assert isinstance(caught.value, DecodeError)
    assert caught.value.value == "zero"


def test_decode_field_prefix_is_the_callers() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_kind({"StepStarted": {**_STARTED, "step_index": -2}}, "payload")
    assert caught.value.field == "payload.StepStarted.step_index"


def test_a_huge_offending_value_is_shown_truncated() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_kind({"StepStarted": {**_STARTED, "step_id": ["x" * 10_000]}})
    assert caught.value.field == "kind.StepStarted.step_id"
    assert len(str(caught.value)) < 400


def test_encoding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_kind("StepStarted")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_error("MissingInputs")  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", ["Nope", "Internal", "missinginputs"])
def test_unit_error_refuses_an_unknown_variant(variant: str) -> None:
    with pytest.raises(ValueError, match=variant):
        UnitError(variant)


@pytest.mark.parametrize("variant", ["Nope", "MissingInputs"])
def test_message_error_refuses_an_unknown_variant(variant: str) -> None:
    with pytest.raises(ValueError, match=variant):
        MessageError(variant, "msg")
