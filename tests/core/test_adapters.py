"""Trainable parameters and adapter bytes of the methods added in issue 17, against the study's
saved adapters on Llama-3.2-3B (data/study.json, derived from the raw result files)."""

from __future__ import annotations

import pytest

from peft_advisor.core.adapters import factorization
from peft_advisor.core.estimate import Settings, adapter_bytes, trainable_params
from peft_advisor.core.model_spec import load_model_spec
from peft_advisor.core.study import find_run

QV = ("q_proj", "v_proj")
CASES = {  # the study's configs (STUDY.md §1.3), as this project's settings
    "oft--llama-3.2-3B-rank32": Settings("oft", targets=QV, oft_block_size=96),  # r32 on d_in 3072
    "lokr--llama-3.2-3B-rank32-factor4-lr0.003": Settings("lokr", rank=32, targets=QV, lokr_factor=4),
    "loha--llama-3.2-3B-rank32": Settings("loha", rank=32, targets=QV),
    "ia3--llama-3.2-3B-all-attn-5k-lr0.005": Settings("ia3", targets="all-linear"),
    "ia3--llama-3.2-3B-default": Settings("ia3", targets=("k_proj", "v_proj", "down_proj")),
    "miss--llama-3.2-3B-default": Settings("miss", rank=64, targets=QV),
    "c3a--llama-3.2-3B-default": Settings("c3a", targets=QV, c3a_block_size=64),
    "shira--llama-3.2-3B-lr_0.0003-random_seed_42": Settings("shira", rank=32, targets=QV),
    "lora--llama-3.2-3B-rank32-lorafa": Settings("lorafa", rank=32, targets=QV),
}


@pytest.mark.parametrize("stem", CASES)
def test_counts_match_the_study_files(stem):
    spec, run = load_model_spec("llama-3.2-3b"), find_run(stem)
    assert trainable_params(spec, CASES[stem]) == run.trainable_params
    assert adapter_bytes(spec, CASES[stem]) == pytest.approx(run.file_bytes, rel=0.02)


def test_factorization_matches_peft_docstring():
    assert [factorization(256), factorization(128), factorization(127), factorization(128, 4)] == [
        (16, 16), (8, 16), (1, 127), (4, 32)]
