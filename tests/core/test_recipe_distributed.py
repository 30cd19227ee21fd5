"""The recipe's [distributed] table: defaults keep a one-GPU run, values are checked one line each,
and what cannot run on several GPUs is refused before any process starts."""

from __future__ import annotations

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError


def problem(changes: dict) -> str:
    with pytest.raises(UserError) as info:
        rc.updated(rc.Recipe(), changes)
    assert info.value.code == ExitCode.BAD_RECIPE
    return str(info.value)


def test_defaults_are_one_gpu_and_old_recipes_still_load():
    d = rc.Recipe().distributed
    assert (d.gpus, d.gpu_ids, d.strategy, d.mixed_precision, d.launcher, d.backend) == (1, (), "ddp", "no", "torchrun", "auto")
    assert (d.nnodes, d.node_rank, d.master_addr, d.master_port, d.fsdp_version) == (1, 0, "127.0.0.1", 29500, 0)
    assert rc.world_size(d) == 1
    old = rc.dumps(rc.Recipe()).split("[distributed]")[0]  # a recipe written before the table existed
    assert rc.loads(old).distributed == d


def test_table_round_trips_and_only_it_differs():
    one = rc.Recipe()
    many = rc.updated(one, {"distributed.gpu_ids": [2, 3], "distributed.strategy": "fsdp", "distributed.launcher": "accelerate",
                            "distributed.mixed_precision": "bf16", "distributed.fsdp_version": 2, "distributed.master_port": 0})
    assert rc.loads(rc.dumps(many)) == many
    assert many.distributed.gpu_ids == (2, 3) and rc.processes_per_node(many.distributed) == 2
    nodes = rc.updated(many, {"distributed.nnodes": 3, "distributed.master_addr": "10.0.0.1", "distributed.master_port": 29500})
    assert rc.world_size(nodes.distributed) == 6
    text_one, text_many = rc.dumps(one), rc.dumps(many)
    assert text_one.split("[distributed]")[0] == text_many.split("[distributed]")[0]
    assert "gpu_ids = [2, 3]" in text_many


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"distributed.gpus": 0}, "distributed.gpus: must be >= 1, got 0"),
        ({"distributed.strategy": "fdsp"}, 'distributed.strategy: unknown value "fdsp"; did you mean fsdp?'),
        ({"distributed.gpu_ids": [0, 0]}, "distributed.gpu_ids: GPU indices must be distinct and >= 0, got [0, 0]"),
        ({"distributed.gpu_ids": "0,1"}, "distributed.gpu_ids: expected a list of GPU indices like [0, 1]"),
        ({"distributed.gpu_ids": [0, 1], "distributed.gpus": 3}, "distributed.gpus: is 3 but distributed.gpu_ids lists 2 GPUs"),
        ({"distributed.mixed_precision": "fp8"}, "distributed.mixed_precision: unknown value"),
        ({"distributed.launcher": "deepspeed"}, "distributed.launcher: unknown value"),
        ({"distributed.backend": "mpi"}, "distributed.backend: unknown value"),
        ({"distributed.master_port": 70000}, "distributed.master_port: must be in [0, 65536)"),
        ({"distributed.fsdp_version": 3}, "distributed.fsdp_version: must be in [0, 3)"),
        ({"distributed.nnodes": 2, "distributed.node_rank": 2, "distributed.master_addr": "10.0.0.1"},
         "distributed.node_rank: must be < distributed.nnodes = 2, got 2"),
        ({"distributed.nnodes": 2}, "distributed.master_addr: must be node 0's address"),
        ({"distributed.nnodes": 2, "distributed.master_addr": "10.0.0.1", "distributed.master_port": 0},
         "distributed.master_port: must be a fixed port when nnodes > 1"),
    ],
)
def test_bad_values_are_one_line(changes, needle):
    assert needle in problem(changes)


def test_layerwise_galore_is_refused_on_several_gpus_only():
    layerwise = {"method.name": "galore", "method.galore_layerwise": True, "train.grad_accum": 1}
    assert rc.updated(rc.Recipe(), layerwise).distributed.gpus == 1  # one GPU: fine
    for many in ({"distributed.gpus": 2}, {"distributed.gpu_ids": [0, 1]}, {"distributed.gpus": 2, "distributed.strategy": "fsdp"}):
        assert "method.galore_layerwise: galore with galore_layerwise = true runs on one GPU only" in problem({**layerwise, **many})


@pytest.mark.parametrize("method", ["galore", "loraplus"])
def test_methods_that_cannot_shard_are_refused_with_fsdp_but_run_with_ddp(method):
    assert "distributed.strategy:" in problem({"method.name": method, "distributed.gpus": 2, "distributed.strategy": "fsdp"})
    rc.updated(rc.Recipe(), {"method.name": method, "distributed.gpus": 2, "distributed.strategy": "ddp"})
    rc.updated(rc.Recipe(), {"method.name": method, "distributed.gpus": 1, "distributed.strategy": "fsdp"})


def test_qlora_with_fsdp_is_allowed_on_fsdp1():
    r = rc.updated(rc.Recipe(), {"method.name": "qlora", "distributed.gpus": 2, "distributed.strategy": "fsdp"})
    assert r.model.load_in_4bit and rc.validate(r) == []
    rc.updated(r, {"distributed.fsdp_version": 1})
    assert "distributed.fsdp_version: QLoRA with FSDP runs on FSDP1" in problem(
        {"method.name": "qlora", "distributed.gpus": 2, "distributed.strategy": "fsdp", "distributed.fsdp_version": 2})


def test_problem_lines_point_at_the_table():
    text = rc.dumps(rc.Recipe()).replace('strategy = "ddp"', 'strategy = "zero4"')
    found = rc.problems(text)
    assert len(found) == 1 and found[0].key == "distributed.strategy"
    assert text.splitlines()[found[0].line - 1].startswith("strategy = ")
