"""Several GPUs, the parts without torch: the launcher's exact command lines and environment, the
exit code of a failed multi-process setup, and what the monitor shows of every GPU's memory."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from peft_advisor import launch
from peft_advisor.cli import main
from peft_advisor.core import recipe as rc
from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode
from peft_advisor.core.events import summarize

PY = sys.executable
TAIL = ["-m", "peft_advisor.train", "r.toml", "--run-dir", "runs/x"]


def dist(**changes):
    return rc.updated(rc.Recipe(), {f"distributed.{k}": v for k, v in changes.items()}).distributed


def test_one_process_is_the_plain_trainer_whatever_the_strategy():
    for d in (None, dist(), dist(strategy="fsdp", launcher="accelerate"), dist(gpu_ids=[3])):
        assert launch.build_argv("r.toml", "runs/x", dist=d) == [PY, *TAIL]


def test_torchrun_command_line():
    assert launch.build_argv("r.toml", "runs/x", dist=dist(gpus=2)) == [
        PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1", "--node_rank", "0",
        "--master_addr", "127.0.0.1", "--master_port", "29500", *TAIL]
    multi = dist(gpus=8, nnodes=2, node_rank=1, master_addr="10.1.2.3", master_port=29400, strategy="fsdp")
    assert launch.build_argv("r.toml", "runs/x", resume=True, dist=multi) == [
        PY, "-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "10.1.2.3", "--master_port", "29400", *TAIL, "--resume"]


def test_accelerate_command_lines():
    head = [PY, "-m", "accelerate.commands.launch", "--num_processes", "4", "--num_machines", "1", "--machine_rank", "0",
            "--main_process_ip", "127.0.0.1", "--main_process_port", "1234", "--mixed_precision", "bf16",
            "--dynamo_backend", "no"]
    ddp = dist(gpus=4, launcher="accelerate", mixed_precision="bf16")
    assert launch.build_argv("r.toml", "runs/x", dist=ddp, port=1234) == [*head, "--multi_gpu", *TAIL]
    fsdp2 = dist(gpus=4, launcher="accelerate", mixed_precision="bf16", strategy="fsdp", fsdp_version=2)
    assert launch.build_argv("r.toml", "runs/x", dist=fsdp2, port=1234) == [
        *head, "--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_reshard_after_forward", "true", "--fsdp_state_dict_type", "FULL_STATE_DICT", *TAIL]
    fsdp1 = dist(gpus=4, launcher="accelerate", mixed_precision="bf16", strategy="fsdp", fsdp_version=1)
    assert launch.build_argv("r.toml", "runs/x", dist=fsdp1, port=1234) == [
        *head, "--use_fsdp", "--fsdp_version", "1", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_reshard_after_forward", "FULL_SHARD", "--fsdp_state_dict_type", "FULL_STATE_DICT", *TAIL]
    two_nodes = dist(gpus=8, nnodes=2, node_rank=1, master_addr="10.1.2.3", launcher="accelerate")
    argv = launch.build_argv("r.toml", "runs/x", dist=two_nodes)
    assert argv[3:15] == ["--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                          "--main_process_ip", "10.1.2.3", "--main_process_port", "29500", "--mixed_precision", "no"]


def test_fsdp_auto_version_follows_the_installed_packages():
    assert launch.fsdp_version_installed() == 2  # torch 2.13 and accelerate >= 1.6 in this stack
    argv = launch.build_argv("r.toml", "runs/x", dist=dist(gpus=2, launcher="accelerate", strategy="fsdp"))
    assert argv[argv.index("--fsdp_version") + 1] == "2"


def test_qlora_with_fsdp_launches_fsdp1(tmp_path):
    path = tmp_path / "r.toml"
    rc.save(rc.updated(rc.Recipe(), {"method.name": "qlora", "distributed.gpus": 2, "distributed.strategy": "fsdp",
                                     "distributed.launcher": "accelerate"}), path)
    argv, _ = launch.child_argv_env(path, tmp_path / "run")
    assert argv[argv.index("--fsdp_version") + 1] == "1" and argv[argv.index("--fsdp_reshard_after_forward") + 1] == "FULL_SHARD"


def test_environment_and_port(tmp_path):
    path = tmp_path / "r.toml"
    rc.save(rc.updated(rc.Recipe(), {"distributed.gpu_ids": [2, 5], "distributed.master_port": 0}), path)
    argv, env = launch.child_argv_env(path, tmp_path / "run")
    assert env["CUDA_VISIBLE_DEVICES"] == "2,5" and env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]
    port = int(argv[argv.index("--master_port") + 1])
    assert 0 < port < 65536 and argv[argv.index("--nproc_per_node") + 1] == "2"
    rc.save(rc.updated(rc.Recipe(), {"distributed.gpu_ids": [3]}), path, force=True)
    argv, env = launch.child_argv_env(path, tmp_path / "run")
    assert argv[:3] == [PY, "-m", "peft_advisor.train"] and env == {"CUDA_VISIBLE_DEVICES": "3"}


def test_a_failed_setup_keeps_the_ranks_exit_code_and_reason(tmp_path):
    """torchrun exits 1 whatever its ranks returned; the first failing rank left its code, and its
    reason, in the staging folder (a file from before the reason was written still gives the code)."""
    staging = tmp_path / ".run.x.starting"
    staging.mkdir()
    fake = SimpleNamespace(staging_dir=staging)
    assert launch._setup_exit(fake, 1) == (1, "")
    (staging / rf.SETUP_EXIT_FILE).write_text("8\n")
    assert launch._setup_exit(fake, 1) == (8, "")
    (staging / rf.SETUP_EXIT_FILE).write_text('5\ndistributed.strategy = "fsdp" needs CUDA GPUs\n')
    assert launch._setup_exit(fake, 1) == (5, 'distributed.strategy = "fsdp" needs CUDA GPUs')
    assert launch._setup_exit(SimpleNamespace(staging_dir=None), 1) == (1, "")



def test_a_rank_stopped_by_torchrun_does_not_hide_the_reason(tmp_path):
    """The race behind a flaky test: rank 1 fails setup (fsdp needs CUDA), torchrun stops rank 0,
    whose "interrupted" line can land last in the shared log. The reason and the code are the first
    failing rank's, from the staging folder, whichever line came last."""
    staging = tmp_path / ".run.x.starting"
    staging.mkdir()
    log = staging / "train.log"
    log.write_text('peft-advisor: distributed.strategy = "fsdp" needs CUDA GPUs\n'
                   "peft-advisor: interrupted before training started\n")
    (staging / rf.SETUP_EXIT_FILE).write_text('5\ndistributed.strategy = "fsdp" needs CUDA GPUs\n')
    fake = SimpleNamespace(staging_dir=staging, log_path=log, log_offset=0, run_dir=tmp_path / "run",
                           running=lambda: False)
    err = launch._setup_failure(fake, 1)
    assert err.code == ExitCode.NO_GPU and str(err) == 'distributed.strategy = "fsdp" needs CUDA GPUs'
    assert not staging.exists()

# ---------------------------------------------------------------- monitor

GIB = 2**30


def write_run(run_dir, by_rank):
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"pid": 0, "argv": [], "started": 0}))
    events = [
        {"v": 1, "kind": "start", "t": 1.0, "method": "lora", "model": "demo", "trainable_params": 1000,
         "total_params": 100000, "total_steps": 2, "device": "cuda:0", "estimate_peak_bytes": 10 * GIB,
         "gpus": 2, "strategy": "fsdp", "global_batch": 8},
        {"v": 1, "kind": "step", "t": 2.0, "step": 1, "loss": 2.0, "lr": 1e-4, "mem_peak_bytes": max(by_rank),
         "mem_reserved_bytes_by_rank": by_rank, "mem_peak_bytes_by_rank": by_rank},
        {"v": 1, "kind": "step", "t": 3.0, "step": 2, "loss": 1.0, "lr": 1e-4, "mem_peak_bytes": max(by_rank),
         "mem_reserved_bytes_by_rank": by_rank, "mem_peak_bytes_by_rank": by_rank},
        {"v": 1, "kind": "end", "t": 4.0, "status": "ok", "final_loss": 1.0, "wall_s": 3.0,
         "mem_peak_bytes": max(by_rank), "mem_peak_bytes_by_rank": by_rank, "estimate_peak_bytes": 10 * GIB},
    ]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return events


def test_monitor_shows_every_gpu(tmp_path, capsys):
    events = write_run(tmp_path / "run", [9 * GIB, 11 * GIB])
    assert main(["monitor", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("start  lora on demo (cuda:0, 2 GPUs FSDP, global batch 8): ")
    assert out[0].endswith("estimate peak 10.00 GiB per GPU")
    assert out[1].endswith("peak 11.00 GiB  ETA ?  by GPU 9.00 GiB | 11.00 GiB")
    assert out[-1].endswith("by GPU 9.00 GiB | 11.00 GiB")
    s = summarize(events)
    assert (s.gpus, s.strategy, s.global_batch) == (2, "fsdp", 8)
    assert s.mem_peak_bytes_by_rank == [9 * GIB, 11 * GIB] and s.mem_peak_bytes == 11 * GIB
    assert s.to_dict()["mem_reserved_bytes_by_rank"] == [9 * GIB, 11 * GIB]


def test_monitor_leaves_out_unmeasured_memory(tmp_path, capsys):
    """CPU processes report None for each rank: no suffix, no error."""
    write_run(tmp_path / "run", [0, 0])
    events_path = tmp_path / "run" / "events.jsonl"
    events_path.write_text(events_path.read_text().replace("[0, 0]", "[null, null]"))
    assert main(["monitor", str(tmp_path / "run")]) == 0
    assert "by GPU" not in capsys.readouterr().out


@pytest.mark.parametrize("values, suffix", [([GIB, None], ["by GPU 1.00 GiB | —"]), ([], []), (None, []), ("x", [])])
def test_per_gpu_suffix(values, suffix):
    from peft_advisor.cli.runs_cmd import per_gpu_memory

    assert per_gpu_memory({"mem_peak_bytes_by_rank": values}) == suffix


def test_a_multi_gpu_run_is_not_kept_as_one_gpu_calibration(tmp_path):
    """Its peak is per GPU under DDP/FSDP: recording it against one GPU's settings would skew estimates."""
    from peft_advisor.calibration_store import record_from_run_dir

    write_run(tmp_path / "run", [9 * GIB, 11 * GIB])
    rc.save(rc.updated(rc.Recipe(), {"distributed.gpus": 2}), tmp_path / "run" / "recipe.toml")
    store = tmp_path / "calibration.jsonl"
    assert record_from_run_dir(tmp_path / "run", gpu_name="NVIDIA H200", path=store) is None
    assert not store.exists()


def test_node_rank_flag_is_checked_like_the_recipe(tmp_path, capsys):
    path = rc.save(rc.updated(rc.Recipe(), {"distributed.nnodes": 2, "distributed.master_addr": "10.0.0.1"}),
                   tmp_path / "r.toml")
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--node-rank", "2"]) == ExitCode.BAD_RECIPE
    assert "distributed.node_rank: must be < distributed.nnodes = 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_first_rank_to_fail_setup_leaves_the_exit_code(tmp_path, monkeypatch):
    """torchrun kills the other ranks as soon as one exits: any rank writes, the first one wins."""
    from peft_advisor.train.run import record_setup_exit

    monkeypatch.setenv("PEFT_ADVISOR_STAGING", str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    record_setup_exit(ExitCode.NO_GPU, "needs CUDA GPUs")
    monkeypatch.setenv("RANK", "0")
    record_setup_exit(ExitCode.INTERRUPTED, "interrupted before training started")  # torchrun stopped it, later
    assert (tmp_path / rf.SETUP_EXIT_FILE).read_text() == "5\nneeds CUDA GPUs\n"
    assert [p.name for p in tmp_path.iterdir()] == [rf.SETUP_EXIT_FILE]


def test_what_a_resume_on_another_process_count_may_do(tmp_path):
    """run.json's world size against the recipe's: whole checkpoints go on with a batch note, ZeRO's
    partitioned ones and a change of engine are refused (the gloo tests run the allowed ones)."""
    from peft_advisor.core.errors import UserError

    def recipe(gpus, strategy="ddp", accum=1):
        return rc.updated(rc.Recipe(), {"distributed.gpus": gpus, "distributed.strategy": strategy,
                                        "train.micro_batch": 2, "train.grad_accum": accum})

    rf.atomic_write_json(tmp_path / rf.RUN_JSON, {"world_size": 4})
    assert rf.world_change(tmp_path, recipe(4), recipe(4)) is None
    assert rf.world_change(tmp_path, recipe(4), recipe(2, accum=2)) == \
        "resuming a checkpoint of 4 process(es) on 2; global batch 8 as before"
    assert rf.world_change(tmp_path, recipe(4), recipe(2)).endswith("from 8 to 4; set train.grad_accum = 2 to keep it")
    assert "from 8 to 2; set train.grad_accum = 4" in rf.world_change(tmp_path, recipe(4), recipe(1))
    assert rf.world_change(tmp_path, recipe(4, "fsdp"), recipe(8, "fsdp")).endswith("from 8 to 16")
    for before, after, needle in [(recipe(4, "zero2"), recipe(2, "zero2"), "resumes only on 4"),
                                  (recipe(4, "zero2"), recipe(4, "zero3"), "cannot resume with zero3"),
                                  (recipe(4, "fsdp"), recipe(4, "ddp"), "cannot resume with ddp")]:
        with pytest.raises(UserError) as info:
            rf.world_change(tmp_path, before, after)
        assert needle in str(info.value) and info.value.code == ExitCode.BAD_RECIPE
    rf.atomic_write_json(tmp_path / rf.RUN_JSON, {})  # a one-process run records no world size
    assert "of 1 process(es) on 2" in rf.world_change(tmp_path, recipe(1), recipe(2))


def test_zero_without_deepspeed_is_refused_before_any_process_starts(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    path = rc.save(rc.updated(rc.Recipe(), {"distributed.gpus": 2, "distributed.strategy": "zero3"}), tmp_path / "r.toml")
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == ExitCode.BAD_RECIPE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'peft-advisor: distributed.strategy = "zero3" needs DeepSpeed, which is not installed: '
        'pip install "peft-advisor[deepspeed]"')
    assert not (tmp_path / "run").exists()
