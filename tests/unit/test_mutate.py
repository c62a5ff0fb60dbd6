"""The mutation command's own rules: its list parses, every line it names is in the tree exactly
once, and a mutation changes exactly that line."""

from __future__ import annotations

import pytest

from tests.mutate import REPO_ROOT, Mutation, MutationError, load


def test_every_listed_mutation_finds_its_line_exactly_once() -> None:
    mutations = load()
    assert len(mutations) >= 20
    for mutation in mutations:
        before = (REPO_ROOT / mutation.file).read_text(encoding="utf-8")
        after = mutation.apply(before)
        changed = [
            (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=False) if a != b
        ]
        assert len(changed) == 1 or mutation.mutated == "", mutation.id
        for path in mutation.tests:
            assert (REPO_ROOT / path.split("::")[0]).exists(), (mutation.id, path)


def mutation(original: str, mutated: str = "if False:") -> Mutation:
    return Mutation("m", "eventlog/x.py", original, mutated, ("tests/unit",), "")


def test_apply_keeps_indentation_and_line_endings() -> None:
    text = "def f():\n    if x:\r\n        pass\n"
    assert mutation("if x:").apply(text) == "def f():\n    if False:\r\n        pass\n"
    assert mutation("if x:", "").apply(text) == "def f():\n\r\n        pass\n"


@pytest.mark.parametrize("text", ["a\n", "if x:\nif x:\n"], ids=["missing", "twice"])
def test_apply_refuses_a_line_that_is_not_there_exactly_once(text: str) -> None:
    with pytest.raises(MutationError, match="need exactly one"):
        mutation("if x:").apply(text)


def test_apply_refuses_a_mutation_that_changes_nothing() -> None:
    with pytest.raises(MutationError, match="is the original"):
        mutation("if x:", "if x:").apply("if x:\n")
