"""`peft-advisor data`, and `--data` in the advice: the trainer's own rows, counted in tokens.

The tiny model's byte tokenizer makes every length exact (one token per byte, one for </s>); the
demo data with the demo's real tokenizer is the case a person runs first."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.data_scan import ApproxTokenizer, profile
from tests.train.tiny import write_jsonl

ROWS = {
    "instruction": {"instruction": "add 2 and 3", "input": "", "output": "5"},
    "chat": {"messages": [{"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": "5"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "add 2 and 3"}, {"from": "gpt", "value": "5"}]},
    "prompt_completion": {"prompt": "2+3=", "completion": "5"},
    "text": {"text": "abcd"},
}


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "peft_advisor", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("fmt", list(ROWS))
def test_each_format_is_detected_and_counted_with_the_models_tokenizer(fmt, tiny_model, tmp_path):
    path = write_jsonl(tmp_path / f"{fmt}.jsonl", [ROWS[fmt]] * 3)
    prof = profile(str(path), str(tiny_model))
    assert prof.format == fmt and prof.rows == 3 and prof.exact
    assert prof.counted_by == f"the tokenizer of {tiny_model}"
    if fmt == "text":
        assert prof.lengths == (5, 5, 5)  # 4 bytes and </s>


def test_lengths_truncation_share_and_the_99_percent_length(tiny_model, tmp_path):
    rows = [{"text": "x" * 9}] * 98 + [{"text": "x" * 49}, {"text": "x" * 199}]  # 10, 50 and 200 tokens with </s>
    prof = profile(str(write_jsonl(tmp_path / "long.jsonl", rows)), str(tiny_model))
    assert prof.lengths[0] == 10 and prof.lengths[-1] == 200
    assert prof.cut_share(100) == 0.01 and prof.cut_share(32) == 0.02
    assert prof.keep_len() == 50
    assert prof.seq_len_for(128) == 128 and prof.seq_len_for(4096) == 200


def test_sharegpt_is_counted_as_its_chat_twin_and_shows_its_role_tags(tiny_model, tmp_path):
    """A generated ShareGPT file: the same lengths as the same conversations in `messages` form,
    and `peft-advisor data` names the format with its role tags."""
    share = [{"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "q" * n},
                                {"from": "gpt", "value": "a" * (n % 7 + 1)}]} for n in range(1, 41)]
    tags = {"human": "user", "gpt": "assistant", "system": "system"}
    chat = [{"messages": [{"role": tags[t["from"]], "content": t["value"]} for t in r["conversations"]]} for r in share]
    path = write_jsonl(tmp_path / "sharegpt.jsonl", share)
    prof = profile(str(path), str(tiny_model))
    twin = profile(str(write_jsonl(tmp_path / "chat.jsonl", chat)), str(tiny_model))
    assert prof.format == "sharegpt" and prof.lengths == twin.lengths and prof.rows == 40
    assert prof.roles == ("system", "human", "gpt") and twin.roles == ("system", "user", "assistant")
    proc = cli("data", str(path), "--model", str(tiny_model))
    assert proc.returncode == 0, proc.stderr
    assert "format sharegpt (system → system, human → user, gpt → assistant) · 40 rows" in proc.stdout
    assert json.loads(cli("data", str(path), "--model", str(tiny_model), "--json").stdout)["roles"] == [
        "system", "human", "gpt"]


def test_no_local_tokenizer_means_the_approximation_said(tmp_path):
    prof = profile(str(write_jsonl(tmp_path / "t.jsonl", [{"text": "x" * 40}])), "llama-3.1-8b")
    assert not prof.exact and "characters / 4" in prof.counted_by and "llama-3.1-8b" in prof.counted_by
    assert prof.lengths == (ApproxTokenizer()("x" * 40 + "</s>")["input_ids"].__len__(),)


def test_the_demo_data_with_the_demo_tokenizer():
    prof = profile("demo", "demo")
    assert prof.format == "instruction" and prof.rows == 2000 and prof.exact
    assert 40 < prof.lengths[-1] < 128 and prof.cut_share(1024) == 0
    assert prof.generate_len() > 0  # short numeric answers: exact match generates


def test_bad_data_is_one_line_with_bad_data(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(UserError) as err:
        profile(str(bad), "demo")
    assert err.value.code == ExitCode.BAD_DATA and "cannot tell the format" in str(err.value)


def test_columns_name_a_datasets_own_columns_as_the_trainer_does(tmp_path):
    """GSM8K-shaped rows (question, answer): the error says how to name them, --columns does, and
    recommend --export writes the mapping into the recipe's data.columns."""
    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(20)])
    proc = cli("data", str(qa), "--model", "demo")
    assert proc.returncode == ExitCode.BAD_DATA and "--columns instruction=question,output=answer" in proc.stderr
    proc = cli("data", str(qa), "--model", "demo", "--columns", "instruction=question,output=answer", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "instruction" and json.loads(proc.stdout)["rows"] == 20
    proc = cli("data", str(qa), "--columns", "instr=question")
    assert proc.returncode == ExitCode.USAGE and proc.stderr.count("\n") == 1 and "did you mean instruction" in proc.stderr
    out = tmp_path / "r.toml"
    proc = cli("recommend", "--model", "demo", "--vram", "4", "--data", str(qa), "--columns",
               "instruction=question,output=answer", "--export", str(out))
    assert proc.returncode == 0, proc.stderr
    assert 'columns = "instruction=question,output=answer"' in out.read_text()


def test_data_command_shows_format_rows_histogram_cut_share_and_99_percent(tiny_model, tmp_path):
    rows = [{"text": "x" * 9}] * 98 + [{"text": "x" * 49}, {"text": "x" * 199}]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    proc = cli("data", str(path), "--model", str(tiny_model), "--max-seq-len", "100")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "format text" in out and "100 rows" in out and "█" in out
    assert "max_seq_len 100 cuts 1.0% of rows (1)" in out
    assert "keeps 99 % of rows whole: 50" in out
    data = json.loads(cli("data", str(path), "--model", str(tiny_model), "--max-seq-len", "100", "--json").stdout)
    assert data["cut_share"] == 0.01 and data["keep_99_len"] == 50 and data["estimate_seq_len"] == 100


def test_data_command_refuses_an_uncached_hub_id_in_one_line():
    proc = cli("data", "nobody/no-such-dataset", "--model", "demo")
    assert proc.returncode == ExitCode.BAD_DATA
    assert proc.stderr.count("\n") == 1 and "not a local file or folder, nor a Hub dataset in the local cache" in proc.stderr


def test_recommend_with_short_rows_estimates_lower_and_says_so():
    base = ["recommend", "--model", "demo", "--vram", "80", "--seq", "1024", "--batch", "8", "--json"]
    without = json.loads(cli(*base).stdout)
    proc = cli(*base, "--data", "demo")
    assert proc.returncode == 0, proc.stderr
    with_data = json.loads(proc.stdout)
    by_method = {r["method"]: r for r in without["recommendations"]}
    for rec in with_data["recommendations"]:  # a card with room: the same settings, but 72-token rows
        assert not rec["adjustments"] and rec["peak_bytes"] < by_method[rec["method"]]["peak_bytes"]
    best = with_data["recommendations"][0]
    assert any("instead of 1024" in r for r in best["reasons"])
    assert any(r.startswith("evaluation") or r.startswith("peak: the evaluation") for r in best["reasons"])
    assert with_data["data"]["estimate_seq_len"] < 128 and with_data["data"]["max_seq_len"] == 1024


def test_estimate_with_data_and_export_keeps_max_seq_len(tmp_path):
    proc = cli("estimate", "--model", "demo", "--method", "lora", "--vram", "4", "--seq", "1024", "--data", "demo")
    assert proc.returncode == 0, proc.stderr
    assert "instead of 1024" in proc.stdout
    out = tmp_path / "r.toml"
    proc = cli("recommend", "--model", "demo", "--vram", "4", "--seq", "1024", "--data", "demo", "--export", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "max_seq_len = 1024" in text and 'path = "demo"' in text
