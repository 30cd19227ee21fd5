"""Derive the whole-study table (every experiment with a result) from the raw result files.

The eight-method matrix (`methods.toml`) quotes a handful of runs; the study has measured about
thirty methods on the same task. This script reduces every HEAD result file of both tasks to the
figures a person choosing a method compares (score, peak memory, training-only p99, train time,
file size, trainable parameters), adds the earlier run generations of the same experiment and
their spread, and writes `peft_advisor/data/study.json` (schema: `peft_advisor/core/study.py`):

    python bench/study_table.py [RESULTS_DIR] > peft_advisor/data/study.json

The raw files stay outside the repository (STUDY.md §2.4); only this derived table is committed,
and tests/core/test_study.py checks that it still equals what this script derives.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _study_figures():
    """bench/ is not a package: load its sibling by path (reusing its reader keeps one parser)."""
    if "study_figures" in sys.modules:
        return sys.modules["study_figures"]
    spec = importlib.util.spec_from_file_location("study_figures", HERE / "study_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["study_figures"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sf = _study_figures()
SCHEMA = 1


def _row(run, history: list[dict]) -> dict:
    scores = [g["score"] for g in history]
    spread = (max(scores) - min(scores)) * (100 if run.task == "MetaMathQA" else 1)
    return {
        "experiment": run.stem,
        "method": run.stem.split("--", 1)[0],
        "task": run.task,
        "score": run.score,
        "peak_bytes": run.peak_bytes,
        "p99_bytes": run.p99_bytes,
        "train_s": round(run.train_s, 1),
        "file_bytes": run.file_bytes,
        "trainable_params": run.trainable_params,
        "source": run.citation,
        "generations": history,
        "spread": round(spread, 2) if len(history) > 1 else None,
    }


def derive(root: Path) -> dict:
    """The table as a JSON-ready dict: MetaMathQA runs (with their generations), then image-gen."""
    every = {label: sf.read_folder(root, folder) for label, folder in sf.GENERATIONS}
    rows = []
    for stem, run in every["HEAD"].items():
        history = [
            {"label": label, "commit": folder[2], "score": every[label][stem].score}
            for label, folder in sf.GENERATIONS
            if stem in every[label]
        ]
        rows.append(_row(run, history))
    for run in sf.read_folder(root, sf.IMAGE_HEAD).values():
        rows.append(_row(run, [{"label": "HEAD", "commit": run.commit, "score": run.score}]))
    return {
        "schema": SCHEMA,
        "generated_by": "python bench/study_table.py > peft_advisor/data/study.json",
        "hardware": "NVIDIA L40S",
        "runs": rows,
    }


def render(table: dict) -> str:
    return json.dumps(table, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else sf.DEFAULT_RESULTS
    if not (root / sf.HEAD[0]).is_dir():
        print(f"study_table: no {sf.HEAD[0]}/ under {root}", file=sys.stderr)
        return 2
    sys.stdout.write(render(derive(root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
