"""The CUDA-only paths, on a real GPU: QLoRA (NF4 base) and GaLore 8-bit train a few steps.
Skipped on machines without CUDA (the lead's conftest skips `gpu`; the check below is a backstop)."""

from __future__ import annotations

import pytest

from peft_advisor.core.events import read_events

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
]


@pytest.mark.parametrize(
    "changes",
    [
        {"method.name": "qlora"},
        {"method.name": "qlora", "train.grad_ckpt": True},
        {"method.name": "galore", "method.galore_8bit": True},
        {"method.name": "galore", "method.galore_8bit": True, "method.galore_layerwise": True},
        {"method.name": "lora", "model.dtype": "bfloat16"},
    ],
    ids=["qlora", "qlora-ckpt", "galore-8bit", "galore-8bit-layerwise", "lora-bf16"],
)
def test_cuda_methods_train(changes, make_recipe, tmp_path):
    from peft_advisor.train.__main__ import main

    run_dir = tmp_path / "run"
    assert main([str(make_recipe(**changes)), "--run-dir", str(run_dir)]) == 0
    events, skipped = read_events(run_dir / "events.jsonl")
    assert skipped == 0 and events[0]["device"] == "cuda:0" and events[-1]["status"] == "ok"
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]  # each step's log, written one step late, in order
    assert all(e["mem_peak_bytes"] > 0 and e["mem_reserved_bytes"] > 0 for e in steps)
    assert events[-1]["mem_peak_bytes"] >= steps[-1]["mem_peak_bytes"]
    saved = "model.safetensors" if changes["method.name"] == "galore" else "adapter_model.safetensors"
    assert (run_dir / saved).is_file()
