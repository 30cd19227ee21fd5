"""Data loading, format detection, prompt masking, packing and exact match, with the byte tokenizer."""

from __future__ import annotations

import json

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.train import data

from tests.train.tiny import byte_tokenizer, sums, write_jsonl


def cfg(path, **changes) -> rc.DataSection:
    return rc.updated(rc.Recipe(), {"data.path": str(path), "data.max_seq_len": 64, **changes}).data


def trained_text(tok, ids, labels) -> str:
    return tok.decode([t for t, label in zip(ids, labels) if label != -100])


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_instruction_rows_train_on_the_answer_only(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "2+3", "input": "", "output": "5"}] * 4)
    prepared = data.prepare(cfg(path, **{"data.eval_split": 1}), tok, seed=0)
    assert prepared.format == "instruction" and len(prepared.train) == 3 and len(prepared.eval) == 1
    row = prepared.train[0]
    assert tok.decode(row["input_ids"]) == "<s>user\n2+3</s>\n<s>assistant\n5</s>\n"
    assert trained_text(tok, row["input_ids"], row["labels"]) == "5</s>\n"
    assert prepared.eval_prompts == ["<s>user\n2+3</s>\n<s>assistant\n"] and prepared.eval_answers == ["5"]


CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "1+1"},
    {"role": "assistant", "content": "2"},
]


def test_chat_rows_train_on_every_assistant_turn(tok, tmp_path):
    messages = CONVERSATION
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}] * 2)
    prepared = data.prepare(cfg(path, **{"data.eval_split": 0, "data.max_seq_len": 128}), tok, seed=0)
    assert prepared.format == "chat" and prepared.eval is None
    row = prepared.train[0]
    assert trained_text(tok, row["input_ids"], row["labels"]) == "hello</s>\n2</s>\n"


def sharegpt_of(messages: list[dict]) -> dict:
    """The same conversation as a ShareGPT row (user -> human, assistant -> gpt)."""
    tags = {"user": "human", "assistant": "gpt", "system": "system"}
    return {"conversations": [{"from": tags[m["role"]], "value": m["content"]} for m in messages]}


def test_sharegpt_rows_tokenize_as_the_same_chat_rows(tok, tmp_path):
    messages = CONVERSATION
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}] * 3)
    share = write_jsonl(tmp_path / "sharegpt.jsonl", [sharegpt_of(messages)] * 3)
    changes = {"data.eval_split": 1, "data.max_seq_len": 128}
    as_chat, as_sharegpt = (data.prepare(cfg(p, **changes), tok, seed=0) for p in (chat, share))
    assert as_sharegpt.format == "sharegpt"
    assert as_sharegpt.train[:] == as_chat.train[:] and as_sharegpt.eval[:] == as_chat.eval[:]
    assert as_sharegpt.eval_prompts == as_chat.eval_prompts and as_sharegpt.eval_answers == ["2"]
    row = as_sharegpt.train[0]
    assert trained_text(tok, row["input_ids"], row["labels"]) == "hello</s>\n2</s>\n"


@pytest.mark.parametrize("conversations, needle", [
    ([{"from": "human", "value": "hi"}], 'no "gpt" turn, so nothing to train on (from: human)'),
    ([{"from": "bot", "value": "hi"}], '"conversations" item 1: "from" must be human, gpt or system, got \'bot\''),
    ([{"from": "gpt"}], '"conversations" item 1: "value" is missing'),
    ("hi", '"conversations" must be a list'),
])
def test_bad_sharegpt_rows_are_one_line_naming_the_row(conversations, needle, tok, tmp_path):
    good = sharegpt_of([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    path = write_jsonl(tmp_path / "bad.jsonl", [good, {"conversations": conversations}])
    with pytest.raises(UserError) as err:
        data.prepare(cfg(path), tok, seed=0)
    assert err.value.code == ExitCode.BAD_DATA and "line 2" in str(err.value) and needle in str(err.value)


def test_prompt_completion_and_text_formats(tok, tmp_path):
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q: 1+2\nA:", "completion": " 3"}] * 2)
    row = data.prepare(cfg(pc, **{"data.eval_split": 0}), tok, seed=0).train[0]
    assert trained_text(tok, row["input_ids"], row["labels"]) == " 3</s>"
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "all of it"}] * 2)
    prepared = data.prepare(cfg(text, **{"data.eval_split": 0}), tok, seed=0)
    assert prepared.format == "text"
    row = prepared.train[0]
    assert trained_text(tok, row["input_ids"], row["labels"]) == "all of it</s>"


def test_prompt_template_replaces_the_chat_template(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "2+3", "output": "5"}] * 2)
    c = cfg(path, **{"data.eval_split": 0, "data.prompt_template": "Q: {instruction}\nA: "})
    row = data.prepare(c, tok, seed=0).train[0]
    assert tok.decode(row["input_ids"]) == "Q: 2+3\nA: 5</s>"  # this tokenizer adds no BOS
    assert trained_text(tok, row["input_ids"], row["labels"]) == "5</s>"


@pytest.mark.parametrize("kind", ["csv", "parquet", "disk"])
def test_other_sources(kind, tok, tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(sums(6))
    if kind == "csv":
        path = tmp_path / "d.csv"
        ds.to_csv(str(path))
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        ds.to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(path))
    prepared = data.prepare(cfg(path), tok, seed=0)
    assert prepared.format == "instruction"
    assert len(prepared.train) + len(prepared.eval) == (8 if kind == "disk" else 6)


def test_packing_fills_rows_to_max_seq_len(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", sums(20))
    plain = data.prepare(cfg(path, **{"data.eval_split": 0}), tok, seed=0).train
    packed = data.prepare(cfg(path, **{"data.eval_split": 0, "data.packing": True}), tok, seed=0).train
    assert sum(map(len, packed["input_ids"])) == sum(map(len, plain["input_ids"]))
    assert all(len(ids) == 64 for ids in packed["input_ids"][:-1])


@pytest.mark.parametrize(
    "rows, changes, needle",
    [
        (None, {}, "no such file or folder"),
        ([{"question": "x"}], {}, "cannot tell the format from columns question"),
        ([{"instruction": "x"}], {"data.format": "instruction"}, "format instruction needs columns instruction, output"),
        ([{"instruction": "x" * 200, "output": "y"}], {"data.max_seq_len": 16}, "all 1 rows are longer than"),
    ],
)
def test_bad_data_is_one_clear_line(rows, changes, needle, tok, tmp_path):
    path = tmp_path / "missing.jsonl" if rows is None else write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(UserError) as err:
        data.prepare(cfg(path, **{"data.eval_split": 0, **changes}), tok, seed=0)
    assert err.value.code == ExitCode.BAD_DATA and needle in str(err.value) and "\n" not in str(err.value)


def test_malformed_json_is_a_user_error(tok, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{not json\n')
    with pytest.raises(UserError) as err:
        data.prepare(cfg(path), tok, seed=0)
    assert err.value.code == ExitCode.BAD_DATA and str(err.value).endswith(
        "d.jsonl: line 2, column 2: not valid JSON (Expecting property name enclosed in double quotes)")
    path.write_text('{"instruction": "a", "output": "b"}\n\n["a", "b"]\n')
    with pytest.raises(UserError, match=r"d\.jsonl: line 3: not a JSON object"):
        data.prepare(cfg(path), tok, seed=0)


@pytest.mark.parametrize(
    "generated, reference, same",
    [("12 + 7 = 19", "19", True), ("1,200", "1200", True), ("19.0", "19", True), ("20", "19", False),
     ("Paris.", "paris", True), ("", "3", False)],
)
def test_answer_key(generated, reference, same):
    assert (data.answer_key(generated) == data.answer_key(reference)) is same


def test_demo_data_is_reproducible(tmp_path, monkeypatch):
    """The committed file is exactly what the committed generator writes."""
    import importlib.util

    from peft_advisor.train.demo import demo_data_path

    shipped = demo_data_path()
    spec = importlib.util.spec_from_file_location("make_demo_data", shipped.with_name("make_demo_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path / "arithmetic.jsonl")
    module.main()
    assert (tmp_path / "arithmetic.jsonl").read_bytes() == shipped.read_bytes()
    rows = [json.loads(line) for line in shipped.read_text().splitlines()]
    assert len(rows) == 2000 and all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert all(data.answer_key(r["output"]).isdigit() for r in rows)


def test_every_file_the_trainer_reads_is_known_to_the_launchers_check():
    from peft_advisor.core.sources import DATA_SUFFIXES

    assert set(data.FILE_LOADERS) == set(DATA_SUFFIXES)


def test_estimate_shape_is_the_longest_row_the_run_sees_and_its_eval(tok, tmp_path):
    """The trainer's own estimate uses the prepared rows, not max_seq_len, and counts the eval
    pass and exact match's generation (prompt + answer tokens + margin)."""
    path = write_jsonl(tmp_path / "s.jsonl", sums(20))
    prepared = data.prepare(cfg(path, **{"data.eval_split": 4, "data.max_seq_len": 512}), tok, seed=0)
    shape = prepared.estimate_shape(tok)
    assert shape["seq_len"] == max(len(ids) for ids in prepared.train["input_ids"]) < 512
    assert shape["eval_seq_len"] == max(len(ids) for ids in prepared.eval["input_ids"])
    assert shape["generate_len"] > max(len(tok(p)["input_ids"]) for p in prepared.eval_prompts)
    assert "generate_len" not in prepared.estimate_shape(tok, generate=False)
    packed = data.prepare(cfg(path, **{"data.eval_split": 0, "data.max_seq_len": 48, "data.packing": True}), tok, seed=0)
    assert packed.estimate_shape(tok) == {"seq_len": 48}


@pytest.fixture
def hub_like(tmp_path):
    """A save_to_disk folder that stands for a Hub dataset: two configs (subfolders), each with
    several splits, and columns named as the dataset's authors named them."""
    import datasets

    rows = [{"question": f"{a}+{a}", "answer": str(2 * a), "output": "not this"} for a in range(12)]
    ds = datasets.Dataset.from_list(rows)
    for config in ("main", "socratic"):
        datasets.DatasetDict({"train": ds, "test": ds.select(range(3)), "extra": ds.select(range(5))}).save_to_disk(
            str(tmp_path / "gsm" / config))
    return tmp_path / "gsm"


def test_config_split_and_columns_choose_what_is_trained_on(hub_like, tok):
    columns = {"data.config": "socratic", "data.split": "extra", "data.columns": "instruction=question,output=answer"}
    prepared = data.prepare(cfg(hub_like, **columns), tok, seed=0)
    assert prepared.format == "instruction" and len(prepared.train) == 5 and len(prepared.eval) == 3  # the test split
    assert prepared.eval_answers[0] == "0" and "0+0" in prepared.eval_prompts[0]  # `answer`, not the old `output`


@pytest.mark.parametrize("changes, needle", [
    ({"data.config": "mian"}, "data: data.config = 'mian': no such configuration in {gsm} (found: main, socratic)"),
    ({"data.config": "main", "data.split": "validation"},
     "data: data.split = 'validation': no such split in {gsm}/main (found: train, test, extra)"),
    ({"data.config": "main", "data.columns": "instruction=query,output=answer"},
     "data: data.columns: no column 'query' in {gsm}/main (columns: question, answer, output)"),
    ({}, "data: {gsm} holds configurations (main, socratic); choose one with data.config"),
])
def test_a_wrong_config_split_or_column_is_named(changes, needle, hub_like, tok):
    with pytest.raises(UserError) as err:
        data.prepare(cfg(hub_like, **changes), tok, seed=0)
    assert err.value.code == ExitCode.BAD_DATA
    assert str(err.value).startswith(needle.format(gsm=hub_like)), str(err.value)


def test_a_column_mapping_on_a_local_jsonl_and_on_the_command_line(tok, tmp_path):
    import subprocess
    import sys

    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": f"{a}*2", "a": str(2 * a)} for a in range(8)])
    prepared = data.prepare(cfg(path, **{"data.columns": "prompt=q,completion=a", "data.eval_split": 2}), tok, seed=0)
    assert prepared.format == "prompt_completion" and len(prepared.train) == 6
    recipe = rc.save(rc.updated(rc.Recipe(), {"data.path": str(path), "data.columns": "prompt=q,completion=b"}),
                     tmp_path / "r.toml")
    done = subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.BAD_DATA, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"peft-advisor: data: data.columns: no column 'b' in {path} (columns: q, a)"
    assert not (tmp_path / "run").exists()
