"""What the trainer hands the HF Trainer for several processes (train/dist.py), checked without a
process group: these paths run for real only on GPUs (tests/train/test_gpu_distributed.py)."""

from __future__ import annotations

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.train import dist
from peft_advisor.train.dist import Ranks

TWO = Ranks(rank=0, local_rank=0, world=2, local_world=2)


def recipe(**changes):
    return rc.updated(rc.Recipe(), {"distributed.gpus": 2, **changes})


def test_one_process_adds_nothing():
    assert dist.training_args(recipe(), Ranks(), True, ["LlamaDecoderLayer"]) == {}


def test_ddp_args():
    assert dist.training_args(recipe(), TWO, True, ["LlamaDecoderLayer"]) == {
        "ddp_backend": "nccl", "ddp_find_unused_parameters": False}
    assert dist.training_args(recipe(), TWO, False, [])["ddp_backend"] == "gloo"
    assert dist.training_args(recipe(**{"distributed.backend": "gloo"}), TWO, True, [])["ddp_backend"] == "gloo"


def test_fsdp2_full_shard_per_decoder_block():
    args = dist.training_args(recipe(**{"distributed.strategy": "fsdp"}), TWO, True, ["LlamaDecoderLayer"])
    assert args["fsdp"] is True  # transformers 5.x: everything in fsdp_config
    assert args["fsdp_config"] == {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": False, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        "reshard_after_forward": True}
    ckpt = dist.training_args(recipe(**{"distributed.strategy": "fsdp", "train.grad_ckpt": True}), TWO, True, [])
    assert ckpt["fsdp_config"]["activation_checkpointing"] is True and ckpt["gradient_checkpointing"] is False


def test_qlora_with_fsdp_is_fsdp1_with_flat_parameters():
    r = recipe(**{"distributed.strategy": "fsdp", "method.name": "qlora"})
    assert dist.fsdp_version(r) == 1
    config = dist.training_args(r, TWO, True, ["LlamaDecoderLayer"])["fsdp_config"]
    assert config["version"] == 1 and config["use_orig_params"] is False and "reshard_after_forward" not in config
    lora1 = dist.training_args(recipe(**{"distributed.strategy": "fsdp", "distributed.fsdp_version": 1}), TWO, True, [])
    assert lora1["fsdp_config"]["use_orig_params"] is True


def test_the_wrapped_block_is_found_through_peft(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert dist.wrap_classes(model) == ["LlamaDecoderLayer"]
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert dist.wrap_classes(peft_model) == ["LlamaDecoderLayer"]


def test_fsdp_and_nccl_need_cuda():
    from peft_advisor.core.errors import ExitCode, UserError

    for changes, needle in [({"distributed.strategy": "fsdp"}, "fsdp"), ({"distributed.backend": "nccl"}, "nccl")]:
        with pytest.raises(UserError) as info:
            dist.check_gpus(TWO, recipe(**changes), cuda=False)
        assert info.value.code == ExitCode.NO_GPU and needle in str(info.value)
    dist.check_gpus(TWO, recipe(), cuda=False)  # ddp over gloo on the CPU is fine
    dist.check_gpus(Ranks(), recipe(**{"distributed.strategy": "fsdp"}), cuda=False)  # one process: not distributed


def test_quantization_storage_only_for_sharded_qlora():
    from peft_advisor.train.methods import quantization_config

    pytest.importorskip("bitsandbytes")
    import torch

    fsdp = recipe(**{"distributed.strategy": "fsdp", "method.name": "qlora"})
    assert quantization_config(fsdp, world=2).bnb_4bit_quant_storage == torch.bfloat16
    assert quantization_config(fsdp, world=1).bnb_4bit_quant_storage == torch.uint8
    ddp = recipe(**{"method.name": "qlora"})
    assert quantization_config(ddp, world=2).bnb_4bit_quant_storage == torch.uint8


def test_the_trainer_gets_expandable_segments_unless_the_person_set_the_allocator():
    """Fixed segments cache freed blocks another size cannot use (reserved 0.7-2x a logits buffer
    above allocated on the fits benchmark); the person's own setting, under either name, is kept."""
    from peft_advisor.launch import ALLOCATOR_CONF, allocator_env

    assert allocator_env({"PATH": "/bin"}) == {"PATH": "/bin", "PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR_CONF}
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    assert allocator_env(mine) == mine
    assert allocator_env({"PYTORCH_ALLOC_CONF": "backend:cudaMallocAsync"}) == {"PYTORCH_ALLOC_CONF": "backend:cudaMallocAsync"}


def test_a_worker_node_gets_the_same_allocator_as_node_0(monkeypatch, tmp_path):
    """Node 0's ranks run with expandable segments; a worker node's must too, or they die first."""
    from peft_advisor import launch

    seen = {}

    class Done:
        def __init__(self, argv, stdin=None, env=None):
            seen.update(env)

        def wait(self):
            return 0

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setattr(launch, "child_argv_env", lambda *a, **k: (["true"], {"CUDA_VISIBLE_DEVICES": "0"}))
    monkeypatch.setattr(launch.subprocess, "Popen", Done)
    assert launch.run_worker_node(tmp_path / "r.toml", tmp_path / "run", node_rank=1) == 0
    assert seen["PYTORCH_CUDA_ALLOC_CONF"] == launch.ALLOCATOR_CONF


def test_zero_hands_the_trainer_its_config_file(tmp_path):
    r = recipe(**{"distributed.strategy": "zero3", "distributed.zero_offload": "optimizer+params", "train.grad_accum": 2})
    args = dist.training_args(r, TWO, True, [], tmp_path / "ds_config.json")
    assert args["deepspeed"] == str(tmp_path / "ds_config.json")
    assert (args["bf16"], args["fp16"]) == (True, False)  # as the config says, or the Trainer refuses the mismatch
    config = dist.ds_config(r, cuda=True, hidden_size=64)
    assert config["train_batch_size"] == r.train.micro_batch * 2 * 2 and config["bf16"] == {"enabled": True}
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and zero["reduce_bucket_size"] == 64 * 64 and zero["stage3_prefetch_bucket_size"] == 3686
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
    assert "auto" not in str(config)  # every value explicit: accelerate launch alone repeats the run
    two = dist.ds_config(recipe(**{"distributed.strategy": "zero2"}), cuda=False, hidden_size=64)
    assert two["zero_optimization"]["stage"] == 2 and two["bf16"] == two["fp16"] == {"enabled": False}
    assert "offload_optimizer" not in two["zero_optimization"]


def test_zero_without_deepspeed_is_one_line(monkeypatch):
    import importlib.util

    from peft_advisor.core.errors import ExitCode, UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(UserError) as info:
        dist.check_gpus(TWO, recipe(**{"distributed.strategy": "zero2"}), cuda=False)
    assert info.value.code == ExitCode.BAD_RECIPE and 'pip install "peft-advisor[deepspeed]"' in str(info.value)
    dist.check_gpus(TWO, recipe(), cuda=False)  # ddp needs no deepspeed
