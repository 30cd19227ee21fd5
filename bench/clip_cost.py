"""Host time of one gradient clipping: Trainer's path against LeanTrainer's (runs on the CPU).

Usage:
    python bench/clip_cost.py [--layers 24] [--repeats 200]

Trainer hands accelerate `model.parameters()` (a walk of every module) and accelerate looks at every
parameter's gradient for a sharded type before clipping; LeanTrainer clips its list of trainable
parameters, taken once (`peft_advisor/train/lean.py`). A random Llama of width 32 (so the clipping's
arithmetic is negligible and what is timed is the host's bookkeeping, as for a kernel launch on a
GPU), LoRA r16 on all linear layers, gradients from one backward; the two paths alternate. Prints
the median milliseconds of each and their ratio.
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


def deep_lora_trainer(layers: int, folder: Path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from peft_advisor.train.lean import LeanTrainer

    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                                task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(folder), use_cpu=True, report_to=[], disable_tqdm=True, max_grad_norm=1e9)
    trainer = LeanTrainer(model=model, args=args)
    ids = torch.randint(0, 300, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    return trainer, model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    from transformers import Trainer

    trainer, model = deep_lora_trainer(args.layers, Path(tempfile.mkdtemp(prefix="clip-cost-")))
    paths = {"Trainer": lambda: Trainer._clip_grad_norm(trainer, model), "LeanTrainer": lambda: trainer._clip_grad_norm(model)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, clip in paths.items():
            start = time.perf_counter()
            clip()
            times[name].append(time.perf_counter() - start)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    modules, trainable = sum(1 for _ in model.modules()), len(trainer._trainable)
    print(f"{args.layers} layers, {modules} modules, {trainable} trainable tensors: one clipping takes "
          f"{ms['Trainer']:.2f} ms on Trainer's path, {ms['LeanTrainer']:.2f} ms on LeanTrainer's "
          f"({ms['Trainer'] / ms['LeanTrainer']:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
