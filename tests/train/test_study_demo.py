"""The ten methods of issue 17 end to end on the shipped SmolLM2-135M demo, each from its shipped
recipe in recipes/demo (one step, one eval row, CPU): the run ends ok, the saved adapter's weights
are the size the estimator says, and the adapter loads back with peft onto the untouched base
and scores the eval row exactly as the trained model did at the end of its run.

The last check is what catches a save that does not round-trip: PiSSA and OLoRA rewrite the base
weights at initialisation, so their adapters are right only if peft redoes that on loading.
The tiny-model runs of the same methods (layout, resume, events) are in test_methods.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.events import read_events
from tests.train.test_methods import STUDY_METHODS, train

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
_RUNS: dict[str, tuple[Path, int, Path]] = {}


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory) -> Path:
    """The first 16 rows of the shipped demo data: tokenizing all 2,000 twice per method is most of
    a run's time on a 2-core machine, and one step needs one row."""
    from peft_advisor.train.demo import demo_data_path

    lines = demo_data_path().read_text(encoding="utf-8").splitlines(keepends=True)[:16]
    path = tmp_path_factory.mktemp("demo-rows") / "arithmetic-16.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def demo_run(method, demo_rows, tmp_path_factory):
    """`method`'s shipped demo recipe on the demo model, cut to one step of one row at 96 tokens
    (16 rows of the demo data), trained once per session."""
    if method not in _RUNS:
        tmp = tmp_path_factory.mktemp(f"demo-{method}")
        recipe = rc.updated(rc.load(ROOT / "recipes" / "demo" / f"{method}.toml"), {
            "train.max_steps": 1, "train.micro_batch": 1, "train.warmup_ratio": 0.0, "train.eval_every": 0,
            "train.save_every": 0, "train.baseline_eval_rows": 0, "data.eval_split": 1, "data.max_seq_len": 96,
            "data.path": str(demo_rows), "output.dir": str(tmp / "run")})
        path = rc.save(recipe, tmp / f"{method}.toml")
        _RUNS[method] = (tmp / "run", train(path, tmp / "run"), path)
    return _RUNS[method]


def payload_bytes(path: Path) -> int:
    """A safetensors file's tensor bytes: the file less its 8-byte length and JSON header, which
    the estimator leaves out (about 125 bytes a tensor: 5 % of IA3's or LoKr's demo adapter)."""
    with path.open("rb") as f:
        header = struct.unpack("<Q", f.read(8))[0]
    return path.stat().st_size - 8 - header


def eval_row_loss(run_dir: Path) -> tuple[float, float]:
    """(loss of the reloaded adapter on the run's eval row, the run's own final eval loss)."""
    import torch

    from peft_advisor.train.data import prepare
    from peft_advisor.train.tuned import load_tokenizer, load_tuned, open_run

    run = open_run(run_dir)
    tokenizer = load_tokenizer(run)
    held = prepare(run.recipe.data, tokenizer, run.recipe.train.seed).eval
    assert held is not None and len(held) == 1
    model = load_tuned(run, "float32")
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([held[0]["input_ids"]]), labels=torch.tensor([held[0]["labels"]])).loss
    events, _ = read_events(run_dir / "events.jsonl")
    evals = [e["eval_loss"] for e in events if e["kind"] == "eval"]
    assert evals, "the run logged no eval"
    return loss.item(), evals[-1]


@pytest.mark.parametrize("method", STUDY_METHODS)
def test_demo_recipe_trains_and_its_adapter_round_trips(method, demo_run):
    from peft_advisor.core import estimate
    from peft_advisor.core.model_spec import load_model_spec

    run_dir, code, recipe_path = demo_run
    assert code == 0, (run_dir / "events.jsonl").read_text() if (run_dir / "events.jsonl").exists() else "no run"
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["peft_type"] and config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    recipe = rc.load(recipe_path)
    expected = estimate.adapter_bytes(load_model_spec(recipe.model.id), rc.settings_from_recipe(recipe))
    saved = payload_bytes(run_dir / "adapter_model.safetensors")
    assert saved == pytest.approx(expected, rel=0.01), (saved, expected)

    reloaded, trained = eval_row_loss(run_dir)
    assert reloaded == pytest.approx(trained, rel=1e-3, abs=1e-4), (reloaded, trained)
