"""The README's matrix block is generated from the catalog; the `matrix` command prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peft_advisor.cli import main
from peft_advisor.core.catalog import METHOD_IDS, load_catalog
from peft_advisor.core.matrix import END, START, WRITE_README, block_body, readme_block, render_markdown, write_readme

REPO = Path(__file__).resolve().parents[1]


def test_readme_matrix_is_current():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme_block(text)
    assert block is not None, f"README.md needs a {START} … {END} block under '## Trade-off matrix'"
    expected = block_body(render_markdown(load_catalog()))
    assert block == expected, f"README.md's trade-off matrix is stale; run: {WRITE_README}"


def test_writer_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{START}\nold\n{END}\nafter\n", encoding="utf-8")
    assert write_readme(readme) is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n" + START)
    assert text.endswith(END + "\nafter\n")
    assert readme_block(text) == block_body(render_markdown(load_catalog()))
    assert write_readme(readme) is False  # idempotent
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temp file left behind


def test_writer_refuses_a_readme_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "peft_advisor.core.matrix", "--write-readme", str(readme)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "has no <!-- matrix:start -->" in proc.stderr
    assert readme.read_text(encoding="utf-8") == "# no markers\n"


def test_cli_matrix_table(capsys):
    assert main(["matrix"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["Method", "Quality"]
    assert all(m.name in out for m in load_catalog().values())
    assert max(len(line) for line in out.splitlines()) <= 100


def test_cli_matrix_markdown(capsys):
    assert main(["matrix", "--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown(load_catalog())


def test_cli_matrix_json(capsys):
    assert main(["matrix", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in doc["methods"]] == list(METHOD_IDS)
    dora = doc["methods"][METHOD_IDS.index("dora")]
    assert dora["memory_vs_lora"] == pytest.approx(1.10) and dora["in_study"] is True
    assert isinstance(dora["sources"], list) and dora["sources"]
    assert doc["methods"][METHOD_IDS.index("galore")]["memory_vs_lora"] is None


def test_cli_matrix_formats_are_exclusive(capsys):
    assert main(["matrix", "--json", "--markdown"]) == 2
    assert "not allowed with" in capsys.readouterr().err
