"""Print methods.toml rows for the methods the trainer gained from the whole study (issue 17).

The figures in each row's evidence (score, peak GB, train s, ratios vs LoRA r32) are computed
here from the raw result files, as bench/study_figures.py does for the first eight methods, so
tests/core/test_catalog.py can check them; the prose (summary, caveats) is written by hand below.

    python bench/catalog_rows.py [RESULTS_DIR] >> peft_advisor/data/methods.toml   (then review)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study_table import sf  # noqa: E402

from peft_advisor.core.catalog import quality_from_delta, speed_from_time_ratio  # noqa: E402

BASE = "lora--llama-3.2-3B-rank32"
# id: (study run, the study's config in words)
STUDIED = {
    "oft": ("oft--llama-3.2-3B-rank32", "OFT r32 (block size 96), Cayley–Neumann, q+v, lr 1e-4"),
    "lokr": ("lokr--llama-3.2-3B-rank32-factor4-lr0.003", "LoKr r32, alpha 64, decompose_factor 4, q+v, lr 3e-3"),
    "loha": ("loha--llama-3.2-3B-rank32", "LoHa r32, alpha 64, q+v, lr 1e-4"),
    "ia3": ("ia3--llama-3.2-3B-all-attn-5k-lr0.005", "IA3 on every linear layer, lr 5e-3"),
    "miss": ("miss--llama-3.2-3B-default", "MiSS r64, q+v, lr 1e-4"),
    "c3a": ("c3a--llama-3.2-3B-default", "C3A block size 64, q+v, lr 0.3"),
    "shira": ("shira--llama-3.2-3B-lr_0.0003-random_seed_42", "SHiRA r32 (random mask), q+v, lr 3e-4"),
    "lorafa": ("lora--llama-3.2-3B-rank32-lorafa", "LoRA r32 with the LoRA-FA optimizer, q+v, lr 1e-4"),
}


def figures(root: Path, method_id: str) -> dict:
    head = sf.read_folder(root, sf.HEAD)
    stem, words = STUDIED[method_id]
    run, base = head[stem], head[BASE]
    d = sf.delta(method_id, run, base)
    gap = round(d.score_gap, 1)
    return {
        "quality": quality_from_delta(gap),
        "quality_delta_pp": gap,
        "memory_vs_lora": round(d.memory_ratio, 2),
        "time_vs_lora": round(d.time_ratio, 2),
        "speed": speed_from_time_ratio(d.time_ratio),
        "quality_evidence": (
            f"GSM8K after MetaMathQA, Llama-3.2-3B: {words}: {run.score_display} % vs LoRA r32 "
            f"{base.score_display} % ({gap:+.1f} pp; gaps ≤ 2 pp are ties)."
        ),
        "cost_evidence": (
            f"{run.peak_bytes / sf.GB:.2f} vs {base.peak_bytes / sf.GB:.2f} GB peak reserved incl. eval "
            f"(×{d.memory_ratio:.2f}) and {run.train_s:.0f} vs {base.train_s:.0f} s (×{d.time_ratio:.2f}); "
            f"{run.trainable_params:,} trainable params, file {run.file_bytes / 1e6:.2f} MB."
        ),
        "study_run": stem,
        "study_baseline": BASE,
        "sources": [run.citation, base.citation],
    }


def _toml(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else sf.DEFAULT_RESULTS
    for method_id in (argv[1:] or STUDIED):
        print(f"[methods.{method_id}]")
        for key, value in figures(root, method_id).items():
            print(f"{key} = {_toml(value)}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
