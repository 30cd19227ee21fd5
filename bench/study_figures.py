"""Print the study figures that peft-advisor's trade-off matrix rests on, as Markdown.

The matrix (`peft_advisor/data/methods.toml`) quotes numbers from the huggingface/peft
`method_comparison` suite (STUDY.md). This script recomputes every one of them from the raw result
files, so a reader can check each number and a test can check that the matrix still agrees. The raw
files are reference data and stay outside the repository; only this script's output is committed:

    python bench/study_figures.py [RESULTS_DIR] > bench/study_figures.md

RESULTS_DIR defaults to `../shared/peft_method_comparison_results` relative to the repository root.
Units are spelled out: GB = 10^9 bytes (the blog's unit for MetaMathQA), GiB = 2^30 bytes.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT.parent / "shared" / "peft_method_comparison_results"
GB = 10**9
GIB = 2**30

# Result folders: (folder in the results dir, task folder in huggingface/peft, short commit).
HEAD = ("MetaMathQA_head_5d602fd", "MetaMathQA", "5d602fd")
IMAGE_HEAD = ("image-gen_head_5d602fd", "image-gen", "5d602fd")
# The three MetaMathQA run generations (STUDY.md §2.3), oldest first.
GENERATIONS = (
    ("2025", ("MetaMathQA_snapshot_f4763a0", "MetaMathQA", "f4763a0")),
    ("blog", ("MetaMathQA_blog_snapshot_5261e95", "MetaMathQA", "5261e95")),
    ("HEAD", HEAD),
)

# The MetaMathQA experiments the matrix uses (file stems, STUDY.md §3.1).
MATRIX_RUNS = (
    "lora--llama-3.2-3B-rank32",
    "lora--llama-3.2-3B-rank64",
    "lora--llama-3.2-3B-rank64-rslora",
    "lora--llama-3.2-3B-rank32-dora",
    "vera--llama-3.2-3B-default",
    "full-finetuning--llama-3.2-3B-lr_0.00001",
)
# image-gen experiments the matrix cites in caveats (STUDY.md §3.4).
IMAGE_RUNS = (
    "lora--flux2-klein-default",
    "lora--flux2-klein-rank64",
    "dora--flux2-klein-rank64",
    "vera--flux2-klein-default",
    "full-finetuning--flux2-klein-default",
)
# (label, run, baseline) comparisons of STUDY.md §3.3, plus image-gen DoRA vs LoRA (§3.4).
DELTAS = (
    ("DoRA r32 vs LoRA r32", "lora--llama-3.2-3B-rank32-dora", "lora--llama-3.2-3B-rank32"),
    ("rsLoRA r64 vs LoRA r64", "lora--llama-3.2-3B-rank64-rslora", "lora--llama-3.2-3B-rank64"),
    ("rsLoRA r64 vs LoRA r32", "lora--llama-3.2-3B-rank64-rslora", "lora--llama-3.2-3B-rank32"),
    ("LoRA r64 vs LoRA r32", "lora--llama-3.2-3B-rank64", "lora--llama-3.2-3B-rank32"),
    ("VeRA r256 vs LoRA r32", "vera--llama-3.2-3B-default", "lora--llama-3.2-3B-rank32"),
    ("Full FT vs LoRA r32", "full-finetuning--llama-3.2-3B-lr_0.00001", "lora--llama-3.2-3B-rank32"),
    ("image-gen DoRA r64 vs LoRA r64", "dora--flux2-klein-rank64", "lora--flux2-klein-rank64"),
)


@dataclass(frozen=True)
class Run:
    """One result file, reduced to the figures the matrix uses."""

    stem: str
    task: str
    commit: str
    score: float
    """MetaMathQA: GSM8K test accuracy (0..1); image-gen: DINOv2 similarity."""
    peak_bytes: int
    """`accelerator_memory_max`: peak reserved by the caching allocator, incl. eval."""
    p99_bytes: int
    """`accelerator_memory_reserved_99th`, training steps only."""
    train_s: float
    file_bytes: int
    trainable_params: int
    tokens_per_s: float | None
    """Mean of the per-250-step `tokens / sec` rows; None where the task logs none."""

    @property
    def score_display(self) -> float:
        """What tables print: accuracy in % to 1 decimal, DINO similarity to 3 decimals."""
        return round(self.score * 100, 1) if self.task == "MetaMathQA" else round(self.score, 3)

    @property
    def citation(self) -> str:
        return f"huggingface/peft method_comparison/{self.task}/results/{self.stem}.json @ {self.commit}"


@dataclass(frozen=True)
class Delta:
    """A run against its baseline. The score gap is taken between the displayed (rounded) scores,
    as STUDY.md §3.3 does, so '46.9 vs 47.8 (−0.9 pp)' reads consistently."""

    label: str
    run: Run
    base: Run
    score_gap: float
    """pp for MetaMathQA, DINO-similarity points for image-gen."""
    memory_ratio: float
    time_ratio: float
    params_ratio: float
    file_ratio: float


def read_run(path: Path, task: str, commit: str) -> Run:
    doc = json.loads(path.read_text())
    info = doc["train_info"]
    last = info["metrics"][-1]
    score = last["test accuracy"] if task == "MetaMathQA" else last["test dino_similarity"]
    rates = [row["tokens / sec"] for row in info["metrics"] if "tokens / sec" in row]
    return Run(
        stem=path.stem,
        task=task,
        commit=commit,
        score=float(score),
        peak_bytes=int(info["accelerator_memory_max"]),
        p99_bytes=int(info["accelerator_memory_reserved_99th"]),
        train_s=float(info["train_time"]),
        file_bytes=int(info["file_size"]),
        trainable_params=int(info["num_trainable_params"]),
        tokens_per_s=statistics.fmean(rates) if rates else None,
    )


def read_folder(root: Path, folder: tuple[str, str, str], stems=None) -> dict[str, Run]:
    """All runs in one result folder (or only `stems`), keyed by file stem."""
    name, task, commit = folder
    paths = sorted((root / name).glob("*.json"))
    if stems is not None:
        paths = [root / name / f"{stem}.json" for stem in stems]
    return {p.stem: read_run(p, task, commit) for p in paths}


def delta(label: str, run: Run, base: Run) -> Delta:
    return Delta(
        label=label,
        run=run,
        base=base,
        score_gap=round(run.score_display - base.score_display, 3),
        memory_ratio=run.peak_bytes / base.peak_bytes,
        time_ratio=run.train_s / base.train_s,
        params_ratio=run.trainable_params / base.trainable_params,
        file_ratio=run.file_bytes / base.file_bytes,
    )


@dataclass(frozen=True)
class Figures:
    runs: dict[str, Run]
    """HEAD runs of MATRIX_RUNS and IMAGE_RUNS, keyed by stem."""
    deltas: dict[str, Delta]
    generations: dict[str, dict[str, Run]]
    """MATRIX_RUNS per generation label ('2025', 'blog', 'HEAD'); missing stems are absent."""
    spread_pp: dict[str, float]
    """Test-accuracy range (max − min, pp) of every experiment present in all three generations."""


def collect(root: Path) -> Figures:
    runs = read_folder(root, HEAD, MATRIX_RUNS) | read_folder(root, IMAGE_HEAD, IMAGE_RUNS)
    deltas = {label: delta(label, runs[a], runs[b]) for label, a, b in DELTAS}
    every = {label: read_folder(root, folder) for label, folder in GENERATIONS}
    generations = {
        label: {s: r for s, r in gen.items() if s in MATRIX_RUNS} for label, gen in every.items()
    }
    common = set.intersection(*(set(gen) for gen in every.values()))
    spread = {}
    for stem in sorted(common):
        scores = [every[label][stem].score * 100 for label, _ in GENERATIONS]
        spread[stem] = max(scores) - min(scores)
    return Figures(runs=runs, deltas=deltas, generations=generations, spread_pp=spread)


# ---- rendering -------------------------------------------------------------------------------


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _run_row(run: Run) -> list:
    tps = f"{run.tokens_per_s:.0f}" if run.tokens_per_s is not None else "–"
    return [
        run.stem,
        run.score_display,
        f"{run.peak_bytes:,}",
        f"{run.peak_bytes / GB:.2f}",
        f"{run.peak_bytes / GIB:.2f}",
        f"{run.p99_bytes / GIB:.2f}",
        f"{run.train_s:.0f}",
        f"{run.file_bytes / 10**6:.2f}",
        f"{run.trainable_params:,}",
        tps,
        f"`{run.citation}`",
    ]


RUN_HEADER = (
    "Experiment", "Score", "Peak bytes", "Peak GB", "Peak GiB", "p99 GiB", "Train s",
    "File MB", "Trainable params", "tok/s", "Source",
)  # fmt: skip


def _ratio(r: float) -> str:
    """×2.00 for growth, ÷71.1 for shrinkage: easier to read than ×0.0141."""
    if r >= 1:
        return f"×{r:.0f}" if r >= 10 else f"×{r:.2f}"
    return f"÷{1 / r:.1f}"


def _delta_row(d: Delta) -> list:
    unit = "pp" if d.run.task == "MetaMathQA" else "DINO"
    return [
        d.label,
        f"{d.run.score_display} vs {d.base.score_display} ({d.score_gap:+.{1 if unit == 'pp' else 3}f} {unit})",
        f"{d.run.peak_bytes / GB:.2f} vs {d.base.peak_bytes / GB:.2f} GB (×{d.memory_ratio:.2f})",
        f"{d.run.train_s:.0f} vs {d.base.train_s:.0f} s (×{d.time_ratio:.2f})",
        _ratio(d.params_ratio),
        _ratio(d.file_ratio),
        f"`{d.run.citation}`; `{d.base.citation}`",
    ]


def _generation_rows(figs: Figures) -> list[list]:
    rows = []
    for stem in MATRIX_RUNS:
        cells = [stem]
        for label, _ in GENERATIONS:
            run = figs.generations[label].get(stem)
            cells.append(
                f"{run.score_display} / {run.peak_bytes / GB:.2f} / {run.train_s:.0f}" if run else "–"
            )
        spread = figs.spread_pp.get(stem)
        cells.append(f"{spread:.2f}" if spread is not None else "–")
        commits = ", ".join(folder[2] for _, folder in GENERATIONS)
        cells.append(f"`huggingface/peft method_comparison/MetaMathQA/results/{stem}.json @ {commits}`")
        rows.append(cells)
    return rows


def render(figs: Figures) -> str:
    spreads = list(figs.spread_pp.values())
    lines = [
        "# Study figures used by the trade-off matrix",
        "",
        "Generated by `python bench/study_figures.py > bench/study_figures.md` from the raw result",
        "files of huggingface/peft `method_comparison` (see `../shared/reference/STUDY.md`).",
        "Do not edit by hand. GB = 10^9 bytes, GiB = 2^30 bytes; *Peak* is `accelerator_memory_max`",
        "(reserved, incl. eval), *p99* is `accelerator_memory_reserved_99th` (training steps); tok/s is",
        "the mean of the per-250-step `tokens / sec` rows. Score: GSM8K test accuracy in % (MetaMathQA),",
        "DINOv2 similarity (image-gen). Hardware: NVIDIA L40S; MetaMathQA on Llama-3.2-3B, batch 4,",
        "seq ≤ 768, 5000 steps.",
        "",
        "## MetaMathQA (HEAD 5d602fd)",
        "",
        *_table(RUN_HEADER, [_run_row(figs.runs[s]) for s in MATRIX_RUNS]),
        "",
        "## image-gen, FLUX.2-klein (HEAD 5d602fd)",
        "",
        *_table(RUN_HEADER, [_run_row(figs.runs[s]) for s in IMAGE_RUNS]),
        "",
        "## Derived comparisons (STUDY.md §3.3, §3.4)",
        "",
        "Score gaps are taken between the displayed (1-decimal %) scores. Ratios are run / baseline.",
        "",
        *_table(
            ("Comparison", "Score", "Peak memory", "Train time", "Params", "File", "Source"),
            [_delta_row(figs.deltas[label]) for label, _, _ in DELTAS],
        ),
        "",
        "## Run-to-run spread across three generations (STUDY.md §3.5)",
        "",
        "Each cell: test acc % / peak GB / train s. Range = max − min of the unrounded test",
        "accuracy in pp. Sources: `huggingface/peft method_comparison/MetaMathQA/results/<file>.json`",
        "at each generation's commit.",
        "",
        *_table(
            ("Experiment", "2025 (f4763a0)", "blog (5261e95)", "HEAD (5d602fd)", "Range pp", "Source"),
            _generation_rows(figs),
        ),
        "",
        f"Over all {len(spreads)} experiment names present in all three generations, the test-accuracy",
        f"range has median **{statistics.median(spreads):.1f} pp**, mean {statistics.fmean(spreads):.1f} pp"
        f" and max {max(spreads):.1f} pp. The matrix therefore treats gaps of ≤ 2 pp as ties.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else DEFAULT_RESULTS
    if not (root / HEAD[0]).is_dir():
        print(f"study_figures: no {HEAD[0]}/ under {root}", file=sys.stderr)
        return 2
    sys.stdout.write(render(collect(root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
