"""Host time between steps: from the end of one optimizer step to the next forward, `peft-advisor train`'s
trainer against a plain transformers + peft loop (runs on the CPU; no GPU needed).

Usage:
    python bench/step_gap.py [--steps 200]

On a GPU-bound step the GPU idles for the part of this gap that comes after the step's loss is read
(both loops read it every step), so the difference bounds what the trainer's bookkeeping (logging,
callbacks, the next batch) can cost against the plain loop there. A tiny random Llama, LoRA r4 on
all linear layers, 4 × 32 tokens; prints the median of each and their difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class GapClock:
    """`mark()` at the end of an optimizer step; the next forward's pre-hook records the gap."""

    def __init__(self):
        self.gaps_s: list[float] = []
        self._mark: float | None = None

    def mark(self, *_args, **_kwargs) -> None:
        self._mark = time.perf_counter()

    def hook(self, *_args, **_kwargs) -> None:
        if self._mark is not None:
            self.gaps_s.append(time.perf_counter() - self._mark)
            self._mark = None

    def median_ms(self) -> float:
        return statistics.median(self.gaps_s[5:]) * 1e3


def trainer_gap(model_dir: Path, data: Path, work: Path, steps: int) -> float:
    from transformers import TrainerCallback

    import peft_advisor.train.run as run_mod
    from peft_advisor.core import recipe as rc

    clock = GapClock()
    fields = {"model.id": str(model_dir), "method.name": "lora", "method.rank": 4, "method.alpha": 8,
              "data.path": str(data), "data.eval_split": 0, "data.max_seq_len": 32, "train.max_steps": steps,
              "train.micro_batch": 4, "train.warmup_ratio": 0.0, "train.eval_every": 0, "train.save_every": 0,
              "train.log_every": 1, "output.dir": str(work / "run")}
    recipe = rc.save(rc.updated(rc.Recipe(), fields), work / "r.toml", force=True)
    run = run_mod.Run(recipe, work / "run")
    run.setup()
    make = run.make_trainer

    class Mark(TrainerCallback):
        def on_optimizer_step(self, *args, **kwargs):
            clock.mark()

    def make_marked():
        trainer = make()
        trainer.add_callback(Mark())
        trainer.model.register_forward_pre_hook(clock.hook)
        return trainer

    run.make_trainer = make_marked
    if run.train() != 0:
        raise SystemExit("the trainer run failed; see its output above")
    run.cleanup()
    return clock.median_ms()


def plain_gap(model_dir: Path, steps: int) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

    clock = GapClock()
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    sched = get_cosine_schedule_with_warmup(opt, 0, steps)
    model.register_forward_pre_hook(clock.hook)
    model.train()
    blocks = torch.randint(0, model.config.vocab_size, (64, 32))
    for step in range(steps):
        x = blocks[(step * 4) % 60:][:4]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        clock.mark()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return clock.median_ms()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    from tests.train.tiny import save_tiny_model, sums, write_jsonl

    work = Path(tempfile.mkdtemp(prefix="step-gap-"))
    model_dir = save_tiny_model(work / "model")
    data = write_jsonl(work / "sums.jsonl", sums(1000))
    ours = trainer_gap(model_dir, data, work, args.steps)
    plain = plain_gap(model_dir, args.steps)
    print(f"host time from optimizer step to next forward: peft-advisor {ours:.2f} ms, plain loop {plain:.2f} ms "
          f"(+{ours - plain:.2f} ms a step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
