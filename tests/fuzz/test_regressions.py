"""Replay every case in tests/fuzz/regressions/ (what scripts/fuzz.py found).

A regression file is one step per line: a frame in hex, or ``+<ns>`` to advance
the clock and poll; ``#`` lines are comments. A comment line
``# expect-drop: <reason>`` also requires that drop reason to be counted. Each
file runs on a fresh fuzz ``Target`` under the full oracle (no exception, no
uncounted drop, bounds, well-formed output).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.target import Target, read_case

HERE = Path(__file__).parent / "regressions"
FILES = sorted(HERE.glob("*.hex"))


def test_there_are_regressions() -> None:
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_regression_replays_cleanly(path: Path) -> None:
    text = path.read_text()
    target = Target()
    before = dict(target.st.stats.drops)
    target.run(read_case(text))
    for line in text.splitlines():
        if line.startswith("# expect-drop:"):
            reason = line.split(":", 1)[1].strip()
            assert target.st.stats.drops[reason] > before.get(reason, 0), \
                f"{path.name}: expected a {reason} drop, got {dict(target.st.stats.drops)}"
