"""Rewrite the shipped recipes (recipes/**.toml) in today's format, with today's estimate.

Usage: python tests/refresh_recipes.py

Each file keeps its header comment (what it is for) and its settings; the body is `recipe.dumps`
(every key, with the current comments, so no recipe lists eight methods once there are more), the
[estimate] table is recomputed (`core.advise.with_estimate`), and a header line `Estimated: …` is
rewritten from it. tests/test_recipes_dir.py fails until this is run after a change to the format
or the estimator; it also checks that each popular recipe still fits its card ("ok").
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peft_advisor.core import recipe as rc  # noqa: E402

RECIPES = ROOT / "recipes"
STAMP = "# peft-advisor recipe."


def header_of(text: str) -> list[str]:
    """The comment lines above the recipe's own first line, without their '# '."""
    lines = []
    for line in text.splitlines():
        if line.startswith(STAMP) or not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return lines


def estimated_line(recipe: rc.Recipe) -> str:
    from peft_advisor.core.estimate import context_bytes
    from peft_advisor.core.units import GIB

    budget = int(recipe.budget.vram_gib * GIB)
    peak = recipe.estimate.peak_bytes
    return (f"Estimated: {(peak + context_bytes(budget)) / GIB:.1f} GiB on the card (PyTorch peak {peak / GIB:.1f} GiB "
            f"+ CUDA context), of {recipe.budget.vram_gib:g} GiB.")


def refreshed(path: Path) -> str:
    """The file's text as this script writes it."""
    from peft_advisor.core.advise import with_estimate

    text = path.read_text(encoding="utf-8")
    recipe, note = with_estimate(rc.loads(text))
    if note:
        raise SystemExit(f"{path}: {note}")
    header = header_of(text)
    if recipe.budget.vram_gib:
        header = [estimated_line(recipe) if line.startswith("Estimated:") else line for line in header]
    return rc.dumps(recipe, header="\n".join(header))


def main() -> int:
    for path in sorted(RECIPES.rglob("*.toml")):
        text = refreshed(path)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
