"""Two training processes on the CPU through the real launcher (torchrun, gloo, DDP), as a user on a
two-GPU machine runs them: one event stream written by rank 0, every rank's memory in each step,
the adapter saved once, Ctrl-C ending `cancelled` with a checkpoint, and the same losses as one
process with the same global batch.

Why the losses match: with 2 processes x micro-batch 2 the sampler hands rank 0 and rank 1 the two
halves of the 4 rows one process sees with micro-batch 4, the Trainer normalises the loss by the
tokens of the whole global batch (`num_items_in_batch`), and DDP averages the gradients; what is
left is float rounding (different padding and summation order), well below 1e-4.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from peft_advisor import launch
from peft_advisor.core.errors import ExitCode
from peft_advisor.core.events import read_events

QUICK = {"train.max_steps": 4, "train.eval_every": 2, "train.save_every": 2, "train.micro_batch": 2}


def cli(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def steps_of(events):
    return [e for e in events if e["kind"] == "step"]


def test_two_processes_write_one_stream_and_match_one_process(make_recipe, tmp_path):
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.distributed import Parallel, per_gpu_estimate
    from peft_advisor.core.model_spec import load_model_spec
    from peft_advisor.train.__main__ import main

    two = make_recipe("lora", name="two.toml", **QUICK, **{"distributed.gpus": 2, "distributed.master_port": 0})
    one = make_recipe("lora", name="one.toml", **{**QUICK, "train.micro_batch": 4})
    run_two, run_one = tmp_path / "runs" / "two", tmp_path / "runs" / "one"
    done = cli("train", two, "--run-dir", run_two)
    assert done.returncode == 0, done.stderr[-2000:]
    assert main([str(one), "--run-dir", str(run_one)]) == 0

    events, skipped = read_events(run_two / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert skipped == 0 and kinds.count("start") == 1 and kinds[-1] == "end" and kinds.count("end") == 1
    assert [e["step"] for e in steps_of(events)] == [1, 2, 3, 4]  # rank 1 wrote nothing
    assert [e["step"] for e in events if e["kind"] == "checkpoint"] == [2, 4]
    assert [e["step"] for e in events if e["kind"] == "eval"] == [0, 2, 4]
    start, end = events[0], events[-1]
    assert (start["gpus"], start["strategy"], start["global_batch"], start["backend"]) == (2, "ddp", 4, "gloo")
    recipe = rc.load(two)
    spec = load_model_spec(str(recipe.model.id))
    from dataclasses import replace

    from peft_advisor.train import data
    from peft_advisor.train.model import load_tokenizer

    tok = load_tokenizer(str(recipe.model.id), False)  # the estimate is at the rows the run has, with its eval
    shape = data.prepare(recipe.data, tok, recipe.train.seed, two.parent).estimate_shape(tok)
    expected = per_gpu_estimate(spec, replace(rc.settings_from_recipe(recipe), **shape), Parallel(2, "ddp")).peak_bytes
    assert start["estimate_peak_bytes"] == expected
    for step in steps_of(events):
        assert step["mem_peak_bytes_by_rank"] == [None, None] and step["mem_reserved_bytes_by_rank"] == [None, None]
        assert step["samples"] == step["step"] * 4
    assert end["status"] == "ok" and len(end["mem_peak_bytes_by_rank"]) == 2

    run_json = launch.read_run_json(run_two)
    assert run_json["argv"][1:3] == ["-m", "torch.distributed.run"] and run_json["world_size"] == 2
    assert run_json["pid"] == start["pid"] != run_json["rank0_pid"]  # stop signals the launcher
    for name in ("adapter_model.safetensors", "recipe.toml", "train.log", "checkpoint-4/rng_state_1.pth"):
        assert (run_two / name).is_file(), name
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]  # no staging folder left
    assert [line.startswith("step ") for line in done.stdout.splitlines()].count(True) == 4

    single = read_events(run_one / "events.jsonl")[0]
    assert [s["loss"] for s in steps_of(events)] == pytest.approx([s["loss"] for s in steps_of(single)], rel=1e-4)
    assert [s["grad_norm"] for s in steps_of(events)] == pytest.approx([s["grad_norm"] for s in steps_of(single)], rel=1e-3)
    from safetensors.torch import load_file

    a, b = load_file(run_two / "adapter_model.safetensors"), load_file(run_one / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_ctrl_c_reaches_every_rank_and_ends_cancelled_with_a_checkpoint(make_recipe, tmp_path):
    changes = {"train.max_steps": 400, "train.save_every": 0, "train.eval_every": 0, "data.eval_split": 0,
               "train.micro_batch": 2, "distributed.gpus": 2, "distributed.master_port": 0}
    run_dir = tmp_path / "run"
    child = launch.start(make_recipe("lora", **changes), run_dir)
    launch.wait_started(child, timeout_s=180)
    deadline = time.monotonic() + 120
    while not any(e["kind"] == "step" and e["step"] >= 3 for e in read_events(run_dir / "events.jsonl")[0]):
        assert time.monotonic() < deadline, "no step 3"
        time.sleep(0.02)
    assert launch.stop(run_dir)  # SIGINT to torchrun, which forwards it to both ranks
    child.process.wait(timeout=120)
    events, skipped = read_events(run_dir / "events.jsonl")
    end = events[-1]
    assert skipped == 0 and end["kind"] == "end" and end["status"] == "cancelled"
    stopped_at = max(e["step"] for e in steps_of(events))
    assert 3 <= stopped_at < 400
    assert events[-2] == {**events[-2], "kind": "checkpoint", "step": stopped_at}
    assert (run_dir / f"checkpoint-{stopped_at}" / "adapter_model.safetensors").is_file()
    assert (run_dir / f"checkpoint-{stopped_at}" / "rng_state_1.pth").is_file()  # rank 1 stopped at the same step
    assert not launch.stop(run_dir)  # launcher and ranks are gone


def test_a_setup_error_keeps_its_exit_code_through_torchrun(make_recipe, tmp_path):
    """fsdp needs CUDA: one line, NO_GPU (not torchrun's 1), and no folder left behind."""
    recipe = make_recipe("lora", **{"distributed.gpus": 2, "distributed.strategy": "fsdp", "distributed.master_port": 0})
    done = cli("train", recipe, "--run-dir", tmp_path / "runs" / "x")
    assert done.returncode == ExitCode.NO_GPU, done.stderr[-2000:]
    assert 'distributed.strategy = "fsdp" needs CUDA GPUs' in done.stderr.strip().splitlines()[-1]
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_ddp_checkpoint_resumes_on_another_process_count(before, after, make_recipe, tmp_path):
    """DDP checkpoints are whole (every rank holds the full model and optimizer state), so a run
    checkpointed on N processes goes on on M; the global batch follows the count, and the log says so."""
    quick = {**QUICK, "train.eval_every": 0, "data.eval_split": 0, "distributed.master_port": 0}
    first = make_recipe("lora", name="first.toml", **{**quick, "train.max_steps": 2, "distributed.gpus": before})
    run = tmp_path / "runs" / "r"
    done = cli("train", first, "--run-dir", run)
    assert done.returncode == 0, done.stderr[-2000:]
    second = make_recipe("lora", name="second.toml", **{**quick, "train.max_steps": 4, "distributed.gpus": after})
    done = cli("train", second, "--run-dir", run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    events = read_events(run / "events.jsonl")[0]
    assert [e["step"] for e in steps_of(events)] == [1, 2, 3, 4]
    assert [e["status"] for e in events if e["kind"] == "end"] == ["ok", "ok"]
    assert [e["gpus"] for e in events if e["kind"] == "start"] == [before, after]
    hint = "; set train.grad_accum = 2 to keep it" if after < before else "\n"  # none can halve an accumulation of 1
    assert f"global batch changes from {2 * before} to {2 * after}{hint}" in (run / "train.log").read_text()


def test_a_zero_checkpoint_on_another_count_is_refused_in_one_line(make_recipe, tmp_path):
    """ZeRO's optimizer states are partitioned per rank: another count is refused before any process starts."""
    from peft_advisor.core import run_folder as rf

    run = tmp_path / "run"
    run.mkdir()
    rf.atomic_write_json(run / rf.RUN_JSON, {"pid": 1, "world_size": 2})
    zero = {"distributed.gpus": 2, "distributed.strategy": "zero2"}
    (run / rf.RECIPE).write_text(make_recipe("lora", name="z.toml", **zero).read_text())
    (run / "checkpoint-2").mkdir()
    done = cli("train", make_recipe("lora", **{**zero, "distributed.gpus": 4}), "--run-dir", run, "--resume")
    assert done.returncode == ExitCode.BAD_RECIPE
    assert "resumes only on 2" in done.stderr.strip().splitlines()[-1]
    done = cli("train", make_recipe("lora", name="ddp.toml", **{"distributed.gpus": 2}), "--run-dir", run, "--resume")
    assert done.returncode == ExitCode.BAD_RECIPE and "cannot resume with ddp" in done.stderr.strip().splitlines()[-1]


def this_hosts_address() -> str | None:
    """A non-loopback address of this machine (what node 0's master_addr is on a real cluster), or None."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = sock.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_two_nodes_on_one_host_train_as_one_run(make_recipe, tmp_path):
    """Two `peft-advisor train` launches as on two machines (nnodes 2, node_rank 0 and 1, one process
    each, the same master address and port; the run folder on a 'shared' path): both end ok, rank 0
    (node 0) writes the one run folder, and the losses are one process's with the same global batch."""
    from peft_advisor.train.__main__ import main

    address = this_hosts_address()
    if address is None:
        pytest.skip("no non-loopback network address on this machine for the simulated nodes")
    nodes = {"distributed.nnodes": 2, "distributed.master_addr": address, "distributed.master_port": launch.free_port()}
    recipe = make_recipe("lora", name="nodes.toml", **{**QUICK, **nodes})
    run = tmp_path / "runs" / "nodes"
    argv = [sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run)]
    node1 = subprocess.Popen([*argv, "--node-rank", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node0 = cli("train", recipe, "--run-dir", run)
    out1, _ = node1.communicate(timeout=240)
    assert node0.returncode == 0, node0.stderr[-2000:]
    assert node1.returncode == 0, out1[-2000:]
    assert "node 1 of 2" in out1
    events, skipped = read_events(run / "events.jsonl")
    start = events[0]
    assert skipped == 0 and [e["kind"] for e in events].count("start") == 1 and events[-1]["status"] == "ok"
    assert (start["gpus"], start["nnodes"], start["global_batch"]) == (2, 2, 4)
    assert launch.read_run_json(run)["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["nodes"]  # one folder, no staging left
    one = make_recipe("lora", name="one.toml", **{**QUICK, "train.micro_batch": 4})
    assert main([str(one), "--run-dir", str(tmp_path / "one")]) == 0
    single = steps_of(read_events(tmp_path / "one" / "events.jsonl")[0])
    assert [s["loss"] for s in steps_of(events)] == pytest.approx([s["loss"] for s in single], rel=1e-4)
