"""How each screen looks, at 80×24 (the smallest size we promise) and one larger size.

Regenerate after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`,
then look at the SVGs (tests/tui/__snapshots__/) before committing them.
"""

from __future__ import annotations

import pytest
from scenarios import SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_screen_80x24(name, workdir, snap_compare):
    scenario = SCENARIOS[name]
    assert snap_compare(scenario.make(), terminal_size=(80, 24), run_before=scenario.run_before)


@pytest.mark.parametrize("name", ["advisor", "monitor", "runs"])
def test_screen_120x36(name, workdir, snap_compare):
    scenario = SCENARIOS[name]
    assert snap_compare(scenario.make(), terminal_size=(120, 36), run_before=scenario.run_before)
