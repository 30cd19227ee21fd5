"""Write assets/<screen>.svg, the README's screenshots, from the snapshot tests' scenarios.

Usage:
    python tests/tui/make_screenshots.py [--size 100x30]

Same apps and steps as tests/tui/test_snapshots.py (fake GPUs, canned runs), so the pictures in
the README are what the tests check.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

ASSETS = {"advisor": "advisor", "recipe": "recipe", "monitor": "monitor", "runs": "runs", "bench": "bench", "help": "help",
          "advisor_no_gpu": "advisor-no-gpu", "monitor_died": "monitor-died", "monitor_light": "monitor-light"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100x30", help="terminal columns x rows")
    args = parser.parse_args()
    cols, rows = (int(n) for n in args.size.lower().split("x"))

    from textual._doc import take_svg_screenshot
    from textual.widgets import Input

    Input._toggle_cursor = lambda self: None  # no blink: stable pictures
    from scenarios import SCENARIOS
    from tui_support import FIXTURES

    out_dir = ROOT / "assets"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PEFT_ADVISOR_CACHE"] = str(Path(tmp) / "cache")  # no local calibration in pictures
        shutil.copytree(FIXTURES / "runs", Path(tmp) / "runs")
        shutil.copytree(FIXTURES / "bench", Path(tmp) / "bench-h200")
        for i, name in enumerate(("demo-vera", "demo-dora", "demo-lora")):
            for path in (Path(tmp) / "runs" / name).iterdir():
                os.utime(path, (1_760_000_000 + i * 3600,) * 2)
        os.chdir(tmp)
        for name, file_name in ASSETS.items():
            scenario = SCENARIOS[name]
            svg = take_svg_screenshot(scenario.make(), terminal_size=(cols, rows), run_before=scenario.run_before,
                                      title=f"peft-advisor · {file_name}")
            (out_dir / f"{file_name}.svg").write_text(svg, encoding="utf-8")
            print(f"wrote assets/{file_name}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
