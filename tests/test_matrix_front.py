"""`peft-advisor matrix --study/--front`: the whole study, its Pareto front and the plot."""

from __future__ import annotations

import json

import pytest

from peft_advisor.cli import main
from peft_advisor.core.pareto import dominates, front, tie_bands
from peft_advisor.core.study import StudyRun, runs_of


def _run(name: str, score: float, peak: int, file: int) -> StudyRun:
    return StudyRun(experiment=f"{name}--x", method=name, task="MetaMathQA", score=score, peak_bytes=peak,
                    p99_bytes=peak, train_s=1.0, file_bytes=file, trainable_params=1, source="s",
                    generations=(), spread=None)


def test_front_keeps_only_undominated_runs():
    a, b, c, d = _run("a", 0.5, 10, 10), _run("b", 0.4, 12, 12), _run("c", 0.4, 5, 50), _run("d", 0.5, 10, 10)
    assert dominates(a, b) and not dominates(a, c) and not dominates(a, d)
    assert [r.method for r in front([a, b, c, d])] == ["a", "d", "c"]


def test_tie_bands_open_at_each_band_best():
    runs = [_run("a", 0.50, 1, 1), _run("b", 0.485, 1, 1), _run("c", 0.475, 1, 1), _run("d", 0.46, 1, 1)]
    assert tie_bands(runs) == {"a--x": "A", "b--x": "A", "c--x": "B", "d--x": "B"}


def test_study_front_holds_what_the_issue_names():
    """SHiRA, MiSS, Lily, C3A, LoKr and IA3 are each on the MetaMathQA front (issue 17)."""
    on = {r.method for r in front(runs_of())}
    assert {"shira", "miss", "lily", "c3a", "lokr", "ia3", "hira", "oft"} <= on
    assert not {"adalora", "boft", "prompt_tuning"} & on
    assert "oft" in {r.method for r in front(runs_of("image-gen"))}


def test_cli_front_prints_table_and_plot(capsys):
    assert main(["matrix", "--front"]) == 0
    out = capsys.readouterr().out
    assert "shira (lr_0.0003-random_seed_…" in out and "51.0 %" in out
    assert "INCLUDING evaluation generation at batch 50" in out
    assert "◆ score × file-size front" in out and "● front" in out and "\x1b[" not in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_cli_study_json_cites_every_file(capsys):
    assert main(["matrix", "--study", "--json", "--task", "image-gen"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["runs"]) == len(runs_of("image-gen"))
    assert all(r["source"].startswith("huggingface/peft method_comparison/image-gen/results/") for r in doc["runs"])


@pytest.mark.parametrize("argv, words", [
    (["matrix", "--front", "--task", "audio"], "--task must be one of MetaMathQA, image-gen"),
    (["matrix", "--front", "--markdown"], "--markdown applies to the method matrix"),
    (["matrix", "--front", "--study"], "not allowed with argument"),
])  # fmt: skip
def test_cli_bad_front_input_is_one_line(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
