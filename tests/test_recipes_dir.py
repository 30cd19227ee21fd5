"""Every shipped recipe in recipes/ loads, validates, round-trips and says what it is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from peft_advisor.core import recipe as rc

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FILES = sorted(RECIPES.rglob("*.toml"))
IDS = [str(p.relative_to(RECIPES)) for p in FILES]


def test_recipes_exist():
    assert {p.stem for p in (RECIPES / "demo").glob("*.toml")} == set(rc.methods())
    assert len(FILES) >= len(rc.methods()) + 4


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_recipe_loads_validates_and_round_trips(path):
    recipe = rc.load(path)
    assert rc.validate(recipe) == []
    assert rc.loads(rc.dumps(recipe)) == recipe
    assert recipe.model.trust_remote_code is False


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_recipe_is_commented(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), "a shipped recipe starts with a comment saying what it is for"
    assert "rank = " in text and "  # " in text


@pytest.mark.parametrize("path", sorted((RECIPES / "demo").glob("*.toml")), ids=lambda p: p.name)
def test_demo_recipes_are_small(path):
    """`peft-advisor train recipes/demo/<method>.toml` must finish on a 2-core CPU in minutes."""
    r = rc.load(path)
    assert r.method.name == path.stem
    assert (r.model.id, r.data.path) == ("demo", "demo")
    assert 40 <= r.train.max_steps <= 120 and r.train.micro_batch <= 8 and r.data.max_seq_len <= 128
    assert r.output.dir == f"runs/demo-{path.stem}"
    assert not r.method.galore_8bit  # CUDA only; the comment says how to turn it on
    if r.method.name in ("qlora", "galore"):
        assert "CUDA" in path.read_text(encoding="utf-8").split("version =")[0]


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name != "demo"], ids=lambda p: str(p.relative_to(RECIPES)))
def test_popular_recipes_fit_their_budget(path):
    """The estimator agrees that each popular recipe fits the card it names."""
    estimate = pytest.importorskip("peft_advisor.core.estimate")
    from peft_advisor.core.model_spec import load_model_spec
    from peft_advisor.core.units import GIB

    r = rc.load(path)
    assert r.budget.vram_gib > 0 and r.budget.gpu
    est = estimate.estimate(load_model_spec(r.model.id), rc.settings_from_recipe(r))
    assert est.total_bytes <= r.budget.vram_gib * GIB
    from peft_advisor.core.advise import recipe_fit

    assert recipe_fit(r)[0] == "ok", recipe_fit(r)[1]  # the whole band fits, as the advice's "ok"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_recipe_is_in_todays_format_with_todays_estimate(path):
    """No shipped recipe goes stale (a method list of eight, a missing key, an old estimate):
    after a change to the format or the estimator, `python tests/refresh_recipes.py` rewrites them."""
    from tests.refresh_recipes import refreshed

    assert path.read_text(encoding="utf-8") == refreshed(path), "run: python tests/refresh_recipes.py"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes" / "demo").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_the_apps_demo_settings_are_the_shipped_demo_recipes(path):
    """A recipe the app makes for the demo model uses these (core.advise.DEMO_FAST)."""
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.advise import DEMO_FAST

    shipped = rc.load(path)
    for key, value in DEMO_FAST.items():
        section, _, name = key.partition(".")
        assert getattr(getattr(shipped, section), name) == value, (path.name, key)
