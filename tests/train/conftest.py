"""Fixtures for the trainer tests: the tiny random Llama (tests/train/tiny.py), its data and recipes.
Nothing is downloaded: the Hub is switched off for this process and the trainer children."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.train.tiny import save_tiny_model, sums, write_jsonl

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="peft-advisor-tests-datasets-"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def sums_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "sums.jsonl", sums(64))


@pytest.fixture
def make_recipe(tiny_model, sums_file, tmp_path):
    """Write a small recipe for the tiny model: `make_recipe("lora", **{"train.max_steps": 4})`."""
    from peft_advisor.core import recipe as rc

    def make(method: str = "lora", name: str = "recipe.toml", **changes) -> Path:
        base = {
            "model.id": str(tiny_model),
            "method.name": method,
            "method.rank": 4,
            "method.alpha": 8,
            "method.vera_rank": 16,
            "method.galore_rank": 8,
            "method.oft_block_size": 8,
            "method.c3a_block_size": 16,
            "data.path": str(sums_file),
            "data.eval_split": 8,
            "data.max_seq_len": 32,
            "train.max_steps": 4,
            "train.micro_batch": 4,
            "train.lr": 1e-3,
            "train.warmup_ratio": 0.0,
            "train.eval_every": 2,
            "train.save_every": 2,
            "output.dir": str(tmp_path / "run"),
        }
        base.update({k.replace("__", "."): v for k, v in changes.items()})
        return rc.save(rc.updated(rc.Recipe(), base), tmp_path / name, force=True)

    return make
