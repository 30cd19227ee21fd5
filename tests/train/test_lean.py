"""LeanTrainer (train/lean.py) keeps what Trainer's per-step walks gave: modes, cleared grads, FLOPs."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments  # noqa: E402

from peft_advisor.train.lean import LeanTrainer, lighten  # noqa: E402
from tests.train.tiny import save_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def lora_model(folder):
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)  # loaded in eval mode
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM")
    return peft.get_peft_model(base, config)


def modes(model) -> set[bool]:
    return {m.training for m in model.modules()}


def test_train_and_eval_reach_every_module_including_a_base_loaded_in_eval_mode(tiny_folder):
    model = lora_model(tiny_folder)
    assert modes(model) == {True, False}  # PeftModel says training; the base from from_pretrained is in eval
    lighten(model)
    assert model.train() is model and modes(model) == {True}
    model.eval()
    assert modes(model) == {False}
    model.train()
    assert modes(model) == {True}


def test_train_in_the_mode_already_set_does_not_walk_the_modules(tiny_folder):
    model = lora_model(tiny_folder)
    lighten(model)
    model.train()
    child = next(m for m in model.modules() if m is not model and m.training)
    child.training = False  # only a walk would set it back
    model.train()
    assert child.training is False
    model.eval()
    model.train()
    assert child.training is True


def test_zero_grad_clears_every_gradient(tiny_folder):
    model = lora_model(tiny_folder)
    lighten(model)
    ids = torch.randint(0, 200, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    with_grad = [p for p in model.parameters() if p.grad is not None]
    assert with_grad and all(p.requires_grad for p in with_grad)
    model.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0.0 for p in with_grad)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_flops_are_trainers_count(tiny_folder, tmp_path):
    model = lora_model(tiny_folder)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True)
    trainer = LeanTrainer(model=model, args=args)
    inputs = {"input_ids": torch.ones(3, 17, dtype=torch.long)}
    expected = Trainer.floating_point_ops(trainer, inputs)
    assert expected > 0
    assert trainer.floating_point_ops(inputs) == expected
    assert trainer.floating_point_ops(inputs) == expected  # the cached count
    assert trainer.floating_point_ops({"labels": inputs["input_ids"]}) == 0


def kv_cache(outputs):
    return getattr(outputs, "cache", None) or getattr(outputs, "past_key_values", None)


def test_training_forwards_keep_no_kv_cache(tiny_folder, tmp_path):
    model = lora_model(tiny_folder)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True)
    trainer = LeanTrainer(model=model, args=args)
    model.config.use_cache = True  # what most configs say (recent Trainers switch it off at init; older ones did not)
    ids = torch.randint(0, 200, (2, 12))
    inputs = {"input_ids": ids, "labels": ids}
    assert kv_cache(model(**inputs)) is not None
    loss, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    assert kv_cache(outputs) is None and loss.requires_grad


@pytest.mark.parametrize("lengths", [[5, 9, 12, 7], [10, 10, 10, 10]], ids=["padded", "unpadded"])
def test_tokens_seen_are_the_real_tokens_of_every_step(tiny_folder, tmp_path, lengths):
    import datasets

    from peft_advisor.train.data import Collator

    rows = [list(range(3, 3 + n)) for n in lengths]
    data = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    batch = Collator(pad_token_id=0)([{"input_ids": r, "labels": r} for r in rows])
    assert ("attention_mask" in batch) == (len(set(lengths)) > 1)  # a mask only where there is padding
    # two steps of two rows: one epoch, every row once; counted on the device, read at the step-2 log
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True, max_steps=2,
                             per_device_train_batch_size=2, logging_steps=2, save_strategy="no",
                             remove_unused_columns=False, include_num_input_tokens_seen="no")
    trainer = LeanTrainer(model=lora_model(tiny_folder), args=args, train_dataset=data, data_collator=Collator(0))
    trainer.train()
    assert trainer.state.num_input_tokens_seen == sum(lengths)


def test_step_settings_per_device_and_precision(tmp_path):
    from peft_advisor.core.recipe import Recipe, updated
    from peft_advisor.train.run import training_args

    gpu = training_args(Recipe(), tmp_path, cuda=True, has_eval=False, resume=False)
    assert gpu["dataloader_num_workers"] == 2 and gpu["dataloader_persistent_workers"]
    assert gpu["include_num_input_tokens_seen"] == "no"  # LeanTrainer counts them
    assert gpu["logging_nan_inf_filter"] is False and gpu["fp16"] is False
    fp16 = training_args(updated(Recipe(), {"model.dtype": "float16"}), tmp_path, cuda=True, has_eval=False, resume=False)
    assert fp16["fp16"] and fp16["logging_nan_inf_filter"]  # the loss scaler skips overflowing steps
    cpu = training_args(Recipe(), tmp_path, cuda=False, has_eval=False, resume=False)
    assert cpu["dataloader_num_workers"] == 0 and not cpu["dataloader_persistent_workers"]


def test_step_memory_is_read_from_one_allocator_table(monkeypatch):
    """The per-step memory fields come from one `memory_stats()` read, and are what the allocator's
    own `memory_allocated`/`memory_reserved`/`max_memory_reserved`/`max_memory_allocated` say of the same table."""
    from peft_advisor.train.events_callback import cuda_memory

    table = {"allocated_bytes.all.current": 3, "reserved_bytes.all.current": 5, "reserved_bytes.all.peak": 8,
             "allocated_bytes.all.peak": 13, "active_bytes.all.current": 21}
    reads = []

    def memory_stats(device=None):
        reads.append(device)
        return table

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_stats", memory_stats)
    monkeypatch.setattr(torch.cuda.memory, "memory_stats", memory_stats)
    assert cuda_memory() == {"mem_allocated_bytes": 3, "mem_reserved_bytes": 5, "mem_peak_bytes": 8,
                             "mem_peak_allocated_bytes": 13}
    assert len(reads) == 1
    assert (torch.cuda.memory_allocated(), torch.cuda.memory_reserved(), torch.cuda.max_memory_reserved(),
            torch.cuda.max_memory_allocated()) == (3, 5, 8, 13)


def test_clipping_over_the_trainable_list_matches_trainers(tiny_folder, tmp_path):
    """Same norm and same clipped gradients as Trainer's clipping over `model.parameters()`; and
    Trainer's loop calls the method this overrides (else the walk it saves would be back)."""
    assert "self._clip_grad_norm(model)" in inspect.getsource(Trainer)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True, max_grad_norm=0.01)
    grads = []
    for cls in (Trainer, LeanTrainer):
        torch.manual_seed(0)
        model = lora_model(tiny_folder)
        trainer = cls(model=model, args=args)
        ids = torch.randint(0, 200, (2, 12))
        model(input_ids=ids, labels=ids).loss.backward()
        norm = cls._clip_grad_norm(trainer, model)
        grads.append((float(norm), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (norm_a, a), (norm_b, b) = grads
    assert norm_a == pytest.approx(norm_b) and norm_a > 0.01  # it did clip
    assert len(a) == len(b) and all(torch.allclose(x, y) for x, y in zip(a, b))


def deferred_and_not(tiny_folder, tmp_path, **extra):
    """The same tiny run with Trainer's logging and with the log taken one step late (as on a GPU)."""
    import datasets

    from peft_advisor.train.data import Collator

    rows = [list(range(3, 3 + n)) for n in (5, 9, 12, 7, 10, 6, 8, 11)]
    data = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    out = []
    for defer in (False, True):
        args = TrainingArguments(output_dir=str(tmp_path / str(defer)), use_cpu=True, report_to=[], disable_tqdm=True,
                                 max_steps=4, per_device_train_batch_size=2, logging_steps=1, save_strategy="steps",
                                 save_steps=2, remove_unused_columns=False, include_num_input_tokens_seen="no",
                                 seed=0, **extra)
        torch.manual_seed(0)
        trainer = LeanTrainer(model=lora_model(tiny_folder), args=args, train_dataset=data, data_collator=Collator(0))
        assert trainer.defer_logs is False  # only on one CUDA device
        trainer.defer_logs = defer
        trainer.train()
        out.append(trainer)
    return out


def timeless(history):
    return [{k: v for k, v in h.items() if not k.endswith(("_runtime", "_per_second"))} for h in history]


def test_logs_taken_one_step_late_are_trainers_logs(tiny_folder, tmp_path):
    plain, deferred = deferred_and_not(tiny_folder, tmp_path)
    assert [h["step"] for h in plain.state.log_history] == [1, 2, 3, 4, 4]  # four steps, then the run's summary
    assert timeless(deferred.state.log_history) == timeless(plain.state.log_history)
    assert deferred.state.num_input_tokens_seen == plain.state.num_input_tokens_seen == 68
    assert deferred._pending_log is None


def test_a_checkpoint_holds_its_own_steps_log(tiny_folder, tmp_path):
    import json

    _, deferred = deferred_and_not(tiny_folder, tmp_path)
    state = json.loads((tmp_path / "True" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"]] == [1, 2]


@pytest.mark.parametrize("grad_norm", [None, 0.5], ids=["no-norm", "float-norm"])
def test_a_late_log_without_a_norm_tensor(tiny_folder, tmp_path, grad_norm):
    """Trainer passes no norm when nothing is clipped, or a float (DeepSpeed): both are kept as given."""
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True)
    trainer = LeanTrainer(model=lora_model(tiny_folder), args=args)
    trainer.state.global_step, trainer._globalstep_last_logged, trainer._total_loss_scalar = 3, 1, 0.0  # as train() sets
    loss_sum = torch.tensor(6.0)
    trainer._pending_log = trainer._take_log(loss_sum, grad_norm, 0.1, None)
    assert float(loss_sum) == 0.0 and trainer._globalstep_last_logged == 3
    trainer.write_pending_log()
    logged = trainer.state.log_history[-1]
    assert logged["loss"] == 3.0 and logged["step"] == 3 and logged.get("grad_norm") == grad_norm
