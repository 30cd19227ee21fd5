"""Files that are not what they seem (issue 12, item 5): a FIFO, a device, a huge or sparse file, a
file that is not UTF-8. Each is one line and an exit code, at once, before any child or run folder;
nothing blocks on a pipe or reads gigabytes first."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.limits import MAX_DATA_FILE_BYTES, MAX_LINE_BYTES, MAX_RECIPE_BYTES
from peft_advisor.core.sources import check_sources, local_data

from tests.train.tiny import byte_tokenizer

QUICK_S = 20  # far above a refusal's milliseconds, far below a hang or a gigabyte read


def cli(*args, timeout=QUICK_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("peft-advisor: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def sparse(path, size: int):
    with open(path, "wb") as fh:
        fh.truncate(size)  # holes: no disk space, and st_size is the apparent size
    return path


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.toml"
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_fifo_as_recipe_is_refused_at_once(command, fifo):
    done = cli(command, fifo)
    assert done.returncode == ExitCode.BAD_RECIPE
    assert one_line(done) == f"peft-advisor: {fifo}: a FIFO (named pipe), not a regular file"


def test_a_device_or_folder_as_recipe_is_refused(tmp_path):
    for path, kind in (("/dev/null", "a character device"), (tmp_path, "a folder")):
        with pytest.raises(UserError) as err:
            rc.load(path)
        assert str(err.value) == f"{path}: {kind}, not a regular file" and err.value.code == ExitCode.BAD_RECIPE


def test_a_huge_recipe_is_refused_before_it_is_read(tmp_path):
    path = sparse(tmp_path / "big.toml", 2 * 1024**3)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        rc.load(path)
    assert time.monotonic() - started < 1
    assert err.value.code == ExitCode.BAD_RECIPE
    assert str(err.value) == f"{path}: 2.00 GiB; a recipe file is at most 1.0 MiB (is it the right file?)"
    sparse(tmp_path / "fits.toml", MAX_RECIPE_BYTES)  # at the ceiling: read (and refused for what it holds)
    with pytest.raises(UserError, match="fits.toml: "):
        rc.load(tmp_path / "fits.toml")


# ---------------------------------------------------------------- data files, in the launcher


def test_a_fifo_as_data_is_refused_by_the_launcher(make_recipe, tmp_path):
    pipe = tmp_path / "rows.jsonl"
    os.mkfifo(pipe)
    run_dir = tmp_path / "runs" / "x"
    done = cli("train", make_recipe(**{"data.path": str(pipe)}), "--run-dir", run_dir, timeout=60)
    assert done.returncode == ExitCode.BAD_DATA
    assert one_line(done) == f"peft-advisor: data: {pipe}: a FIFO (named pipe), not a regular file"
    assert not (tmp_path / "runs").exists()


def test_a_device_as_data_is_refused():
    with pytest.raises(UserError) as err:
        check_sources("demo", "/dev/null", None)
    assert str(err.value) == "data: /dev/null: a character device, not a regular file"
    assert err.value.code == ExitCode.BAD_DATA


def test_a_data_file_over_the_ceiling_is_refused_from_its_size(tmp_path):
    path = sparse(tmp_path / "huge.jsonl", MAX_DATA_FILE_BYTES + 1)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        local_data(str(path), None)
    assert time.monotonic() - started < 1 and err.value.code == ExitCode.BAD_DATA
    assert str(err.value).startswith(f"data: {path}: 4.00 GiB; a data file is at most 4.00 GiB")
    assert local_data(str(tmp_path), None) == tmp_path  # a saved datasets folder has no ceiling


# ---------------------------------------------------------------- data files, in the trainer


def cfg(path, **changes):
    return rc.updated(rc.Recipe(), {"data.path": str(path), "data.max_seq_len": 64, "data.eval_split": 0,
                                    **changes}).data


def prepare_error(path, **changes) -> UserError:
    from peft_advisor.train import data

    with pytest.raises(UserError) as err:
        data.prepare(cfg(path, **changes), byte_tokenizer(), seed=0)
    assert err.value.code == ExitCode.BAD_DATA and "\n" not in str(err.value)
    return err.value


def test_a_sparse_file_under_the_size_ceiling_stops_at_its_first_line(tmp_path):
    """The issue's 2 GB sparse .jsonl took 536 s and 4.3 GB of RAM; its first line is all NUL bytes."""
    path = sparse(tmp_path / "holes.jsonl", MAX_LINE_BYTES + 4096)
    started = time.monotonic()
    err = prepare_error(path)
    assert time.monotonic() - started < 5
    assert str(err) == f"data: {path}: line 1 is longer than 64.0 MiB, the most one row may be"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_bytes_that_are_not_utf8_are_named_by_line(suffix, tmp_path):
    head = {".jsonl": b'{"instruction": "a", "output": "b"}\n',
            ".json": b'[\n  {"instruction": "a", "output": "b"},\n',
            ".csv": b"instruction,output\na,b\n"}[suffix]
    bad = {".jsonl": b'{"instruction": "c", "output": "caf\xe9"}\n',
           ".json": b'  {"instruction": "c", "output": "caf\xe9"}\n]\n',
           ".csv": b"c,caf\xe9\n"}[suffix]
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(head + bad)
    column = bad.index(b"\xe9") + 1
    line = head.count(b"\n") + 1
    assert str(prepare_error(path)) == (
        f"data: {path}: line {line}, column {column}: not UTF-8 (byte 0xe9); save the file as UTF-8")


def test_a_bad_byte_after_the_first_block_is_still_placed(tmp_path):
    """The check reads in blocks; a character cut by a block's end is not an error, a bad byte far on is."""
    row = '{"instruction": "\u00e9\u00e9\u00e9", "output": "b"}\n'.encode()
    rows = row * (3 * 1024 * 1024 // len(row))
    path = tmp_path / "rows.jsonl"
    path.write_bytes(rows + b'{"instruction": "x", "output": "\xff"}\n')
    line = rows.count(b"\n") + 1
    assert str(prepare_error(path)).endswith(f"line {line}, column 33: not UTF-8 (byte 0xff); save the file as UTF-8")


def test_the_file_checks_are_pure():
    """The launcher makes them without the training stack (as core/sources.py's check of a missing file)."""
    from tests.test_import_hygiene import leaked

    assert leaked("import peft_advisor.core.files, peft_advisor.core.sources, peft_advisor.core.recipe") == []
