"""docs/RELIABILITY.md is generated from the case lists the tests run, so it cannot drift from them."""

from __future__ import annotations

from tests.reliability.cases import ALL
from tests.reliability.make_table import DOC, render


def test_reliability_doc_is_current():
    text = DOC.read_text(encoding="utf-8")
    missing = [c.id for c in ALL if f"| `{c.id}` |" not in text]
    assert not missing, f"cases missing from {DOC}: {missing}; run python tests/reliability/make_table.py"
    assert text == render(), f"{DOC} is out of date; run python tests/reliability/make_table.py"


def test_case_ids_are_unique():
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
