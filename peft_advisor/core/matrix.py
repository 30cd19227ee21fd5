"""Render the trade-off matrix (core.catalog) as a plain-text table or as Markdown.

Pure string building, no rich/textual, so the CLI, the README generator and tests share one
rendering. The README's matrix block is generated from here and checked by
tests/test_readme_matrix.py; regenerate it with

    python -m peft_advisor.core.matrix --write-readme [README.md]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from peft_advisor.core.catalog import TIE_PP, Method

START = "<!-- matrix:start -->"
END = "<!-- matrix:end -->"
WRITE_README = "python -m peft_advisor.core.matrix --write-readme"

# (header, max width) of the plain table; wider cells wrap. Sum + gaps stays within 100 columns.
_TABLE_COLUMNS = (("Method", 8), ("Quality", 12), ("Memory", 6), ("Time", 6), ("Speed", 8), ("Adapter size", 30),
                  ("Needs", 18))
_GAP = "  "


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"×{value:.2f}"


def _quality(m: Method) -> str:
    """'4 (+3.9 pp)' when measured; '3*' when the number is the method paper's or a third party's."""
    if m.in_study and m.study_run == m.study_baseline:
        return f"{m.quality} (baseline)"
    if m.in_study and m.quality_delta_pp is not None:
        return f"{m.quality} ({m.quality_delta_pp:+.1f} pp)".replace("-", "−")
    return f"{m.quality}*"


def _speed(m: Method) -> str:
    """The one speed figure the advice uses: '4 (×0.69)', the ordinal and the measured step time
    (the study's time, already in the Time column, where this trainer has not measured it)."""
    from peft_advisor.core.speed import measured_step_time

    ratio = measured_step_time(m.id)
    return f"{m.speed}" if ratio is None else f"{m.speed} (×{ratio:.2f})"


def _step_words(m: Method) -> str:
    from peft_advisor.core.speed import measured_step_time

    ratio = measured_step_time(m.id)
    if ratio is None:
        return "" if m.time_vs_lora is None else ", from the study's time (not measured on this trainer)"
    return f", step time ×{ratio:.2f} LoRA's on an H200"


def _speed_legend() -> str:
    from peft_advisor.core.speed import measured_shapes

    return (f"Speed: 1–5 (LoRA = 3) from the step time vs LoRA (×) that peft-advisor's trainer measured on "
            f"{measured_shapes()} (median), else from the study's Time; the same figure the advice quotes.")


def _needs(m: Method) -> str:
    return ", ".join(m.requires) or "—"


def _table_cells(m: Method) -> list[str]:
    return [m.name, _quality(m), _ratio(m.memory_vs_lora), _ratio(m.time_vs_lora), _speed(m), m.adapter_size, _needs(m)]


def render_table(catalog: dict[str, Method]) -> str:
    """A table for a terminal of 100 columns, with a legend."""
    rows = [[h for h, _ in _TABLE_COLUMNS], *(_table_cells(m) for m in catalog.values())]
    limits = [w for _, w in _TABLE_COLUMNS]
    wrapped = [[textwrap.wrap(c, w) or [""] for c, w in zip(row, limits)] for row in rows]
    widths = [max(len(line) for row in wrapped for line in row[i]) for i in range(len(limits))]
    lines = []
    for n, row in enumerate(wrapped):
        for k in range(max(len(cell) for cell in row)):
            parts = [(cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(row, widths)]
            lines.append(_GAP.join(parts).rstrip())
        if n == 0:
            lines.append(_GAP.join("─" * w for w in widths))
    lines += [
        "",
        f"Quality: 1–5 relative to LoRA = 3; (Δ) = GSM8K accuracy vs LoRA, gaps ≤ {TIE_PP:g} pp are ties.",
        "Memory, Time: peak reserved memory and train time as a multiple of LoRA's in the study (L40S).",
        *textwrap.wrap(_speed_legend(), 100),
        "* not in the study: paper or third-party figures.  — not measured.",
        "Sources and caveats: peft-advisor matrix --markdown",
    ]
    return "\n".join(lines) + "\n"


# ---- Markdown ------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_row(cells) -> str:
    return "| " + " | ".join(_md_cell(str(c)) for c in cells) + " |"


def _md_table(catalog: dict[str, Method]) -> list[str]:
    header = ("Method", "Quality", "Memory × LoRA", "Time × LoRA", "Speed (step time)", "Adapter size", "High rank", "Needs")
    rows = [
        (
            f"[{m.name}](#{m.id}-evidence)",
            _quality(m),
            _ratio(m.memory_vs_lora),
            _ratio(m.time_vs_lora),
            _speed(m),
            m.adapter_size,
            m.high_rank_stability,
            _needs(m),
        )
        for m in catalog.values()
    ]
    return [_md_row(header), _md_row(["---"] * len(header)), *(_md_row(r) for r in rows)]


def _md_method(m: Method) -> list[str]:
    study = "measured in the study" if m.in_study else "**not in the study**: paper or third-party figures"
    lines = [
        f'<a id="{m.id}-evidence"></a>',
        f"**{m.name}** (`{m.id}`, {study}). {m.summary}",
        "",
        f"- Quality {m.quality}/5: {m.quality_evidence}",
        f"- Cost (speed {m.speed}/5{_step_words(m)}): {m.cost_evidence}",
        f"- Enable: `{m.enable}`",
    ]
    lines += [f"- Caveat: {c}" for c in m.caveats]
    lines.append("- Sources: " + "; ".join(m.sources))
    return lines + [""]


def render_markdown(catalog: dict[str, Method]) -> str:
    """The full matrix: a summary table, then each method's evidence, caveats and sources."""
    lines = [
        f"_Generated from `peft_advisor/data/methods.toml` by `{WRITE_README}`; do not edit by hand._",
        "",
        "Quality and speed: 1–5 relative to LoRA = 3. (Δ) is the GSM8K accuracy gap to LoRA after "
        "MetaMathQA training of Llama-3.2-3B in the huggingface/peft method-comparison study "
        f"(results @ 5d602fd); gaps ≤ {TIE_PP:g} pp are ties (run-to-run spread). Memory and time: "
        "peak reserved memory and train time as a multiple of LoRA's in that study (L40S). "
        f"{_speed_legend()} \\* = not in the study; — = not measured.",
        "",
        *_md_table(catalog),
        "",
    ]
    for m in catalog.values():
        lines += _md_method(m)
    return "\n".join(lines).rstrip() + "\n"


# ---- README block --------------------------------------------------------------------------------


def readme_block(text: str) -> str | None:
    """The text between the matrix markers, or None when the markers are missing or out of order."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(START) : end]


def block_body(markdown: str) -> str:
    """What belongs between the markers for a given rendering."""
    return "\n" + markdown.rstrip("\n") + "\n"


def replace_block(text: str, markdown: str) -> str:
    if readme_block(text) is None:
        raise ValueError(f"no {START} … {END} block")
    start, end = text.find(START) + len(START), text.find(END)
    return text[:start] + block_body(markdown) + text[end:]


def write_atomic(path: Path, text: str) -> None:
    """The README is never half-written (core.run_folder's one atomic write)."""
    from peft_advisor.core.run_folder import atomic_write_text

    atomic_write_text(path, text)


def write_readme(path: Path) -> bool:
    """Regenerate the matrix block of `path`; True when the file changed."""
    from peft_advisor.core.catalog import load_catalog

    text = path.read_text(encoding="utf-8")
    new = replace_block(text, render_markdown(load_catalog()))
    if new != text:
        write_atomic(path, new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    from peft_advisor.core.catalog import load_catalog

    parser = argparse.ArgumentParser(prog="python -m peft_advisor.core.matrix", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print Markdown instead of the table")
    parser.add_argument("--write-readme", nargs="?", const="README.md", metavar="README",
                        help="rewrite the block between the matrix markers (default ./README.md)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.write_readme:
        path = Path(args.write_readme)
        if not path.is_file():
            print(f"matrix: {path} not found (run from the repository root)", file=sys.stderr)
            return 1
        try:
            changed = write_readme(path)
        except ValueError:
            print(f"matrix: {path} has no {START} … {END} block", file=sys.stderr)
            return 1
        print(f"matrix: {path} {'updated' if changed else 'already up to date'}", file=sys.stderr)
        return 0
    catalog = load_catalog()
    sys.stdout.write(render_markdown(catalog) if args.markdown else render_table(catalog))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
