"""The [train] techniques on the CPU: the chunked loss equals the model's own loss and gradients
(tiny random Llama; tiny random Gemma 2 with its logit soft-capping), a demo-sized run with
fused_loss ends ok on the chunked path, offloading activations changes no loss, and what needs CUDA
or a package is refused with one line, in the CLI before any child and again in the trainer."""

from __future__ import annotations

import json
import math

import pytest

from peft_advisor.core.errors import ExitCode, UserError
from tests.train.test_methods import events_of, train


def tiny_gemma2(softcap: float = 5.0):
    """Gemma 2 with hidden 32, 2 layers, a 300-token vocabulary and final-logit soft-capping."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                          final_logit_softcapping=softcap, attn_implementation="eager")
    torch.manual_seed(0)
    return Gemma2ForCausalLM(config)


def tiny_llama(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


def batch(vocab: int, rows: int = 3, tokens: int = 19, seed: int = 1):
    """Random ids, a padded last row and prompt tokens masked with -100, as the collator makes them."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, tokens), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, -5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(params=["llama", "gemma2"])
def model(request, tiny_model):
    return tiny_llama(tiny_model) if request.param == "llama" else tiny_gemma2()


@pytest.mark.parametrize("num_items", [None, 37])
def test_chunked_loss_equals_the_models_own_loss_and_gradients(model, num_items, monkeypatch):
    from peft_advisor.core import techniques
    from peft_advisor.train.fused_loss import FusedLoss

    monkeypatch.setattr(techniques, "LOSS_CHUNK_LOGITS", 7 * model.config.vocab_size)  # 7 tokens a chunk: 9 chunks
    inputs = batch(model.config.vocab_size)
    extra = {} if num_items is None else {"num_items_in_batch": num_items}
    fused = FusedLoss(model, "chunked")
    want, want_grads = loss_and_grads(model, lambda: model(**inputs, **extra).loss)
    got, got_grads = loss_and_grads(model, lambda: fused(model, {**inputs, **extra})["loss"])
    assert torch_close(got, want)
    assert want_grads.keys() == got_grads.keys()
    assert "lm_head.weight" in got_grads or model.config.tie_word_embeddings  # tied: the head is embed_tokens
    for name, grad in want_grads.items():
        assert torch_close(got_grads[name], grad), name


def torch_close(a, b) -> bool:
    import torch

    return torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_softcapping_is_applied(monkeypatch):
    """Without the cap the loss differs, so the test above would see a forgotten cap."""
    from peft_advisor.train.fused_loss import FusedLoss

    model = tiny_gemma2(softcap=0.5)
    inputs = batch(model.config.vocab_size)
    fused = FusedLoss(model, "chunked")
    capped = fused(model, inputs)["loss"]
    fused.softcap = None
    assert not torch_close(fused(model, inputs)["loss"], capped)
    assert torch_close(capped, model(**inputs).loss)


def test_a_lora_model_trains_through_the_fused_loss(tiny_model):
    """peft's wrapper: the adapter's gradients equal those of the model's own loss."""
    from peft import LoraConfig, get_peft_model

    from peft_advisor.train.fused_loss import FusedLoss

    model = get_peft_model(tiny_llama(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                               init_lora_weights=False))
    inputs = batch(model.config.vocab_size)
    want, want_grads = loss_and_grads(model, lambda: model(**inputs).loss)
    got, got_grads = loss_and_grads(model, lambda: FusedLoss(model, "chunked")(model, inputs)["loss"])
    assert torch_close(got, want) and want_grads.keys() == got_grads.keys() and got_grads
    assert all(torch_close(got_grads[n], g) for n, g in want_grads.items())


def test_an_adapter_on_the_head_is_refused(tiny_model):
    from peft import LoraConfig, get_peft_model

    from peft_advisor.train.fused_loss import FusedLoss

    model = get_peft_model(tiny_llama(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(UserError, match="adapter on the output head"):
        FusedLoss(model, "chunked")


def test_chunk_tokens_follow_the_vocabulary():
    from peft_advisor.core.techniques import LOSS_CHUNK_LOGITS, loss_chunk_tokens

    assert loss_chunk_tokens(128_256) * 128_256 <= LOSS_CHUNK_LOGITS < (loss_chunk_tokens(128_256) + 1) * 128_256
    assert loss_chunk_tokens(10**9) == 1


# ---------------------------------------------------------------- whole runs on the CPU


def run_json(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def step_losses(run_dir):
    return [e["loss"] for e in events_of(run_dir) if e["kind"] == "step"]


def test_a_run_with_the_fused_loss_ends_ok_on_the_chunked_path(make_recipe, tmp_path):
    plain = make_recipe(name="plain.toml", **{"train.eval_every": 0, "train.save_every": 0})
    fused = make_recipe(name="fused.toml", **{"train.fused_loss": True, "train.eval_every": 0, "train.save_every": 0})
    assert train(plain, tmp_path / "plain") == 0
    assert train(fused, tmp_path / "fused") == 0
    start = events_of(tmp_path / "fused")[0]
    assert start["loss_impl"] == "chunked" and run_json(tmp_path / "fused")["loss_impl"] == "chunked"
    assert events_of(tmp_path / "plain")[0]["loss_impl"] == "full"
    assert events_of(tmp_path / "fused")[-1]["status"] == "ok"
    assert step_losses(tmp_path / "fused") == pytest.approx(step_losses(tmp_path / "plain"), rel=1e-4)


@pytest.mark.slow
def test_the_demo_trains_with_the_fused_loss(tmp_path):
    """The shipped demo (SmolLM2-135M, 49k vocabulary: several chunks per micro-batch), two steps."""
    from peft_advisor.core import recipe as rc

    recipe = rc.save(rc.updated(rc.Recipe(), {
        "train.fused_loss": True, "train.max_steps": 2, "train.micro_batch": 2, "train.eval_every": 0,
        "train.save_every": 0, "train.baseline_eval_rows": 0, "data.max_seq_len": 64, "data.eval_split": 0,
        "output.dir": str(tmp_path / "run")}), tmp_path / "demo.toml")
    assert train(recipe, tmp_path / "run") == 0
    events = events_of(tmp_path / "run")
    assert events[0]["loss_impl"] == "chunked" and events[-1]["status"] == "ok"


def test_offloading_activations_runs_on_the_cpu_and_changes_no_loss(make_recipe, tmp_path):
    quiet = {"train.eval_every": 0, "train.save_every": 0}
    plain = make_recipe(name="plain.toml", **quiet)
    offload = make_recipe(name="offload.toml", **{"train.offload_activations": True, **quiet})
    both = make_recipe(name="both.toml", **{"train.offload_activations": True, "train.grad_ckpt": True, **quiet})
    fused = make_recipe(name="fused.toml", **{"train.offload_activations": True, "train.fused_loss": True, **quiet})
    for recipe, name in ((plain, "plain"), (offload, "offload"), (both, "both"), (fused, "fused")):
        assert train(recipe, tmp_path / name) == 0
    assert events_of(tmp_path / "offload")[0]["offload_activations"] == "cpu, no-op"
    assert "offload_activations" not in events_of(tmp_path / "plain")[0]
    assert step_losses(tmp_path / "offload") == step_losses(tmp_path / "plain")
    for name in ("both", "fused"):  # checkpointing and the chunked loss compose with it
        assert step_losses(tmp_path / name) == pytest.approx(step_losses(tmp_path / "plain"), rel=1e-4), name


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("changes, needle", [
    ({"train.liger_kernels": True}, "train.liger_kernels: needs an NVIDIA GPU with CUDA"),
    ({"train.optimizer": "adamw_8bit"}, 'train.optimizer: "adamw_8bit" needs an NVIDIA GPU with CUDA'),
    ({"train.optimizer": "paged_adamw"}, 'train.optimizer: "paged_adamw" needs an NVIDIA GPU with CUDA'),
])
def test_cuda_techniques_are_refused_on_the_cpu_in_the_trainer(changes, needle, make_recipe, tmp_path, capsys):
    recipe = make_recipe(**changes)
    assert train(recipe, tmp_path / "run") == ExitCode.NO_GPU
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes, needle, code", [
    ({"train.liger_kernels": True}, "train.liger_kernels: needs an NVIDIA GPU with CUDA", ExitCode.NO_GPU),
    ({"train.optimizer": "paged_adamw_8bit"}, "bitsandbytes optimizers are CUDA kernels", ExitCode.NO_GPU),
    ({"method.name": "galore", "train.optimizer": "adamw_8bit"}, "galore, which has its own optimizer",
     ExitCode.BAD_RECIPE),
])
def test_the_cli_refuses_before_any_child(changes, needle, code, make_recipe, tmp_path, capsys, monkeypatch):
    from peft_advisor import launch
    from peft_advisor.cli import main

    monkeypatch.setattr("peft_advisor.launch.CudaHere.__call__", lambda self: False)
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail("a child was started"))
    changes = dict(changes)
    optimizer = changes.pop("train.optimizer", "adamw")  # written into the file: a recipe with it cannot be built
    recipe = make_recipe(**changes)
    recipe.write_text(recipe.read_text().replace('optimizer = "adamw"', f'optimizer = "{optimizer}"'))
    monkeypatch.chdir(recipe.parent)
    assert main(["train", recipe.name, "--run-dir", str(tmp_path / "run")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith(f"peft-advisor: {recipe.name}: ")  # as typed
    # the app and bench start runs through launch.start: the same refusal, before any folder
    with pytest.raises(UserError, match=needle) as refused:
        launch.start(recipe, tmp_path / "app-run")
    assert refused.value.code == code
    assert not [p.name for p in tmp_path.iterdir() if p.is_dir() and "run" in p.name]  # no run or staging folder


def test_validate_warns_but_accepts(make_recipe, capsys, monkeypatch):
    """A recipe may be meant for another machine: validate says train would refuse it here, exit 0."""
    from peft_advisor.cli import main

    monkeypatch.setattr("peft_advisor.launch.CudaHere.__call__", lambda self: False)
    recipe = make_recipe(**{"train.optimizer": "adamw_8bit"})
    assert main(["validate", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "bitsandbytes optimizers are CUDA kernels" in err and "train will refuse it here" in err


def test_missing_packages_name_the_install_command():
    from peft_advisor.core.techniques import environment_refusal

    missing = lambda package: False  # noqa: E731
    key, reason = environment_refusal(True, "adamw", cuda=True, is_installed=missing)
    assert key == "train.liger_kernels" and "pip install 'peft-advisor[fast]'" in reason
    key, reason = environment_refusal(False, "adamw_8bit", cuda=True, is_installed=missing)
    assert key == "train.optimizer" and "pip install bitsandbytes" in reason
    assert environment_refusal(False, "adamw", cuda=False, is_installed=missing) is None


def test_an_architecture_liger_does_not_patch_is_refused(tiny_model):
    from peft_advisor.train.techniques import apply_liger_kernels

    patched = []
    table = {"llama": lambda model, rope, rms_norm, swiglu: patched.append((rope, rms_norm, swiglu))}
    assert apply_liger_kernels(tiny_llama(tiny_model), table) == "llama" and patched == [(True, True, True)]
    with pytest.raises(UserError, match=r"no kernels for this architecture \(gemma2\)"):
        apply_liger_kernels(tiny_gemma2(), table)


@pytest.mark.parametrize("changes, needle", [
    ({"train.fused_loss": True, "method.targets": ["q_proj", "lm_head"]}, "adapter on lm_head"),
    ({"method.name": "lorafa", "train.optimizer": "adamw_8bit"}, "lorafa, which has its own optimizer"),
    ({"method.name": "qlora", "train.optimizer": "paged_adamw", "distributed.gpus": 2,
      "distributed.strategy": "fsdp"}, "QLoRA under FSDP"),
    ({"train.fused_loss": True, "distributed.gpus": 2, "distributed.strategy": "fsdp"}, "not supported with FSDP"),
])
def test_recipe_refusals(changes, needle):
    from peft_advisor.core import recipe as rc

    with pytest.raises(UserError, match=needle):
        rc.updated(rc.Recipe(), changes)


def test_the_optimizer_reaches_trainer_and_loraplus(tiny_model):
    from peft_advisor.core import recipe as rc
    from peft_advisor.train import methods

    r = rc.updated(rc.Recipe(), {"train.optimizer": "paged_adamw_8bit", "method.rank": 4})
    assert methods.build(tiny_llama(tiny_model), r).args["optim"] == "paged_adamw_8bit"
    plain = rc.updated(r, {"train.optimizer": "adamw"})
    assert "optim" not in methods.build(tiny_llama(tiny_model), plain).args
    bnb = pytest.importorskip("bitsandbytes")
    built = methods.build(tiny_llama(tiny_model), rc.updated(r, {"method.name": "loraplus",
                                                                 "train.optimizer": "adamw_8bit"}))
    optimizer = built.optimizers[0]
    lrs = {g["lr"] for g in optimizer.param_groups if g["params"]}  # LoRA+'s A and B groups (no embedding here)
    assert isinstance(optimizer, bnb.optim.AdamW8bit) and lrs == {r.train.lr, r.train.lr * 16}


# ---------------------------------------------------------------- on a GPU (liger-kernel, bitsandbytes)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs an NVIDIA GPU with CUDA")
def test_liger_loss_equals_the_chunked_loss_on_a_gpu(arch, dtype, tiny_model):
    """Liger's fused kernel and the chunked loss: the same loss and gradients (bf16: within bf16 noise)."""
    import torch

    pytest.importorskip("liger_kernel")
    from peft_advisor.train.fused_loss import FusedLoss

    model = (tiny_llama(tiny_model) if arch == "llama" else tiny_gemma2()).to("cuda", getattr(torch, dtype))
    inputs = {k: v.cuda() for k, v in batch(model.config.vocab_size).items()}
    want, want_grads = loss_and_grads(model, lambda: FusedLoss(model, "chunked")(model, inputs)["loss"])
    got, got_grads = loss_and_grads(model, lambda: FusedLoss(model, "liger")(model, inputs)["loss"])
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else {"rtol": 2e-2, "atol": 2e-2}
    assert torch.allclose(got.float(), want.float(), **tol)
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name].float(), grad.float(), **tol), name


@pytest.mark.parametrize("changes, field, value", [
    ({"train.fused_loss": True}, "loss_impl", "liger"),
    ({"train.optimizer": "adamw_8bit"}, "optimizer", "adamw_8bit"),
    ({"train.optimizer": "paged_adamw"}, "optimizer", "paged_adamw"),
    ({"method.name": "loraplus", "train.optimizer": "paged_adamw_8bit"}, "optimizer", "paged_adamw_8bit"),
    ({"method.name": "full", "train.fused_loss": True, "train.optimizer": "adamw_8bit"}, "loss_impl", "liger"),
    ({"train.offload_activations": True, "train.grad_ckpt": True}, "offload_activations", "pinned"),
    ({"train.liger_kernels": True, "train.fused_loss": True}, "liger_kernels", "llama"),
    ({"train.grad_ckpt": True, "train.grad_ckpt_layers": 1, "train.fused_loss": True}, "checkpointed_layers", "1 of 2"),
], ids=["fused", "8bit", "paged", "loraplus-paged8", "full-fused-8bit", "offload-ckpt", "liger-kernels",
        "partial-ckpt"])
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs an NVIDIA GPU with CUDA")
def test_techniques_train_on_a_gpu(changes, field, value, make_recipe, tmp_path):
    if changes.get("train.fused_loss") or changes.get("train.liger_kernels"):
        pytest.importorskip("liger_kernel")
    if changes.get("train.optimizer", "adamw") != "adamw":
        pytest.importorskip("bitsandbytes")
    run_dir = tmp_path / "run"
    assert train(make_recipe(**{**changes, "model.dtype": "bfloat16"}), run_dir) == 0
    events = events_of(run_dir)
    assert events[0][field] == value and events[-1]["status"] == "ok"
    assert all(math.isfinite(e["loss"]) for e in events if e["kind"] == "step")


def test_an_export_on_a_gpu_machine_names_the_package_train_would_need(tmp_path, capsys, monkeypatch):
    """recommend --export on an NVIDIA machine without liger-kernel: the recipe is written, and one
    warning line gives the install command (train would refuse it); without a GPU, nothing is said."""
    from peft_advisor.cli import main
    from peft_advisor.core import recipe as rc
    from peft_advisor.core import techniques

    monkeypatch.setattr(techniques, "installed", lambda package: False)
    monkeypatch.setattr("peft_advisor.launch.CudaHere.__call__", lambda self: True)
    out = tmp_path / "r.toml"
    advice = ["recommend", "--vram", "12", "--model", "llama-3.2-1b", "--methods", "rslora", "--export", str(out)]
    assert main(advice) == 0
    err = capsys.readouterr().err
    assert rc.load(out).train.liger_kernels  # the advice turned Liger's kernels on
    assert out.exists() and "warning:" in err and "pip install 'peft-advisor[fast]'" in err
    monkeypatch.setattr("peft_advisor.launch.CudaHere.__call__", lambda self: False)
    assert main([*advice, "--force"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_offloading_keeps_the_frozen_weights_and_moves_the_activations(tiny_model):
    """Plain save_on_cpu would copy every frozen base weight (saved by its matmul as a view, W.t())
    to CPU each micro-batch: the hook keeps weights and small tensors, and offloads the rest."""
    import torch
    from peft import LoraConfig, get_peft_model

    from peft_advisor.train.techniques import is_activation, weight_storages

    model = get_peft_model(tiny_llama(tiny_model), LoraConfig(r=4, target_modules="all-linear"))
    kept, saved = weight_storages(model), []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch(model.config.vocab_size)).loss.backward()
    frozen = {p.untyped_storage().data_ptr() for n, p in model.named_parameters() if "base_layer" in n}
    as_weights = [t for t in saved if t.untyped_storage().data_ptr() in frozen]
    assert as_weights and not any(is_activation(t, kept, min_bytes=0) for t in as_weights)
    activations = [t for t in saved if is_activation(t, kept, min_bytes=0)]
    assert activations and not any(t.untyped_storage().data_ptr() in kept for t in activations)
    big = max(activations, key=lambda t: t.numel())
    assert not is_activation(big, kept, min_bytes=big.numel() * big.element_size() + 1)  # small ones stay


def test_qlora_on_a_gpu_machine_without_bitsandbytes_is_one_line_before_the_child(make_recipe, tmp_path, monkeypatch):
    """QLoRA's 4-bit weights are bitsandbytes kernels: with a GPU but no bitsandbytes, the launch
    (train, the app, bench) refuses in one line naming the install, and export warns the same."""
    from peft_advisor import launch
    from peft_advisor.core import recipe as rc
    from peft_advisor.core import techniques

    monkeypatch.setattr(techniques, "installed", lambda package: package != "bitsandbytes")
    monkeypatch.setattr("peft_advisor.launch.CudaHere.__call__", lambda self: True)
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail("a child was started"))
    recipe = make_recipe(**{"method.name": "qlora"})
    with pytest.raises(UserError, match=r"method.name: qlora's 4-bit weights need bitsandbytes, which is not "
                                        r"installed: pip install bitsandbytes") as refused:
        launch.start(recipe, tmp_path / "run")
    assert refused.value.code == ExitCode.BAD_RECIPE
    monkeypatch.setattr(techniques, "installed", lambda package: True)
    launch.refuse_techniques(rc.load(recipe), recipe)  # installed: no refusal


def test_offloading_under_fsdp2_and_with_tensors_without_storage(tmp_path):
    """FSDP2's parameters are DTensors, whose storage cannot be read: the hook takes their local
    shards, keeps the weights the forward saves (Parameters, or views of them), and offloads sparse
    tensors as save_on_cpu did rather than raise."""
    import torch
    import torch.distributed as dist

    from peft_advisor.train.techniques import is_activation, offload_saved_tensors

    fsdp = pytest.importorskip("torch.distributed.fsdp")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'rdzv'}")
    try:
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
        for layer in model:
            fsdp.fully_shard(layer)
        fsdp.fully_shard(model)
        with offload_saved_tensors(model, pin_memory=False):
            model(torch.randn(4, 64, requires_grad=True)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()
    sparse = torch.eye(512).to_sparse()
    assert is_activation(sparse, set(), min_bytes=1)
    weight = torch.nn.Parameter(torch.ones(512, 512))
    assert not is_activation(weight, set(), min_bytes=1) and not is_activation(weight.t(), set(), min_bytes=1)


# ---------------------------------------------------------------- partial checkpointing


def test_partial_checkpointing_limits_the_blocks_and_changes_no_loss(make_recipe, tmp_path):
    """grad_ckpt_layers = 1: the first block is recomputed, the others keep their activations; the
    losses are those of full checkpointing (recomputation changes no number)."""
    quiet = {"train.eval_every": 0, "train.save_every": 0, "train.grad_ckpt": True}
    full = make_recipe(name="full.toml", **quiet)
    part = make_recipe(name="part.toml", **{"train.grad_ckpt_layers": 1, **quiet})
    assert train(full, tmp_path / "full") == 0
    assert train(part, tmp_path / "part") == 0
    start = events_of(tmp_path / "part")[0]
    blocks = int(start["checkpointed_layers"].split(" of ")[1])
    assert start["checkpointed_layers"] == f"1 of {blocks}" and blocks >= 2
    assert "checkpointed_layers" not in events_of(tmp_path / "full")[0]
    assert step_losses(tmp_path / "part") == pytest.approx(step_losses(tmp_path / "full"), rel=1e-5)


def test_limit_checkpointing_turns_it_off_on_the_later_blocks(tiny_model):
    from transformers import AutoModelForCausalLM
    from transformers.modeling_layers import GradientCheckpointingLayer

    from peft_advisor.train.techniques import limit_checkpointing

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert limit_checkpointing(model, 1) == (1, len(blocks))
    assert [b.gradient_checkpointing for b in blocks] == [True] + [False] * (len(blocks) - 1)


def test_limit_checkpointing_counts_only_the_language_decoders_blocks():
    """Gemma 3's multimodal model lists its vision encoder's layers first: they are not the blocks."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from peft_advisor.train.techniques import limit_checkpointing

    config = Gemma3Config(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, vocab_size=128, max_position_embeddings=128,
                         sliding_window=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4)
    model = Gemma3ForConditionalGeneration(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert limit_checkpointing(model, 2) == (2, 3)
    decoder = model.get_base_model().get_decoder().layers
    assert [b.gradient_checkpointing for b in decoder] == [True, True, False]
    vision = [m for n, m in model.named_modules() if "vision" in n and hasattr(m, "gradient_checkpointing")]
    assert vision and all(m.gradient_checkpointing for m in vision if type(m).__name__.endswith("Layer"))


@pytest.mark.parametrize("changes, needle", [
    ({"train.grad_ckpt_layers": 3}, "train.grad_ckpt_layers: is 3 but gradient checkpointing is off"),
    ({"train.grad_ckpt": True, "train.grad_ckpt_layers": 3, "distributed.gpus": 2, "distributed.strategy": "fsdp"},
     "must be 0 with FSDP on several GPUs"),
    ({"train.grad_ckpt": True, "train.grad_ckpt_layers": -1}, "train.grad_ckpt_layers"),
])
def test_partial_checkpointing_refusals(changes, needle):
    from peft_advisor.core import recipe as rc

    with pytest.raises(UserError, match=needle):
        rc.updated(rc.Recipe(), changes)
