"""Rows cut at data.max_seq_len are said on the terminal, not only in train.log (issue 12, item 12a).
The trainer puts the count in the `start` event; `train` and `monitor` add it to the start line when
more than a handful of rows were cut (more than 3 rows, or more than 1 % of them)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from peft_advisor.cli.runs_cmd import format_event
from peft_advisor.core import recipe as rc
from peft_advisor.core.events import RunSummary, make_event, parse_line, to_line, truncation_note

from tests.train.tiny import byte_tokenizer, sums, write_jsonl


@pytest.mark.parametrize("cut, rows, note", [
    (12, 640, "; 12 of 640 rows cut at max_seq_len 512"),
    (4, 100_000, "; 4 of 100000 rows cut at max_seq_len 512"),  # more than 3 rows
    (1, 20, "; 1 of 20 rows cut at max_seq_len 512"),  # more than 1 % of the rows
    (3, 640, ""),  # a handful of a large set: train.log only
    (0, 640, ""),
    (None, None, ""),  # a run from before the field, or a hand-written file
])
def test_truncation_note(cut, rows, note):
    event = make_event("start", truncated_rows=cut, train_rows=rows, max_seq_len=512)
    assert truncation_note(event) == note


def start_line(**fields) -> str:
    event = parse_line(to_line(make_event("start", method="lora", model="m", device="cpu", total_steps=4, **fields)))
    return format_event(event, RunSummary().apply(event))


def test_the_start_line_says_how_many_rows_were_cut():
    assert start_line(truncated_rows=12, train_rows=640, max_seq_len=512).endswith(
        "4 steps; 12 of 640 rows cut at max_seq_len 512")
    assert start_line(truncated_rows=2, train_rows=640, max_seq_len=512).endswith("4 steps")
    assert start_line(truncated_rows="many", train_rows=640, max_seq_len=512).endswith("4 steps")  # wrong type: dropped


def test_prepare_counts_the_rows_it_cuts(tmp_path):
    from peft_advisor.train import data

    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "short", "output": "ok"}] * 6
                       + [{"instruction": "q", "output": "a long answer " * 10}] * 4)
    config = rc.updated(rc.Recipe(), {"data.path": str(path), "data.max_seq_len": 40, "data.eval_split": 2}).data
    prepared = data.prepare(config, byte_tokenizer(), seed=0)
    assert prepared.start_fields() == {"truncated_rows": prepared.truncated_rows, "train_rows": 8, "max_seq_len": 40}
    assert 1 <= prepared.truncated_rows <= 4
    assert f"data: {prepared.truncated_rows} rows truncated to 40 tokens" in prepared.notes


def test_train_shows_the_cut_rows_on_the_terminal(make_recipe, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", sums(24))
    recipe = make_recipe(**{"data.path": str(data), "data.max_seq_len": 25, "data.eval_split": 0,
                            "train.max_steps": 1, "train.save_every": 0, "train.eval_every": 0})
    done = subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    start = done.stdout.splitlines()[0]
    assert re.search(r"; \d+ of 24 rows cut at max_seq_len 25$", start), start
