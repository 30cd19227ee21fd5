"""The core and the headless CLI import neither the training stack nor the UI (harlequin's test).
`recommend` must start in well under a second; torch alone takes over one."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "peft", "datasets", "textual", "rich", "pynvml", "galore_torch")

SCRIPT = """
import sys, io, contextlib
{statement}
leaked = [m for m in {forbidden!r} if m in sys.modules]
print(",".join(leaked))
"""


def leaked(statement: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(statement=statement, forbidden=FORBIDDEN)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return [m for m in last.split(",") if m]


def test_core_modules_are_pure():
    mods = ["estimate", "recommend", "model_spec", "catalog", "matrix", "recipe", "recipe_fields", "toml_text", "events",
            "hardware", "speed", "units", "distributed", "bench", "calibration", "study", "pareto", "study_view",
            "run_folder", "tail", "watch", "model_card"]
    assert leaked("; ".join(f"import peft_advisor.core.{m}" for m in mods)) == []


def test_recommend_path_imports_nothing_heavy():
    stmt = ("from peft_advisor.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['recommend', '--vram', '12'])")
    assert leaked(stmt) == []


def test_matrix_front_imports_nothing_heavy():
    stmt = ("from peft_advisor.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['matrix', '--front'])")
    assert leaked(stmt) == []


def test_every_cli_command_parser_is_light():
    stmt = "from peft_advisor.cli import build_parser\nbuild_parser()"
    assert [m for m in leaked(stmt) if m != "pynvml"] == []
