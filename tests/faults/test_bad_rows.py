"""Rows that parse but are wrong (issue 12, item 4): each row is checked against its format's
schema before the first step, the first bad one refused by line (or row) and field; nothing is
coerced. The schema check is pure (core/rows.py); the trainer applies it in setup."""

from __future__ import annotations

import json

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.rows import row_problem, scan_jsonl

from tests.train.tiny import byte_tokenizer, write_jsonl

MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("row, fmt, problem", [
    ({"instruction": 5, "output": "x"}, "instruction", '"instruction" must be a string, got a number (5)'),
    ({"instruction": "a", "output": None}, "instruction", '"output" must be a string, got null'),
    ({"instruction": ["a"], "output": "b"}, "instruction", '"instruction" must be a string, got a list'),
    ({"instruction": "a", "output": {"x": 1}}, "instruction", '"output" must be a string, got an object'),
    ({"instruction": "a", "output": True}, "instruction", '"output" must be a string, got a boolean'),
    ({"instruction": "a"}, "instruction", '"output" is missing'),
    ({"instruction": "a", "output": "b", "input": 3}, "instruction", '"input" must be a string, got a number (3)'),
    ({"instruction": "a", "output": "b", "input": None}, "instruction", None),  # columnar files' "absent"
    ({"instruction": "a", "output": "b"}, "instruction", None),
    ({"instruction": "a", "output": "", "id": 7}, "instruction", None),  # other columns are left alone
    ({"prompt": "a", "completion": 1.5}, "prompt_completion", '"completion" must be a string, got a number (1.5)'),
    ({"completion": "b"}, "prompt_completion", '"prompt" is missing'),
    ({"text": None}, "text", '"text" must be a string, got null'),
    ({"messages": MESSAGES}, "chat", None),
    ({"messages": "hi"}, "chat", '"messages" must be a list of {"role", "content"} objects, got a string'),
    ({"messages": []}, "chat", '"messages" is empty'),
    ({"messages": ["hi"]}, "chat", '"messages" item 1 must be an object with "role" and "content", got a string'),
    ({"messages": [MESSAGES[0], {"role": "assistant"}]}, "chat", '"messages" item 2: "content" is missing'),
    ({"messages": [MESSAGES[0], {"role": "assistant", "content": 4}]}, "chat",
     '"messages" item 2: "content" must be a string, got a number (4)'),
    ({"messages": [{"role": None, "content": "x"}]}, "chat", '"messages" item 1: "role" must be a string, got null'),
    ({"messages": [{"role": "human", "content": "a"}, {"role": "gpt", "content": "b"}]}, "chat",
     '"messages" has no "assistant" message, so nothing to train on (roles: human, gpt)'),
    ({"text": "x"}, "chat", '"messages" is missing'),
])
def test_row_schema(row, fmt, problem):
    assert row_problem(row, fmt) == problem


def jsonl(path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_the_first_bad_line_is_named_by_its_number(tmp_path):
    path = jsonl(tmp_path / "rows.jsonl", [{"instruction": "a", "output": "b"}, "",
                                           {"instruction": "c", "output": None}, {"instruction": 1, "output": "d"}])
    with pytest.raises(UserError) as err:
        scan_jsonl(path)
    assert str(err.value) == f'data: {path}: line 3: "output" must be a string, got null'
    assert err.value.code == ExitCode.BAD_DATA


def test_the_format_comes_from_every_line_s_columns(tmp_path):
    """As `datasets` reads the file: the union of the keys; a row of another format is then missing fields."""
    path = jsonl(tmp_path / "rows.jsonl", [{"text": "only text"}, {"instruction": "a", "output": "b"}])
    with pytest.raises(UserError, match='rows.jsonl: line 1: "instruction" is missing$'):
        scan_jsonl(path)
    good = jsonl(tmp_path / "good.jsonl", [{"messages": MESSAGES}] * 3 + [""])
    assert scan_jsonl(good) == 3
    with pytest.raises(UserError, match=r"good.jsonl: format text needs columns text; found messages$"):
        scan_jsonl(good, "text")  # no line has the column: said of the file, as before


def test_a_line_that_is_not_json_stops_the_scan(tmp_path):
    path = jsonl(tmp_path / "rows.jsonl", [{"instruction": "a", "output": None}, "[1, 2]"])
    with pytest.raises(UserError, match=r"rows.jsonl: line 2: not a JSON object"):
        scan_jsonl(path)


def test_the_row_check_is_pure():
    from tests.test_import_hygiene import leaked

    assert leaked("import peft_advisor.core.rows") == []


# ---------------------------------------------------------------- in the trainer's data preparation


def cfg(path, **changes):
    return rc.updated(rc.Recipe(), {"data.path": str(path), "data.max_seq_len": 64, "data.eval_split": 0,
                                    **changes}).data


def prepare(path, **changes):
    from peft_advisor.train import data

    return data.prepare(cfg(path, **changes), byte_tokenizer(), seed=0)


def refused(path, **changes) -> str:
    with pytest.raises(UserError) as err:
        prepare(path, **changes)
    assert err.value.code == ExitCode.BAD_DATA and "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("bad, words", [
    ({"instruction": 5, "output": None}, '"instruction" must be a string, got a number (5)'),
    ({"instruction": "a", "output": None}, '"output" must be a string, got null'),
    ({"instruction": ["x"], "output": {"a": 1}}, '"instruction" must be a string, got a list'),
    ({"text": "no instruction here"}, '"instruction" is missing'),
])
def test_jsonl_rows_are_refused_by_line(bad, words, tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "1+1", "output": "2"}] * 2 + [bad])
    assert refused(path) == f"data: {path}: line 3: {words}"


def test_chat_rows_without_an_assistant_turn_are_refused_not_dropped(tmp_path):
    rows = [{"messages": MESSAGES}, {"messages": [{"role": "human", "content": "a"}, {"role": "gpt", "content": "b"}]}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    assert refused(path, **{"data.max_seq_len": 128}) == (
        f'data: {path}: line 2: "messages" has no "assistant" message, so nothing to train on (roles: human, gpt)')


@pytest.mark.parametrize("kind", ["parquet", "json", "disk"])
def test_other_sources_are_refused_by_row(kind, tmp_path):
    import datasets

    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}]
    if kind == "json":
        path = tmp_path / "rows.json"
        path.write_text(json.dumps(rows, indent=1))
    elif kind == "parquet":
        path = tmp_path / "rows.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    assert refused(path) == f'data: {path}: row 2: "completion" must be a string, got null'


def test_a_json_number_is_not_trained_as_text(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": 7}]))
    assert refused(path) == f'data: {path}: row 2: "completion" must be a string, got a number (7)'


def test_csv_cells_are_text_as_written(tmp_path):
    """A CSV has no types: "007" is the answer "007", not the number 7 that type inference made of it,
    and an empty cell is the empty string, not a missing value."""
    path = tmp_path / "rows.csv"
    path.write_text("instruction,input,output\nzero zero seven,,007\nx,,1e3\n")
    prepared = prepare(path)
    tok = byte_tokenizer()
    texts = [tok.decode(ids) for ids in prepared.train["input_ids"]]
    assert texts == ["<s>user\nzero zero seven</s>\n<s>assistant\n007</s>\n", "<s>user\nx</s>\n<s>assistant\n1e3</s>\n"]


def test_the_trainer_refuses_a_bad_row_before_the_run_folder(make_recipe, tmp_path, capsys):
    from peft_advisor.train.__main__ import main

    data = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "1+1", "output": "2"}] * 8
                       + [{"instruction": "2+2", "output": None}])
    run_dir = tmp_path / "run"
    assert main([str(make_recipe(**{"data.path": str(data)})), "--run-dir", str(run_dir)]) == ExitCode.BAD_DATA
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("peft-advisor: ")]
    assert err == [f'peft-advisor: data: {data}: line 9: "output" must be a string, got null']
    assert not run_dir.exists()
