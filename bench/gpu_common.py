"""Shared set-up for the GPU benchmarks: a real architecture with random bf16 weights saved as a
model folder (memory and speed do not depend on weight values), a byte-level tokenizer built in
code (no download), and plain-text data that packs into full-length rows."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peft_advisor.core.catalog import default_lr  # noqa: E402  (the trainer's default per method)
from peft_advisor.core.model_spec import preset_config as shipped_config  # noqa: E402


def preset_config(preset: str, tok) -> dict:
    """`preset`'s shipped config.json, its special tokens those of the byte tokenizer `tok`."""
    cfg = shipped_config(preset)
    cfg.pop("_name_or_path", None)
    cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return cfg


def make_model_folder(preset: str, folder: Path) -> Path:
    """`preset`'s architecture, random weights in bf16, saved with a byte tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.train.tiny import byte_tokenizer

    if (folder / "config.json").exists():
        return folder
    tok = byte_tokenizer()
    config = AutoConfig.for_model(**preset_config(preset, tok))
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    return folder


def make_text_data(path: Path, rows: int = 400, chars: int = 1500) -> Path:
    """Plain text rows ('text' column) of arithmetic sentences; one character is one token."""
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(rows):
            words = []
            while sum(len(w) + 1 for w in words) < chars:
                a, b = rng.randint(1, 999), rng.randint(1, 999)
                words.append(f"{a} plus {b} is {a + b}.")
            f.write(json.dumps({"text": " ".join(words)}) + "\n")
    return path


RECIPE = """version = 1
[model]
id = "{model}"
dtype = "bfloat16"
[method]
name = "{method}"
rank = {rank}
alpha = {alpha}
targets = "all-linear"
galore_rank = 128
galore_layerwise = {layerwise}
galore_8bit = {eightbit}
[data]
path = "{data}"
format = "text"
eval_split = 0
max_seq_len = {seq}
packing = true
[train]
max_steps = {steps}
micro_batch = {batch}
grad_accum = 1
lr = {lr}
warmup_ratio = 0.0
grad_ckpt = {ckpt}
eval_every = 0
save_every = 0
log_every = 1
[output]
dir = "{out}"
"""



def write_recipe(path: Path, model: Path, data: Path, out: Path, method: str, *, steps: int, batch: int, seq: int,
                 rank: int = 16, ckpt: bool = False, layerwise: bool = False, eightbit: bool = False) -> Path:
    path.write_text(RECIPE.format(model=model, method=method, rank=rank, alpha=2 * rank, data=data, seq=seq,
                                  steps=steps, batch=batch, lr=default_lr(method), out=out,
                                  ckpt=str(ckpt).lower(), layerwise=str(layerwise).lower(),
                                  eightbit=str(eightbit).lower()))
    return path


def _saved_bytes(run_dir: Path) -> int | None:
    """Size of the saved weights file at the top of the run folder (adapter or full model)."""
    files = list(run_dir.glob("adapter_model.safetensors")) or list(run_dir.glob("model*.safetensors"))
    return sum(f.stat().st_size for f in files) or None


def read_run(run_dir: Path) -> dict:
    """Fold a run's events: status, peak memory against the estimate, steady tokens/s, losses."""
    import statistics

    from peft_advisor.core.events import read_events

    events, _ = read_events(run_dir / "events.jsonl")
    start = next((e for e in events if e["kind"] == "start"), {})
    end = next((e for e in reversed(events) if e["kind"] == "end"), {})
    steps = [e for e in events if e["kind"] == "step"]
    steady = [e["tokens_per_s"] for e in steps[3:] if e.get("tokens_per_s")]
    peak = max([e.get("mem_peak_bytes") or 0 for e in steps] + [end.get("mem_peak_bytes") or 0])
    peak_allocated = max([e.get("mem_peak_allocated_bytes") or 0 for e in steps])
    ckpt = [e for e in events if e["kind"] == "checkpoint"]
    return {
        "status": end.get("status", "no end event"),
        "message": end.get("message"),
        "steps": len(steps),
        "first_loss": steps[0]["loss"] if steps else None,
        "last_loss": steps[-1]["loss"] if steps else None,
        "tokens_per_s": statistics.median(steady) if steady else None,
        "peak_bytes": peak or None,
        "peak_allocated_bytes": peak_allocated or None,
        "cuda_alloc_conf": start.get("cuda_alloc_conf"),
        "estimate_peak_bytes": start.get("estimate_peak_bytes"),
        "trainable_params": start.get("trainable_params"),
        "adapter_bytes": ckpt[-1].get("adapter_bytes") if ckpt else _saved_bytes(run_dir),
        "wall_s": end.get("wall_s"),
    }


def write_results(rows: list[dict], out: Path, markdown: str) -> int:
    """The Markdown table at `out` and the rows as JSON lines beside it; exit 0 when every run was ok."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out.write_text(markdown)
    return 0 if all(r["status"] == "ok" for r in rows) else 1
