"""What the techniques change in the advice for a 12 GiB card on 1B-3B models (issue 15's second
target: a larger micro-batch, a higher rank or no checkpointing where it fits). No GPU needed: it
asks the advice core twice per case, with and without the techniques, as `recommend --vram 12`
and `recommend --vram 12 --no-techniques` would, and prints the top recommendation of each.

Usage:
    python bench/techniques_advice.py > bench/results/cpu_techniques_advice.md

Whether the advice with the techniques really fits a 12 GiB card is bench/fits.py's job (round 3
has 1B-3B cases at 12 GiB, run on a capped GPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peft_advisor.core.advise import AdviceRequest, advise  # noqa: E402
from peft_advisor.core.units import fmt_bytes  # noqa: E402

MODELS = ("llama-3.2-1b", "qwen2.5-1.5b", "qwen3-1.7b", "smollm2-1.7b", "gemma-2-2b", "llama-3.2-3b", "qwen2.5-3b")
SEQS = (1024, 2048, 4096)
VRAM_GIB = 12
BATCH = 4


def top(model: str, seq: int, techniques: bool):
    """The top recommendation's settings (None: nothing fits) and its words for the table."""
    best = advise(AdviceRequest(model=model, vram_gib=VRAM_GIB, seq_len=seq, batch_size=BATCH,
                                techniques=techniques)).best
    if best is None:
        return None, "nothing fits"
    s = best.settings
    knobs = [f"r{s.rank}", f"b{s.batch_size}×{s.grad_accum}", _ckpt_words(s)]
    knobs += [word for key, word in (("fused_loss", "fused"), ("liger_kernels", "liger"),
                                     ("offload_activations", "offload")) if getattr(s, key)]
    knobs += ["8-bit AdamW"] if "8bit" in s.optimizer else []
    return s, f"{best.method} {' '.join(knobs)} ({fmt_bytes(best.estimate.total_bytes)}, {best.fit})"


def _ckpt_words(s) -> str:
    if not s.grad_ckpt:
        return "no ckpt"
    return f"ckpt {s.grad_ckpt_layers} blocks" if s.grad_ckpt_layers else "ckpt"


def better(off, on) -> str:
    """Which of issue 15's three gains the techniques bought, from the two top settings."""
    if off is None or on is None:
        return "same" if off is on else "fits now" if off is None else "no longer fits"
    gains = [g for g, yes in (("larger micro-batch", on.batch_size > off.batch_size), ("higher rank", on.rank > off.rank),
                              ("no checkpointing", off.grad_ckpt and not on.grad_ckpt)) if yes]
    return ", ".join(gains) or ("same" if on == off else "techniques only")


def main() -> int:
    print(f"# Advice for a {VRAM_GIB} GiB card, effective batch {BATCH}, with and without the techniques\n")
    print("`python bench/techniques_advice.py` (no GPU; the advice core as `recommend --vram 12 [--no-techniques]`).\n")
    print("| model | seq | without techniques | with techniques | gained |")
    print("|---|---|---|---|---|")
    gained = 0  # cases where the techniques bought one of the three gains, or a fit
    for model in MODELS:
        for seq in SEQS:
            (off, off_words), (on, on_words) = top(model, seq, False), top(model, seq, True)
            gain = better(off, on)
            gained += gain not in ("same", "techniques only", "no longer fits")
            print(f"| {model} | {seq} | {off_words} | {on_words} | {gain} |")
    print(f"\n**{gained} of {len(MODELS) * len(SEQS)} cases: a larger micro-batch, a higher rank, no checkpointing "
          "or a fit where none was**")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
