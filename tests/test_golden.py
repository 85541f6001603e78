"""Generated Go and Makefile text, compared whole against tests/golden/.
After an intended change: python -m tests.update_golden, and review the diff."""

from __future__ import annotations

import pytest

from tests.golden_cases import GOLDEN, cases

CASES = cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    folder = GOLDEN / case
    assert folder.is_dir(), "golden files missing: run python -m tests.update_golden"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CASES[case])
    for name, text in CASES[case].items():
        assert (folder / name).read_text() == text, (
            f"{case}/{name} differs from the golden file; if intended, run "
            "python -m tests.update_golden and review the diff")


def test_rendering_is_deterministic() -> None:
    assert cases() == CASES
