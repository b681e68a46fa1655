"""The closing lines of `pcdag preprocess`: the quarantine summary worded for the case at hand."""

from __future__ import annotations

import pytest

from pcdag.cli import quarantine_message


@pytest.mark.parametrize(
    ("failed", "total", "line"),
    [
        (1, 1, "1 scene quarantined; no scene reached the store"),
        (3, 3, "3 scenes quarantined; no scene reached the store"),
        (1, 2, "1 of 2 scenes quarantined; the other is in the store"),
        (1, 5, "1 of 5 scenes quarantined; the others are in the store"),
        (4, 5, "4 of 5 scenes quarantined; the other is in the store"),
    ],
)
def test_quarantine_message(failed: int, total: int, line: str) -> None:
    assert quarantine_message(failed, total) == line
