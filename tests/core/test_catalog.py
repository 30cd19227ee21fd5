"""The trade-off matrix data: strict schema, complete ids, citations, and figures that agree with
the study's raw result files (recomputed by bench/study_figures.py)."""

from __future__ import annotations

import importlib.util
import sys
from importlib import resources
from pathlib import Path

import pytest
import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from peft_advisor.core.catalog import (
    METHOD_IDS,
    CatalogError,
    load_catalog,
    parse_catalog,
    quality_from_delta,
    speed_from_time_ratio,
)
from peft_advisor.core.errors import UserError
from peft_advisor.core.matrix import render_markdown, render_table

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO.parent / "shared" / "peft_method_comparison_results"
CITE = "huggingface/peft method_comparison/MetaMathQA/results/{}.json @ 5d602fd"


def _raw() -> dict:
    text = resources.files("peft_advisor.data").joinpath("methods.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _parse(doc: dict) -> dict:
    return parse_catalog(tomli_w.dumps(doc), source="test.toml")


# ---- ids and completeness ------------------------------------------------------------------------


def test_every_method_once_in_order():
    catalog = load_catalog()
    assert tuple(catalog) == METHOD_IDS
    assert len(set(METHOD_IDS)) == len(METHOD_IDS)
    assert all(m.id == key for key, m in catalog.items())


def test_ids_match_the_estimator():
    estimate = pytest.importorskip("peft_advisor.core.estimate")
    assert METHOD_IDS == tuple(estimate.METHODS)


def test_load_is_cached_but_callers_get_their_own_dict():
    first = load_catalog()
    first.pop("lora")
    assert "lora" in load_catalog()


def test_every_method_has_sources_and_study_methods_cite_their_result_files():
    for m in load_catalog().values():
        assert m.sources, m.id
        if m.in_study:
            assert CITE.format(m.study_run) in m.sources, m.id
            assert CITE.format(m.study_baseline) in m.sources, m.id


def test_methods_outside_the_study_are_marked():
    """STUDY.md §7: LoRA+, GaLore and QLoRA have no benchmark numbers."""
    catalog = load_catalog()
    for method_id in ("loraplus", "galore", "qlora"):
        m = catalog[method_id]
        assert not m.in_study
        assert m.memory_vs_lora is None and m.time_vs_lora is None and m.quality_delta_pp is None
        assert "Not in the study" in m.quality_evidence


def test_the_data_says_what_was_measured():
    """Where the popular summary and the study disagree (STUDY.md §7), the measurement wins."""
    c = load_catalog()
    assert c["dora"].quality == c["lora"].quality  # not better
    assert c["dora"].memory_vs_lora > 1.05 and c["dora"].time_vs_lora > 1.2
    assert c["rslora"].quality > c["lora"].quality
    assert c["vera"].quality_delta_pp <= -10 and c["vera"].quality == 1
    assert "galore-torch" in c["galore"].requires
    assert {"cuda", "bitsandbytes"} <= set(c["qlora"].requires)


def test_ordinals_follow_the_rules_where_measured():
    from peft_advisor.core.speed import measured_step_time

    for m in load_catalog().values():
        if m.quality_delta_pp is not None:
            assert m.quality == quality_from_delta(m.quality_delta_pp), m.id
        if measured_step_time(m.id) is not None:  # the one speed figure: this stack's H200 step time
            assert m.speed == speed_from_time_ratio(measured_step_time(m.id)), m.id
        elif m.time_vs_lora is not None:  # else the study's training time, which the advice then quotes
            assert m.speed == speed_from_time_ratio(m.time_vs_lora), m.id


def test_catalog_builders_and_speed_data_name_the_same_methods():
    from peft_advisor.core.recipe import methods
    from peft_advisor.core.speed import speed_table
    from peft_advisor.train.methods import BUILDERS

    assert tuple(BUILDERS) == METHOD_IDS == methods()
    measured = {key.split("+")[0] for key in speed_table()["methods"]}  # galore+layerwise: a GaLore variant
    assert measured <= set(METHOD_IDS)
    for m in load_catalog().values():  # GPU runs are owed for some of the methods added in issue 17
        assert m.memory_measured != any(c.startswith("Memory not yet measured on a GPU") for c in m.caveats), m.id
        assert m.id not in measured or m.memory_measured, m.id  # a speed figure comes from a GPU run


def test_per_method_facts():
    from dataclasses import fields as dc_fields

    from peft_advisor.core.catalog import alpha_for, cuda_reason, ids_of_family, multi_gpu_refusal
    from peft_advisor.core.estimate import Settings

    assert ids_of_family("lora") == ("lora", "rslora", "dora", "loraplus", "qlora", "lorafa", "pissa", "olora")
    assert ids_of_family("full") == ("full", "galore")
    switches = {f.name for f in dc_fields(Settings)}
    for m in load_catalog().values():
        assert set(m.cuda_switches) | set(m.single_gpu_switches) <= switches, m.id
    assert (alpha_for("lora", 16), alpha_for("rslora", 64)) == (32, 64)
    assert "bitsandbytes" in cuda_reason("qlora") and cuda_reason("lora") is None
    assert "galore_8bit" in cuda_reason("galore", {"galore_8bit": True}) and cuda_reason("galore") is None
    assert "not supported with FSDP" in multi_gpu_refusal("loraplus", 2, "fsdp")
    assert multi_gpu_refusal("loraplus", 2, "ddp") is None and multi_gpu_refusal("galore", 1, "fsdp") is None
    assert "one GPU only" in multi_gpu_refusal("galore", 2, "ddp", {"galore_layerwise": True})


def test_a_speed_that_disagrees_with_the_measurements_is_refused():
    from peft_advisor.core.catalog import check_speed

    catalog = load_catalog()
    doc = _raw()
    doc["methods"]["galore"]["speed"] = 1
    with pytest.raises(CatalogError, match="galore.*speed: 1 disagrees"):
        check_speed(_parse(doc))
    check_speed(catalog)


@pytest.mark.parametrize(
    ("delta", "score"), [(0.0, 3), (2.0, 3), (-2.0, 3), (2.1, 4), (5.0, 4), (5.1, 5), (-3.9, 2), (-12.4, 1)]
)
def test_quality_rule(delta, score):
    assert quality_from_delta(delta) == score


@pytest.mark.parametrize(("ratio", "score"), [(0.5, 5), (0.8, 4), (1.0, 3), (1.26, 2), (2.28, 1)])
def test_speed_rule(ratio, score):
    assert speed_from_time_ratio(ratio) == score


# ---- strict loader -------------------------------------------------------------------------------


def test_the_shipped_file_round_trips_through_the_strict_parser():
    assert _parse(_raw()) == load_catalog()


def test_unknown_key_is_named_with_a_suggestion():
    doc = _raw()
    doc["methods"]["dora"]["qualty"] = 3
    with pytest.raises(CatalogError, match=r"\[methods\.dora\] unknown key 'qualty'; did you mean quality"):
        _parse(doc)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("quality", "high", "expected an integer"),
        ("quality", True, "expected an integer"),
        ("memory_vs_lora", "1.1", "expected a number"),
        ("in_study", 1, "expected true or false"),
        ("requires", "cuda", "expected a list of strings"),
        ("sources", [1, 2], "expected a list of strings"),
        ("name", 5, "expected a string"),
    ],
)
def test_wrong_type_is_named(key, value, expected):
    doc = _raw()
    doc["methods"]["dora"][key] = value
    with pytest.raises(CatalogError, match=rf"\[methods\.dora\] {key}: {expected}"):
        _parse(doc)


def test_integer_is_accepted_where_a_number_is_expected():
    doc = _raw()
    doc["methods"]["lora"]["memory_vs_lora"] = 1
    assert _parse(doc)["lora"].memory_vs_lora == 1.0


def test_missing_required_key_is_named():
    doc = _raw()
    del doc["methods"]["vera"]["caveats"]
    with pytest.raises(CatalogError, match=r"\[methods\.vera\] missing key 'caveats'"):
        _parse(doc)


def test_unknown_and_missing_methods():
    doc = _raw()
    doc["methods"]["lora_plus"] = doc["methods"].pop("loraplus")
    with pytest.raises(CatalogError, match=r"\[methods\.lora_plus\] unknown method id; did you mean loraplus"):
        _parse(doc)
    doc["methods"].pop("lora_plus")
    with pytest.raises(CatalogError, match=r"missing \[methods\.loraplus\]"):
        _parse(doc)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(quality=6), "quality: must be 1–5"),
        (lambda m: m.update(sources=[]), "needs at least one citation"),
        (lambda m: m.pop("study_run"), "in_study = true needs study_run"),
        (lambda m: m.update(in_study=False), "in_study = false must not carry study figures"),
    ],
)
def test_cross_field_rules(edit, message):
    doc = _raw()
    edit(doc["methods"]["dora"])
    with pytest.raises(CatalogError, match=message):
        _parse(doc)


def test_bad_toml_and_stray_top_level_keys():
    with pytest.raises(CatalogError, match="not valid TOML"):
        parse_catalog("[methods.lora\n")
    doc = _raw()
    doc["version"] = 1
    with pytest.raises(CatalogError, match="unknown top-level key 'version'"):
        _parse(doc)


def test_catalog_errors_are_user_errors_with_one_line():
    doc = _raw()
    doc["methods"]["full"]["speed"] = "fast"
    with pytest.raises(UserError) as info:
        _parse(doc)
    assert "\n" not in str(info.value)


# ---- rendering -----------------------------------------------------------------------------------


def test_table_fits_100_columns_and_names_every_method():
    catalog = load_catalog()
    text = render_table(catalog)
    assert max(len(line) for line in text.splitlines()) <= 100
    for m in catalog.values():
        assert m.name in text
    assert "4 (+3.9 pp)" in text and "×1.10" in text and "1 (−12.4 pp)" in text


def test_markdown_carries_evidence_and_every_source():
    catalog = load_catalog()
    md = render_markdown(catalog)
    for m in catalog.values():
        assert m.quality_evidence in md
        for source in m.sources:
            assert source in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(catalog)  # header, rule, one row per method
    assert all(line.count(" | ") == table[0].count(" | ") for line in table)


# ---- figures against the raw study files ---------------------------------------------------------


def _study_figures():
    if not (RESULTS / "MetaMathQA_head_5d602fd").is_dir():
        pytest.skip(f"raw study results not found at {RESULTS}")
    spec = importlib.util.spec_from_file_location("study_figures", REPO / "bench" / "study_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("study_figures", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_figures_match_the_raw_result_files():
    sf = _study_figures()
    head = sf.read_folder(RESULTS, sf.HEAD)
    for m in load_catalog().values():
        if not m.in_study:
            continue
        d = sf.delta(m.id, head[m.study_run], head[m.study_baseline])
        assert m.quality_delta_pp == pytest.approx(round(d.score_gap, 1)), m.id
        assert m.memory_vs_lora == pytest.approx(round(d.memory_ratio, 2)), m.id
        assert m.time_vs_lora == pytest.approx(round(d.time_ratio, 2)), m.id
        assert f"{d.run.score_display} %" in m.quality_evidence, m.id
        for run in (d.run, d.base):
            assert f"{run.peak_bytes / sf.GB:.2f}" in m.cost_evidence, m.id
            assert f"{run.train_s:.0f} " in m.cost_evidence, m.id
            assert f"{run.score_display} %" in m.quality_evidence, m.id


def test_committed_study_figures_are_current():
    sf = _study_figures()
    committed = (REPO / "bench" / "study_figures.md").read_text(encoding="utf-8")
    assert committed == sf.render(sf.collect(RESULTS)), (
        "bench/study_figures.md is stale; run: python bench/study_figures.py > bench/study_figures.md"
    )


def test_tie_band_matches_the_measured_spread():
    sf = _study_figures()
    import statistics

    spread = sf.collect(RESULTS).spread_pp
    assert len(spread) == 35
    assert round(statistics.median(spread.values()), 1) == 2.0
