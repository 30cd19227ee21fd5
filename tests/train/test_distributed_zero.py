"""DeepSpeed ZeRO-2 and ZeRO-3 on the CPU: two processes through the real launcher (torchrun, gloo,
DeepSpeed's CPU accelerator), against one plain process with the same global batch, as
tests/train/test_distributed.py does for DDP. Skipped where the optional deepspeed package is
not installed (`pip install "peft-advisor[deepspeed]"`). DeepSpeed builds its shared-memory
collective op with the C++ compiler the first time it runs on a machine (about a minute, cached
under ~/.cache/torch_extensions); the tests are marked slow for that.

Why the losses match: ZeRO partitions the optimizer's state and the gradients, not the
arithmetic; in fp32 on the CPU the updates are DDP's, up to float rounding in the reduction.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from peft_advisor.core.events import read_events
from tests.train.test_distributed import QUICK, cli, steps_of

pytest.importorskip("deepspeed", reason='needs the optional deepspeed package: pip install "peft-advisor[deepspeed]"')
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                       reason="DeepSpeed compiles its CPU collective (shm_comm) on first use: needs a C++ compiler"),
]


def one_process_losses(make_recipe, tmp_path):
    from peft_advisor.train.__main__ import main

    one = make_recipe("lora", name="one.toml", **{**QUICK, "train.micro_batch": 4})
    assert main([str(one), "--run-dir", str(tmp_path / "runs" / "one")]) == 0
    return [s["loss"] for s in steps_of(read_events(tmp_path / "runs" / "one" / "events.jsonl")[0])]


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_zero_on_two_cpu_processes_matches_one_process(strategy, make_recipe, tmp_path):
    recipe = make_recipe("lora", name="zero.toml", **QUICK,
                         **{"distributed.gpus": 2, "distributed.strategy": strategy, "distributed.master_port": 0})
    run = tmp_path / "runs" / strategy
    done = cli("train", recipe, "--run-dir", run, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_events(run / "events.jsonl")[0]
    start, end = events[0], events[-1]
    assert (start["strategy"], start["gpus"], start["global_batch"]) == (strategy, 2, 4) and end["status"] == "ok"
    assert [e["step"] for e in steps_of(events)] == [1, 2, 3, 4]
    config = json.loads((run / "ds_config.json").read_text())
    assert config["zero_optimization"]["stage"] == int(strategy[-1]) and config["train_batch_size"] == 4
    assert config["bf16"] == {"enabled": False}  # fp32 on the CPU
    log = (run / "train.log").read_text()
    assert "accelerate launch --use_deepspeed --deepspeed_config_file " + str(run / "ds_config.json") in log
    assert (run / "adapter_model.safetensors").is_file()
    assert (run / "checkpoint-4" / "global_step4").is_dir()  # DeepSpeed's partitioned states
    losses = [s["loss"] for s in steps_of(events)]
    assert losses == pytest.approx(one_process_losses(make_recipe, tmp_path), rel=1e-4)


def test_zero_offload_needs_gpus(make_recipe, tmp_path):
    from peft_advisor.core.errors import ExitCode

    recipe = make_recipe("lora", **{"distributed.gpus": 2, "distributed.strategy": "zero2",
                                     "distributed.zero_offload": "optimizer", "distributed.master_port": 0})
    done = cli("train", recipe, "--run-dir", tmp_path / "runs" / "x")
    assert done.returncode == ExitCode.NO_GPU, done.stderr[-2000:]
    assert "distributed.zero_offload" in done.stderr.strip().splitlines()[-1]


def test_the_logged_accelerate_command_repeats_the_run(make_recipe, tmp_path):
    """The run is reproducible with `accelerate launch` alone: the command train.log prints (the run
    folder's ds_config.json and recipe copy) trains the same losses into a new folder."""
    import os
    import shlex
    import subprocess
    import sys

    recipe = make_recipe("lora", name="zero.toml", **{**QUICK, "train.eval_every": 0, "data.eval_split": 0},
                         **{"distributed.gpus": 2, "distributed.strategy": "zero2", "distributed.master_port": 0})
    run = tmp_path / "runs" / "zero"
    done = cli("train", recipe, "--run-dir", run, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in (run / "train.log").read_text().splitlines() if "accelerate launch --use_deepspeed" in x)
    argv = shlex.split(line[line.index("accelerate launch"):])
    assert argv[-2:] == ["--run-dir", str(run) + "-again"]
    port = argv.index("--main_process_port") + 1
    argv[port] = str(__import__("peft_advisor.launch", fromlist=["free_port"]).free_port())  # the first run's is gone
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    again = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *argv[2:]], capture_output=True,
                           text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    losses = [[s["loss"] for s in steps_of(read_events(folder / "events.jsonl")[0])] for folder in (run, run.parent / "zero-again")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and len(losses[0]) == 4


def test_a_zero3_checkpoint_resumes_on_the_same_count(make_recipe, tmp_path):
    """DeepSpeed's partitioned checkpoint (global_stepN/, one file per rank) goes on where it stopped."""
    quick = {**QUICK, "train.eval_every": 0, "data.eval_split": 0, "distributed.gpus": 2,
             "distributed.strategy": "zero3", "distributed.master_port": 0}
    run = tmp_path / "runs" / "z"
    done = cli("train", make_recipe("lora", name="a.toml", **{**quick, "train.max_steps": 2}), "--run-dir", run, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "checkpoint-2" / "global_step2").is_dir()
    done = cli("train", make_recipe("lora", name="b.toml", **quick), "--run-dir", run, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_events(run / "events.jsonl")[0]
    assert [e["step"] for e in steps_of(events)] == [1, 2, 3, 4]
    assert [e["status"] for e in events if e["kind"] == "end"] == ["ok", "ok"]
