"""Hugging Face's Trainer without its per-step walks over the whole model.

A small model's step on a fast GPU is bound by the CPU launching kernels, so any other Python work
in a step adds straight to its time. Per optimizer step, Trainer walks every module or parameter
three times more than a hand-written loop: the FLOP count (`num_parameters`, for the logged
`total_flos`), `model.train()` and `model.zero_grad()`; with LoRA's small modules a 0.5B model has
about two thousand of them. Gradient clipping gets `model.parameters()`, another walk, and accelerate
then checks every parameter's gradient for a sharded type; here it clips the trainable parameters,
listed once. Trainer's count of tokens seen reads the GPU after every step; here it
is summed on the device and read when the step is logged. And the forward runs without a KV cache,
as a hand-written loop would.

On one GPU nothing in a step waits for the GPU: Trainer reads the logged loss and grad norm with
`.item()` as soon as the optimizer step is launched, so the CPU idles until the GPU has finished the
step, and the GPU then idles while the next step is launched. Here those values are copied to the
host without waiting and written as the step's log one step later, when the copy has long finished
(`PendingLog`); a log is written at once where something must follow it (an eval, a checkpoint, the
end). `bench/trainer_profile.py` measures the cost (cProfile, tokens/s per variant);
`bench/trainer_overhead.py` the result against a plain loop.

What stays the same: the FLOP count (the parameter count is taken once; it does not change while
training), every parameter's gradient set to None after each step (frozen ones never have one),
and the train/eval mode of every module (modes change only through the top-level model here:
Trainer's train()/eval() and the exact-match eval).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import accelerate.optimizer
from transformers import Trainer

# accelerate's optimizer step asks twice per step whether the `lomo_optim` package is installed, each
# time a search of every folder on sys.path; the answer does not change while a process runs.
if hasattr(accelerate.optimizer, "is_lomo_available"):
    accelerate.optimizer.is_lomo_available = functools.cache(accelerate.optimizer.is_lomo_available)


@dataclass
class PendingLog:
    """A step's logged values on their way to the host: those that were tensors (loss sum, grad
    norm, tokens), named by `names`, in `values`, filled by a copy that `ready` (a CUDA event; None
    on other devices) marks done; the others in `on_host`."""

    names: tuple[str, ...]
    values: object  # a 1-D float64 tensor on the host (or on the CPU device)
    ready: object
    on_host: dict
    step: int
    epoch: float | None
    start_time: float | None

    def read(self) -> dict:
        if self.ready is not None:
            self.ready.synchronize()  # this copy only, not the work queued after it
        return {**self.on_host, **dict(zip(self.names, self.values.tolist()))}


class LeanTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._non_embedding_params: int | None = None
        self._tokens_pending = 0  # input tokens trained on since the last log, on the device
        self._trainable = lighten(self.model)
        # With several processes the logged values go through collectives; Trainer's path stays.
        self.defer_logs = self.args.device.type == "cuda" and self.args.world_size == 1
        self._pending_log: PendingLog | None = None

    fused_loss = None  # set by run.py: a train.fused_loss.FusedLoss when the recipe's fused_loss is on
    offload_activations = False  # set by run.py: train.offload_activations
    pin_memory = False  # offloaded activations go to pinned memory (CUDA only)

    def compute_loss(self, model, inputs, *args, **kwargs):
        """Counts the training tokens, and runs the forward without a KV cache: with the config's
        `use_cache` (on in most models) every forward copies each layer's keys and values into a
        cache that nobody reads. With `fused_loss` the model is called through it (Trainer's own
        handling of the returned loss stays); with `offload_activations` every activation saved for
        backward during the forward and loss goes to (pinned) CPU memory and comes back in backward
        (with checkpointing only the checkpoints' inputs are saved, so the two compose); weights stay."""
        if model.training:
            mask = inputs.get("attention_mask")
            self._tokens_pending = self._tokens_pending + (mask.sum() if mask is not None else inputs["input_ids"].numel())
        call = model if self.fused_loss is None else _CallThrough(self.fused_loss, model)
        if not (self.offload_activations and model.training):
            return super().compute_loss(call, {**inputs, "use_cache": False}, *args, **kwargs)
        from peft_advisor.train.techniques import offload_saved_tensors

        with offload_saved_tensors(model, pin_memory=self.pin_memory):
            return super().compute_loss(call, {**inputs, "use_cache": False}, *args, **kwargs)

    def log(self, logs, *args, **kwargs):
        """`state.num_input_tokens_seen` is brought up to date when there is something to log (every
        rank logs at the same steps), not with a GPU sync after every step as Trainer's own count.
        A step's log still on its way is written first, so logs keep their order."""
        self.write_pending_log()
        self._flush_tokens()
        return super().log(logs, *args, **kwargs)

    baseline_rows: int | None = None  # set by run.py: rows of the evaluation before step 1 (None: all)
    _baseline = None  # the baseline's rows while it runs

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Trainer's, told to the callbacks first (`on_eval_begin`: rows and batches), because an
        evaluation can take minutes with no step to show; the baseline (step 0) on its first
        `baseline_rows` rows only, so a large eval set does not delay the first step; and ended
        between two batches by a stop request (`EvalStopped`): no metrics then, and training goes
        on to its next step end, where the stop saves a checkpoint as at any step."""
        from peft_advisor.train.events_callback import EvalStopped

        self.write_pending_log()
        self._flush_tokens()
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if self.state.global_step == 0 and self.baseline_rows is not None and len(dataset) > self.baseline_rows:
            dataset = self._baseline = dataset.select(range(self.baseline_rows))
        batches = math.ceil(len(dataset) / (self.args.eval_batch_size * self.args.world_size))
        self._tell("on_eval_begin", self.state, len(dataset), batches)
        try:
            return super().evaluate(dataset if dataset is self._baseline else eval_dataset, ignore_keys, metric_key_prefix)
        except EvalStopped:
            self._tell("on_eval_stopped", self.state)
            return {}
        finally:
            self._baseline = None

    def get_eval_dataloader(self, eval_dataset=None):
        """The baseline's rows get a loader of their own that is not kept: Trainer keeps an eval
        loader with persistent workers (on a GPU) and would reuse it for every later evaluation."""
        if eval_dataset is not None and eval_dataset is self._baseline:
            return self._get_dataloader(eval_dataset, "Evaluation", self.args.eval_batch_size, self._get_eval_sampler)
        return super().get_eval_dataloader(eval_dataset)

    def _tell(self, hook: str, *args) -> None:
        """Call `hook` on the callbacks that have it (Trainer's own have none)."""
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, hook):
                getattr(callback, hook)(*args)

    def _flush_tokens(self) -> None:
        pending, self._tokens_pending = self._tokens_pending, 0
        if self.args.world_size > 1:
            import torch

            pending = self.accelerator.reduce(torch.as_tensor(pending, device=self.args.device), reduction="sum")
        self.state.num_input_tokens_seen += int(pending)  # a tensor's is a sync; an int's (no padding) is not

    def _maybe_log_save_evaluate(self, tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time,
                                 learning_rate=None):
        """Trainer's, with this step's log taken without a sync and the previous step's written."""
        if self.defer_logs:
            due = self.control.should_log and self.state.global_step > self._globalstep_last_logged
            self.write_pending_log()  # (its on_log clears control.should_log)
            if due:
                self._pending_log = self._take_log(tr_loss, grad_norm, learning_rate, start_time)
                self.control.should_log = False  # taken; Trainer's part below only evaluates and saves
                if self.control.should_evaluate or self.control.should_save:
                    self.write_pending_log()  # the step's event comes before its eval and checkpoint
        return super()._maybe_log_save_evaluate(tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval,
                                                start_time, learning_rate=learning_rate)

    def _take_log(self, tr_loss, grad_norm, learning_rate, start_time) -> PendingLog:
        """What Trainer's log reads (loss summed since the last log, grad norm, tokens), the tensors
        among them copied to the host behind the step's work; resets the sums as Trainer does.
        Nothing is sent to the GPU: a copy from the host would wait for the GPU like a read."""
        import torch

        fields = {"loss_sum": tr_loss.detach(), "grad_norm": grad_norm, "tokens": self._tokens_pending,
                  "steps": self.state.global_step - self._globalstep_last_logged,
                  "learning_rate": learning_rate if learning_rate is not None else self._get_learning_rate()}
        for k, v in fields.items():  # a tensor elsewhere (layer-wise GaLore's grad norm is on the CPU) is read now
            if isinstance(v, torch.Tensor) and v.device != tr_loss.device:
                fields[k] = v.item()
        names = tuple(k for k, v in fields.items() if isinstance(v, torch.Tensor))
        values = torch.stack([fields.pop(k).detach().to(torch.float64) for k in names])
        ready = None
        if values.device.type == "cuda":
            values, ready = values.to("cpu", non_blocking=True), torch.cuda.Event()
            ready.record()
        tr_loss.zero_()
        self._tokens_pending = 0
        self._globalstep_last_logged = self.state.global_step
        self.store_flos()
        return PendingLog(names, values, ready, fields, self.state.global_step, self.state.epoch, start_time)

    def write_pending_log(self) -> None:
        """Writes the step's log taken by `_take_log`, as Trainer would have at that step."""
        pending, self._pending_log = self._pending_log, None
        if pending is None:
            return
        read = pending.read()
        self._total_loss_scalar += read["loss_sum"]
        self.state.num_input_tokens_seen += int(read["tokens"])
        logs = {"loss": read["loss_sum"] / read["steps"]}
        if read["grad_norm"] is not None:
            logs["grad_norm"] = read["grad_norm"]
        logs["learning_rate"] = read["learning_rate"]
        now = self.state.global_step, self.state.epoch
        self.state.global_step, self.state.epoch = pending.step, pending.epoch  # what the log and callbacks see
        try:
            Trainer.log(self, logs, pending.start_time)
        finally:
            self.state.global_step, self.state.epoch = now

    def _clip_grad_norm(self, model):
        """What accelerate does on one GPU or under DDP (unscale fp16 gradients, then clip), over the
        trainable parameters only: frozen ones have no gradient, which clipping skips anyway.
        Sharded training (FSDP, DeepSpeed) keeps Trainer's own path."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU):
            return super()._clip_grad_norm(model)
        import torch

        self.accelerator.unscale_gradients()
        return torch.nn.utils.clip_grad_norm_(self._trainable, self.args.max_grad_norm)

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer writes `checkpoint-N` file by file, so a kill or a full disk mid-way left a folder
        that `--resume` then chose and failed on. Here it is written under `.partial/` and renamed
        into place once whole (after every rank's part, under several processes)."""
        import os
        import shutil

        from peft_advisor.core import run_folder as rf

        real = self.args.output_dir
        partial = os.path.join(real, rf.PARTIAL)
        name = f"{rf.CHECKPOINT_PREFIX}{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(os.path.join(partial, name), ignore_errors=True)  # a torn earlier try
        self.args.output_dir = partial
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = real
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            rf.publish_checkpoint(real, name)
            rf.rotate_checkpoints(real, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _save_optimizer_and_scheduler(self, output_dir) -> None:
        from peft_advisor.core.run_folder import fault_point

        fault_point("checkpoint")  # tests only: a kill or a full disk between the weights and the rest
        super()._save_optimizer_and_scheduler(output_dir)

    def floating_point_ops(self, inputs) -> int:
        """Trainer's count, 6 x input tokens x non-embedding parameters, with the parameters counted once."""
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._non_embedding_params is None:
            self._non_embedding_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * ids.numel() * self._non_embedding_params


class _CallThrough:
    """What Trainer.compute_loss calls as `model(**inputs)`: the model, through `fused`."""

    def __init__(self, fused, model):
        self.fused, self.model = fused, model

    def __call__(self, **inputs):
        return self.fused(self.model, inputs)


def lighten(model) -> list:
    """`model.train()` returns at once when the mode is already set; `model.zero_grad()` clears
    only the parameters that can have a gradient. Both are instance attributes of this model alone;
    a wrapper (DDP, FSDP) keeps its own methods. Returns the trainable parameters."""
    full_train = model.train
    trainable = [p for p in model.parameters() if p.requires_grad]
    last_mode: list[bool] = []  # the mode the last full walk set (a fresh PeftModel says training
    # while the base model it wraps is in eval mode, so `model.training` alone cannot be trusted)

    def train(mode: bool = True):
        if last_mode != [mode]:
            full_train(mode)
            last_mode[:] = [mode]
        return model

    def zero_grad(set_to_none: bool = True) -> None:
        for p in trainable:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    model.train = train
    model.zero_grad = zero_grad
    return trainable
