"""Training data: read rows, render them to text, tokenize with the prompt masked.

Sources: "demo" (the shipped arithmetic problems), a local .jsonl/.json/.csv/.parquet file, a folder
written by `datasets`' `save_to_disk`, or a Hub dataset already in the local cache. Formats (by
column): instruction (instruction/input/output), chat (messages), sharegpt (conversations of
from/value turns, rendered as chat), prompt_completion (prompt/completion) and text. Every row
becomes one text plus the character spans that are trained on; tokens outside them get label -100,
so instruction, chat, sharegpt and prompt/completion data train on the answer only.

Every problem a user can cause (missing file, a file that is not a regular file or not UTF-8, wrong
columns, no rows, nothing left after truncation) is one `UserError(BAD_DATA)` line, raised before
the run folder exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from peft_advisor.core.data_profile import EVAL_GENERATE_BATCH, EVAL_GENERATE_ROWS, MAX_ANSWER_CHARS, new_tokens_for
from peft_advisor.core.errors import UserError
from peft_advisor.core.files import text_problem
from peft_advisor.core.recipe_fields import column_map
from peft_advisor.core.limits import MAX_LINE_BYTES
from peft_advisor.core.rows import (OPTIONAL, REQUIRED, bad, detect_format, first_bad_row, scan_jsonl,
                                    sharegpt_messages)
from peft_advisor.core.sources import FILE_LOADERS, local_data

PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
PLAIN_TEMPLATE_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
# Text formats and their line ceiling: a .jsonl or .csv row is a line; a .json document may be one line.
TEXT_LINE_BYTES = {".jsonl": MAX_LINE_BYTES, ".csv": MAX_LINE_BYTES, ".json": None}


@dataclass
class Rendered:
    """One row as text: `spans` are the character ranges trained on."""

    text: str
    spans: list[tuple[int, int]]
    prompt: str | None = None  # what generation starts from, for exact match
    answer: str | None = None


@dataclass
class Prepared:
    train: object  # datasets.Dataset with input_ids and labels
    eval: object | None
    format: str
    notes: list[str] = field(default_factory=list)  # shown in train.log
    eval_prompts: list[str] = field(default_factory=list)
    eval_answers: list[str] = field(default_factory=list)
    add_special_tokens: bool = True
    train_rows: int = 0  # examples read for training (before packing)
    truncated_rows: int = 0  # of those, cut at max_seq_len
    max_seq_len: int = 0

    def estimate_shape(self, tokenizer, generate: bool = True) -> dict:
        """The `Settings` fields of the batches this run will really see, for its estimate: the
        longest training row (after truncation and packing), the longest eval row, and exact
        match's prompt plus new tokens (`generate`: False where it is skipped, under FSDP)."""
        shape = {"seq_len": max(len(ids) for ids in self.train["input_ids"])}
        if self.eval is not None:
            shape["eval_seq_len"] = max(len(ids) for ids in self.eval["input_ids"])
        if generate and self.eval_prompts:
            prompts = tokenizer(self.eval_prompts, add_special_tokens=self.add_special_tokens)["input_ids"]
            answers = tokenizer(self.eval_answers, add_special_tokens=False)["input_ids"]
            shape["generate_len"] = max(map(len, prompts)) + new_tokens_for(max(map(len, answers)))
        return shape

    def start_fields(self) -> dict:
        """For the `start` event, so the terminal can say that rows were cut (the notes go to train.log only)."""
        return {"truncated_rows": self.truncated_rows, "train_rows": self.train_rows, "max_seq_len": self.max_seq_len}


# ---------------------------------------------------------------- reading rows


def resolve_path(path: str, base_dir: Path | None) -> str | Path:
    """A local path (absolute, cwd-relative or recipe-relative) or the string as a Hub id."""
    if path == "demo":
        from peft_advisor.train.demo import demo_data_path

        return demo_data_path()
    local = local_data(path, base_dir)
    return path if local is None else local


def read_rows(path: str, base_dir: Path | None = None, wanted: str = "auto", config: str = "", split: str = "",
              columns: str = ""):
    """(train rows, eval rows or None) as `datasets.Dataset`s, from data.path with data.config,
    data.split and data.columns applied. A .jsonl file's rows are checked against the schema of
    format `wanted` (or the one its columns make) first, by line number, unless its columns are
    renamed (they are checked by row number once renamed)."""
    source = resolve_path(path, base_dir)
    if config and isinstance(source, Path) and not source.is_dir():
        raise bad(f"data.config = {config!r}: {source} is a file, which has no configs")
    loaded = load(source, path, wanted, config, scan=not columns)
    where = source if not config else source / config if isinstance(source, Path) else f"{source} ({config})"
    train, held = split_dict(loaded, where, split)
    renames = column_map(columns)
    return rename(train, renames, where), (rename(held, renames, f"{where} (eval split)") if held is not None else None)


def load(source: str | Path, path: str, wanted: str, config: str, scan: bool = True):
    """A Dataset or DatasetDict from a folder, a file or the Hub (its local cache when offline);
    what went wrong in one line: the config, the file, or the Hub id."""
    import datasets

    try:
        if isinstance(source, Path) and source.is_dir():
            return datasets.load_from_disk(str(config_folder(source, config)))
        if isinstance(source, Path):
            return load_file(source, path, wanted, scan)
        return datasets.load_dataset(source, config or None)
    except UserError:
        raise
    except Exception as err:  # datasets wraps parse errors in many types; the message is what matters
        raise bad(load_problem(source, config, err)) from None


def load_problem(source, config: str, err: Exception) -> str:
    """The Hub's errors name a missing config in their text ("BuilderConfig 'x' not found.
    Available: [...]"); everything else about a Hub id is that it could not be found or fetched."""
    if not isinstance(source, str):
        return f"{source}: {first_line(err)}" if isinstance(err, FileNotFoundError) else f"cannot read {source}: {first_line(err)}"
    text = first_line(err)
    if config and config in str(err) and "onfig" in str(err):
        return f"data.config = {config!r}: not a configuration of {source!r} ({text})"
    return f"{source!r} is not a local file or folder, nor a Hub dataset in the local cache ({text})"


def config_folder(folder: Path, config: str) -> Path:
    """A save_to_disk folder stands for a Hub dataset: its configs are its subfolders, one saved
    dataset each."""
    saved = ("dataset_dict.json", "state.json")  # what save_to_disk writes
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and any((p / name).is_file() for name in saved))
    if not config:
        if found and not any((folder / name).is_file() for name in saved):
            raise bad(f"{folder} holds configurations ({', '.join(found)}); choose one with data.config")
        return folder
    if (folder / config).is_dir():
        return folder / config
    raise bad(f"data.config = {config!r}: no such configuration in {folder} (found: {', '.join(found) or 'none'})")


def load_file(source: Path, path: str, wanted: str, scan: bool):
    import datasets

    loader = FILE_LOADERS.get(source.suffix.lower())
    if loader is None:
        raise bad(f"{source}: unsupported file type; use {', '.join(FILE_LOADERS)}")
    check_text(source)
    with open(source, "rb") as fh:
        empty = not fh.read(4096).strip()
    if empty or (scan and source.suffix.lower() == ".jsonl" and not scan_jsonl(source, wanted)):
        raise bad(f"{path} has no rows")
    return datasets.load_dataset(loader, data_files=str(source), split="train", **csv_as_text(source))


def rename(rows, renames: dict[str, str], source):
    """data.columns: each mapped column renamed to its field; a column already named as the field is
    dropped first (the mapping says which one is meant)."""
    if not renames:
        return rows
    missing = [column for column in renames.values() if column not in rows.column_names]
    if missing:
        raise bad(f"data.columns: no column {missing[0]!r} in {source} (columns: {', '.join(rows.column_names)})")
    clash = [name for name, column in renames.items() if name in rows.column_names and name != column
             and name not in renames.values()]
    rows = rows.remove_columns(clash) if clash else rows
    return rows.rename_columns({column: name for name, column in renames.items() if column != name})


def check_text(source: Path) -> None:
    """Text formats are UTF-8 with rows of sane length, checked in one streamed pass before `datasets`
    reads them: its errors name neither the line nor the byte, and it holds a huge line whole first."""
    if source.suffix.lower() in TEXT_LINE_BYTES:
        problem = text_problem(source, TEXT_LINE_BYTES[source.suffix.lower()])
        if problem:
            raise bad(f"{source}: {problem}")


def csv_as_text(source: Path) -> dict:
    """For a .csv file, `datasets` options that read every cell as the text it is: type inference would
    make the answer "007" the number 7, and an empty cell a missing value."""
    if source.suffix.lower() != ".csv":
        return {}
    import csv

    with open(source, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), [])
    return {"converters": {name: str for name in header}, "na_filter": False}


def split_dict(loaded, source, split: str = ""):
    """The rows trained on (data.split, else `train`) and, when the DatasetDict has one, its own eval
    split (validation, test or eval, never the one trained on)."""
    import datasets

    if isinstance(loaded, datasets.Dataset):
        if split:
            raise bad(f"data.split = {split!r}: {source} has no splits (one set of rows); leave data.split out")
        return loaded, None
    if not isinstance(loaded, datasets.DatasetDict):
        raise bad(f"{source}: not a dataset")
    found = ", ".join(loaded) or "none"
    if split and split not in loaded:
        raise bad(f"data.split = {split!r}: no such split in {source} (found: {found})")
    if not split and "train" not in loaded:
        raise bad(f"{source}: no 'train' split (found: {found}); choose one with data.split")
    name = split or "train"
    held = next((loaded[k] for k in ("validation", "test", "eval") if k in loaded and k != name), None)
    return loaded[name], held


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def check_rows(rows, fmt: str, source: str) -> None:
    """Every row against its format's schema (core/rows.py), before anything is rendered: the first
    bad one is refused by its row number. A .jsonl file was checked by line already; this covers
    .json, .csv, .parquet, saved folders and the Hub, whose values `datasets` keeps as they were."""
    names = [c for c in REQUIRED[fmt] + OPTIONAL.get(fmt, ()) if c in rows.column_names]
    found = first_bad_row(row_dicts(rows.select_columns(names)), fmt)
    if found:
        raise bad(f"{source}: row {found[0]}: {found[1]}")


def row_dicts(rows, batch_size: int = 1000):
    """The rows of a Dataset as dicts, read a batch of columns at a time (faster than row by row)."""
    for batch in rows.iter(batch_size=batch_size):
        names = list(batch)
        for values in zip(*(batch[name] for name in names)):
            yield dict(zip(names, values))


# ---------------------------------------------------------------- rendering rows to text


def as_text(value) -> str:
    """A template column's value as text. Only for columns outside the format's schema (which
    check_rows has made strings already): a template may name any column, as str.format would."""
    return "" if value is None else value if isinstance(value, str) else str(value)


class Renderer:
    """Turns a row into `Rendered`, using the tokenizer's chat template when it has one."""

    def __init__(self, tokenizer, fmt: str, template: str):
        self.tok, self.fmt, self.template = tokenizer, fmt, template
        self.chat = bool(getattr(tokenizer, "chat_template", None)) and not template
        self.eos = tokenizer.eos_token or ""

    def __call__(self, row: dict, index: int) -> Rendered:
        if self.fmt == "text":
            text = row["text"] + self.eos
            return Rendered(text, [(0, len(text))])
        if self.fmt == "chat":
            return self.render_chat(row["messages"], index)
        if self.fmt == "sharegpt":
            return self.render_chat(sharegpt_messages(row["conversations"]), index)
        if self.fmt == "instruction":
            user, extra, answer = row["instruction"], row.get("input") or "", row["output"]
            if self.chat:
                content = f"{user}\n\n{extra}" if extra else user
                return self.render_chat([{"role": "user", "content": content}, {"role": "assistant", "content": answer}], index)
            fields = {k: as_text(v) for k, v in row.items()}
            template = self.template or (PLAIN_TEMPLATE_INPUT if extra else PLAIN_TEMPLATE)
            return self.pair(self.fill(template, fields, index), answer)
        prompt, answer = row["prompt"], row["completion"]
        if self.template:
            prompt = self.fill(self.template, {k: as_text(v) for k, v in row.items()}, index)
        return self.pair(prompt, answer)

    def fill(self, template: str, fields: dict, index: int) -> str:
        try:
            return template.format_map(fields)
        except (KeyError, IndexError, ValueError) as err:
            raise bad(f"row {index + 1}: data.prompt_template needs {first_line(err)}, not a column") from None

    def pair(self, prompt: str, answer: str) -> Rendered:
        text = prompt + answer + self.eos
        return Rendered(text, [(len(prompt), len(text))], prompt, answer)

    def render_chat(self, messages, index: int) -> Rendered:
        if not self.chat:
            raise bad("chat data needs a tokenizer with a chat template (or use data.prompt_template)")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]  # checked by check_rows
        render = self.tok.apply_chat_template
        text = render(messages, tokenize=False)
        spans, prompt, answer = [], None, None
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = render(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
            upto = render(messages[: i + 1], tokenize=False)
            if text.startswith(upto) and upto.startswith(before):  # templates that rewrite history: last turn only
                spans.append((len(before), len(upto)))
            prompt, answer = before, message["content"]
        if not spans and prompt is not None:
            spans = [(len(prompt), len(text))]
        return Rendered(text, spans, prompt, answer)


# ---------------------------------------------------------------- tokens and labels


def tokenize(rendered: list[Rendered], tokenizer, max_seq_len: int, add_special_tokens: bool):
    """input_ids and labels per row; rows with no trained token left after truncation are dropped."""
    encoded = tokenizer(
        [r.text for r in rendered],
        add_special_tokens=add_special_tokens,
        truncation=True,
        max_length=max_seq_len,
        return_offsets_mapping=True,
    )
    ids_out, labels_out, truncated = [], [], 0
    for row, ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
        labels = [tid if trained(start, end, row.spans) else -100 for tid, (start, end) in zip(ids, offsets)]
        truncated += bool(offsets) and offsets[-1][1] < len(row.text.rstrip())
        if any(label != -100 for label in labels):
            ids_out.append(ids)
            labels_out.append(labels)
    return ids_out, labels_out, truncated


def trained(start: int, end: int, spans) -> bool:
    return end > start and any(start < b and end > a for a, b in spans)


def pack(ids: list[list[int]], labels: list[list[int]], max_seq_len: int):
    """Concatenate examples and cut the stream into rows of max_seq_len (the last one shorter)."""
    flat_ids = [t for row in ids for t in row]
    flat_labels = [t for row in labels for t in row]
    cut = range(0, len(flat_ids), max_seq_len)
    return [flat_ids[i : i + max_seq_len] for i in cut], [flat_labels[i : i + max_seq_len] for i in cut]


def eval_count(spec: float | int, n_rows: int) -> int:
    """Rows to hold out: a fraction or a count, always leaving at least one training row."""
    count = spec if isinstance(spec, int) else round(spec * n_rows)
    if spec and count == 0:
        count = 1
    return max(0, min(count, n_rows - 1))


def prepare(data_cfg, tokenizer, seed: int, base_dir: Path | None = None) -> Prepared:
    """Everything from `[data]` to token datasets, checked before any run folder is made."""
    import datasets

    rows, held = read_rows(data_cfg.path, base_dir, data_cfg.format, data_cfg.config, data_cfg.split, data_cfg.columns)
    source = data_cfg.path
    if len(rows) == 0:
        raise bad(f"{source} has no rows")
    fmt = detect_format(list(rows.column_names), data_cfg.format, source)
    check_rows(rows, fmt, source)
    notes = [f"data: {source}: {len(rows)} rows, format {fmt}"]
    if held is None:
        n_eval = eval_count(data_cfg.eval_split, len(rows))
        if n_eval:
            split = rows.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
            rows, held = split["train"], split["test"]
    elif not data_cfg.eval_split:
        held = None

    render = Renderer(tokenizer, fmt, data_cfg.prompt_template)
    special = not render.chat or fmt == "text"
    train_rendered = [render(row, i) for i, row in enumerate(rows)]
    ids, labels, truncated = tokenize(train_rendered, tokenizer, data_cfg.max_seq_len, special)
    if not ids:
        longest = max(len(tokenizer(r.text[: r.spans[0][0]] if r.spans else r.text)["input_ids"]) for r in train_rendered[:200])
        raise bad(
            f"all {len(rows)} rows are longer than data.max_seq_len = {data_cfg.max_seq_len} tokens before their "
            f"answer starts (prompts up to {longest} tokens); raise data.max_seq_len"
        )
    if truncated:
        notes.append(f"data: {truncated} rows truncated to {data_cfg.max_seq_len} tokens")
    if len(ids) < len(rows):
        notes.append(f"data: {len(rows) - len(ids)} rows dropped: their answer lies past max_seq_len")
    if data_cfg.packing:
        ids, labels = pack(ids, labels, data_cfg.max_seq_len)
    prepared = Prepared(datasets.Dataset.from_dict({"input_ids": ids, "labels": labels}), None, fmt, notes)
    prepared.add_special_tokens = special
    prepared.train_rows, prepared.truncated_rows, prepared.max_seq_len = len(rows), truncated, data_cfg.max_seq_len
    if held is not None and len(held):
        detect_format(list(held.column_names), fmt, f"{source} (eval split)")
        check_rows(held, fmt, f"{source} (eval split)")
        eval_rendered = [render(row, i) for i, row in enumerate(held)]
        e_ids, e_labels, _ = tokenize(eval_rendered, tokenizer, data_cfg.max_seq_len, special)
        if e_ids:
            prepared.eval = datasets.Dataset.from_dict({"input_ids": e_ids, "labels": e_labels})
            notes.append(f"data: {len(rows)} train rows, {len(e_ids)} eval rows")
        answered = [r for r in eval_rendered if r.prompt is not None and r.answer is not None]
        if answered and all(len(r.answer) <= MAX_ANSWER_CHARS for r in answered[:EVAL_GENERATE_ROWS]):
            prepared.eval_prompts = [r.prompt for r in answered[:EVAL_GENERATE_ROWS]]
            prepared.eval_answers = [r.answer for r in answered[:EVAL_GENERATE_ROWS]]
    return prepared


# ---------------------------------------------------------------- batches and exact match


class Collator:
    """Right-pads input_ids with the pad token and labels with -100. The attention mask is sent only
    when a row is padded: without one the model takes the plain causal path (an all-ones mask can
    make it build a full mask: 34 MiB more peak for a 1B model at 8 x 1024), and LeanTrainer then
    counts every token of the batch as seen, which is then right."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features):
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        ids = [list(f["input_ids"]) + [self.pad] * (width - n) for f, n in zip(features, lengths)]
        labels = [list(f["labels"]) + [-100] * (width - n) for f, n in zip(features, lengths)]
        batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if min(lengths) < width:
            batch["attention_mask"] = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        return batch


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answer_key(text: str) -> str:
    """What exact match compares: the last number if there is one, else the normalised text."""
    numbers = _NUMBER.findall(text)
    if numbers:
        number = numbers[-1].replace(",", "")
        return number.rstrip("0").rstrip(".") if "." in number else number
    return " ".join(text.lower().split()).rstrip(".!")


def exact_match(model, tokenizer, prompts: list[str], answers: list[str], add_special_tokens: bool) -> float:
    """Greedy-generate each prompt and compare answer keys; as many lines as the reference has.
    Only the generated ids come back: no scores or logits are kept (a model's generation_config may
    ask for them; each would be a batch x vocabulary fp32 tensor per new token on the GPU)."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    max_new = new_tokens_for(max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers))
    hits, step = 0, EVAL_GENERATE_BATCH
    try:
        for i in range(0, len(prompts), step):
            batch = tokenizer(prompts[i : i + step], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                     return_dict_in_generate=False, output_scores=False, output_logits=False)
            texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            del out, batch
            for text, ref in zip(texts, answers[i : i + step]):
                lines = text.strip().splitlines()[: max(1, len(ref.strip().splitlines()))]
                hits += answer_key("\n".join(lines)) == answer_key(ref)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return hits / len(prompts)
