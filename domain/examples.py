"""A small, deterministic chemistry pipeline for the demo, the tests and the benchmark.

acquire molecules → compute properties → choose a preferred property by policy → report.
``example_flow(seed)`` varies the parameters by seed; some seeds fail at a step on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

from chem_persistence.domain.canonical import hash_value
from chem_persistence.domain.definition import (
    PROPERTY_PREFERENCE_ASSIGNED,
    FlowDefinition,
    Signal,
    StepDefinition,
    StepFailure,
    StepOutcome,
    StepSuccess,
)
from chem_persistence.domain.events import Artifact, MessageError
from chem_persistence.domain.json_values import JsonValue

_FRAGMENTS = ("C", "CC", "O", "N", "c1ccccc1", "C(=O)O", "Cl", "F", "S", "C#N")
_NAMES = ("méthane", "éthanol", "β-carotène", "caffeine", "ацетон", "苯", "aspirin")


def _pseudo(seed: int, i: int) -> int:
    """A deterministic pseudo-random integer (LCG): no global random state."""
    return (seed * 6364136223846793005 + i * 1442695040888963407 + 1) % (2**61 - 1)


def _acquire(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    assert isinstance(params, dict)
    seed, count = int(params["seed"]), int(params["count"])  # type: ignore[arg-type]
    if count <= 0:
        return StepFailure(MessageError("PolicyViolation", f"count must be positive, got {count}"))
    molecules: list[JsonValue] = []
    for i in range(count):
        r = _pseudo(seed, i)
        smiles = "".join(_FRAGMENTS[(r >> (4 * k)) % len(_FRAGMENTS)] for k in range(1 + r % 4))
        molecules.append({"smiles": smiles, "name": _NAMES[r % len(_NAMES)], "id": f"M{seed}-{i}"})
    batch = Artifact(
        "molecule_batch", {"molecules": molecules}, {"source": "synthetic", "seed": seed}
    )
    return StepSuccess((batch,), (Signal("ACQUIRED", {"count": count}),))


def _properties(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    assert isinstance(params, dict) and isinstance(inputs[0].payload, dict)
    molecules = inputs[0].payload["molecules"]
    assert isinstance(molecules, list)
    max_weight = float(params["max_weight"])  # type: ignore[arg-type]
    rows: list[JsonValue] = []
    for molecule in molecules:
        assert isinstance(molecule, dict) and isinstance(molecule["smiles"], str)
        smiles = molecule["smiles"]
        weight = round(
            12.011 * smiles.count("C") + 15.999 * smiles.count("O") + 7.5 * len(smiles), 3
        )
        if weight > max_weight:
            error = f"{molecule['id']}: molecular weight {weight} exceeds {max_weight}"
            return StepFailure(MessageError("PolicyViolation", error))
        rows.append({"id": molecule["id"], "weight": weight, "logp": round(len(smiles) / 7 - 1, 4)})
    table = Artifact("property_table", {"rows": rows}, {"units": {"weight": "g/mol"}})
    stats = Artifact("property_stats", {"n": len(rows), "max_weight": max_weight})
    return StepSuccess((table, stats))


def _choose(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    assert isinstance(params, dict) and isinstance(inputs[0].payload, dict)
    rows = inputs[0].payload["rows"]
    assert isinstance(rows, list)
    key = str(params["property"])
    values = [row[key] for row in rows if isinstance(row, dict)]
    choice: dict[str, JsonValue] = {"property": key, "mean": round(sum(values) / len(values), 6)}  # type: ignore[arg-type]
    preference: dict[str, JsonValue] = {
        "property_key": key,
        "policy_id": str(params["policy"]),
        "params_hash": hash_value(params),
        "rationale": {"why": "lowest variance", "n": len(values), "score": 0.75},
    }
    return StepSuccess(
        (Artifact("preference", choice),), (Signal(PROPERTY_PREFERENCE_ASSIGNED, preference),)
    )


def _report(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    hashes: list[JsonValue] = [a.hash for a in sorted(inputs, key=lambda a: a.hash)]
    summary: dict[str, JsonValue] = {
        "inputs": hashes,
        "title": "rapport — résumé",
    }
    return StepSuccess((Artifact("report", summary, {"format": "json"}),))


def example_flow(seed: int) -> FlowDefinition:
    """Deterministic per seed: every 7th seed fails at ``properties``; every 3rd has a policy."""
    count = 1 + seed % 5
    steps = [
        StepDefinition("acquire", _acquire, {"seed": seed, "count": count}, source=True),
        StepDefinition("properties", _properties, {"max_weight": 1.0 if seed % 7 == 0 else 1e6}),
    ]
    if seed % 3 == 0:
        steps.append(StepDefinition("choose", _choose, {"property": "weight", "policy": "minvar"}))
    steps.append(StepDefinition("report", _report))
    return FlowDefinition(tuple(steps))
