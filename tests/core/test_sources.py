"""Local model folders and data files against Hub ids (core/sources.py), as launcher and trainer see them."""

from __future__ import annotations

import pytest

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.sources import check_sources, local_data, local_model


def test_local_data_found_as_given_or_beside_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "rows.jsonl").write_text("{}\n")
    assert local_data("recipes/rows.jsonl", None).resolve() == (tmp_path / "recipes" / "rows.jsonl").resolve()
    assert local_data("rows.jsonl", tmp_path / "recipes") == tmp_path / "recipes" / "rows.jsonl"
    assert local_data("HuggingFaceH4/no_robots", None) is None  # a Hub id
    for missing in ("rows.csv", "./x", "/abs/x", "~/x", "a/b/c"):
        with pytest.raises(UserError, match=f"data: no such file or folder: {missing}") as err:
            local_data(missing, tmp_path)
        assert err.value.code == ExitCode.BAD_DATA


def test_local_model_folder_needs_a_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="folder has no config.json"):
        local_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert local_model(str(tmp_path / "m")) == tmp_path / "m"
    assert local_model("llama-3.1-8b") is None and local_model("meta-llama/Llama-3.1-8B") is None
    with pytest.raises(UserError, match="model.id: no such folder: ./gone") as err:
        local_model("./gone")
    assert err.value.code == ExitCode.UNKNOWN_MODEL


def test_the_demo_is_not_checked_here():
    check_sources("demo", "demo", None)  # made on first use, in the trainer


def test_a_home_folder_of_no_such_user_is_one_line():
    """pathlib raises RuntimeError for `~nosuchuser`; every user path is expanded by one helper."""
    from peft_advisor.core.model_spec import load_model_spec

    where = "~nosuchuser-x9/m"
    for call, code, words in ((lambda: local_model(where), ExitCode.UNKNOWN_MODEL, "model.id: "),
                              (lambda: local_data(where, None), ExitCode.BAD_DATA, "data: "),
                              (lambda: load_model_spec(where), ExitCode.UNKNOWN_MODEL, "")):
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value) == f"{words}{where}: no such user's home folder" and err.value.code == code
