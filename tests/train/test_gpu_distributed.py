"""Two GPUs through `peft-advisor train` (torchrun, NCCL): DDP, FSDP and DeepSpeed ZeRO of the tiny
model, with every GPU's memory in the events. Runs only on a machine with two or more NVIDIA GPUs
(the ZeRO cases also need `pip install "peft-advisor[deepspeed]"`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from peft_advisor.core.events import read_events

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 NVIDIA GPUs"),
]

STEPS = {"train.max_steps": 4, "train.micro_batch": 2, "train.eval_every": 2, "train.save_every": 2}


def train(recipe, run_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "changes",
    [
        {"distributed.strategy": "ddp"},
        {"distributed.strategy": "fsdp"},
        {"distributed.strategy": "fsdp", "train.grad_ckpt": True},
        {"distributed.strategy": "fsdp", "method.name": "full"},
        {"distributed.strategy": "ddp", "distributed.launcher": "accelerate"},
        {"distributed.strategy": "fsdp", "distributed.launcher": "accelerate", "distributed.fsdp_version": 2},
        {"distributed.strategy": "ddp", "method.name": "qlora"},
        {"distributed.strategy": "fsdp", "method.name": "qlora"},
        {"distributed.strategy": "zero2"},
        {"distributed.strategy": "zero3"},
        {"distributed.strategy": "zero3", "method.name": "full", "train.grad_ckpt": True},
        {"distributed.strategy": "zero2", "distributed.zero_offload": "optimizer"},
        {"distributed.strategy": "zero3", "distributed.zero_offload": "optimizer+params"},
        {"distributed.strategy": "zero3", "distributed.launcher": "accelerate"},
        {"distributed.strategy": "zero2", "method.name": "qlora"},
    ],
    ids=["ddp", "fsdp", "fsdp-ckpt", "fsdp-full", "accelerate-ddp", "accelerate-fsdp2", "ddp-qlora", "fsdp-qlora",
         "zero2", "zero3", "zero3-full-ckpt", "zero2-offload", "zero3-offload-params", "accelerate-zero3", "zero2-qlora"],
)
def test_two_gpus(changes, make_recipe, tmp_path):
    if changes["distributed.strategy"].startswith("zero"):
        pytest.importorskip("deepspeed", reason='needs pip install "peft-advisor[deepspeed]"')
    name = changes.get("method.name", "lora")
    recipe = make_recipe(name, **STEPS, **{"distributed.gpu_ids": [0, 1], "distributed.master_port": 0, **changes})
    run_dir = tmp_path / "run"
    done = train(recipe, run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    events, skipped = read_events(run_dir / "events.jsonl")
    start, end = events[0], events[-1]
    assert skipped == 0 and end["status"] == "ok"
    assert (start["gpus"], start["strategy"], start["global_batch"]) == (2, changes["distributed.strategy"], 4)
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    for e in steps:
        by_rank = e["mem_peak_bytes_by_rank"]
        assert len(by_rank) == 2 and all(v > 0 for v in by_rank) and e["mem_peak_bytes"] == max(by_rank)
    assert len(end["mem_peak_bytes_by_rank"]) == 2 and end["mem_peak_bytes"] >= steps[-1]["mem_peak_bytes"]
    saved = "model.safetensors" if name == "full" else "adapter_model.safetensors"
    assert (run_dir / saved).is_file() or list(run_dir.glob("model-*.safetensors"))

