"""One fine-tune, in the child process: setup(), train(), cleanup() around Hugging Face's Trainer.

setup() does everything a bad recipe, model or dataset can break (recipe, device checks, model,
tokenizer, data, method) BEFORE the run folder exists; only then is the folder created, under a
temporary name and renamed into place, so a failed start never leaves a half-written run folder.
train() runs the Trainer with the events callback and always writes an `end` event: ok,
cancelled (SIGINT/SIGTERM: checkpoint at the next step, exit 130), oom or error.

Several processes (torchrun / accelerate launch, see train/dist.py) run this same code; only
rank 0 checks and creates the run folder and writes events, run.json and the recipe copy, and
the others wait for it at a barrier before the Trainer touches the folder.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from peft_advisor.core import recipe as recipes
from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.run_folder import SETUP_EXIT_FILE, STAGING_ENV

write_json = rf.atomic_write_json


def record_setup_exit(code: int, message: str = "") -> None:
    """Under torchrun a failed setup exits 1 whatever the rank said; the first rank to fail leaves
    its code and its one-line reason for the launcher. Any rank, not only rank 0: torchrun ends the
    others as soon as one exits, so rank 0 may be killed before it gets to write. The first writer
    wins (later failures are knock-on ones: a rank torchrun stopped says "interrupted", and its line
    may come last in the shared log), and the file appears whole (a per-rank temp file, then a hard
    link)."""
    staging = os.environ.get(STAGING_ENV)
    if not staging or not Path(staging).is_dir():
        return
    final = Path(staging) / SETUP_EXIT_FILE
    tmp = final.with_name(f".{SETUP_EXIT_FILE}.{os.environ.get('RANK', '0')}.tmp")
    try:
        tmp.write_text(f"{int(code)}\n{message}\n", encoding="utf-8")
        os.link(tmp, final)  # fails if a rank wrote first
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


class StopSignal:
    """SIGINT and SIGTERM for the child's whole life, installed before anything else. During setup
    a stop raises KeyboardInterrupt and is also remembered, so one that a library swallows still
    stops the run before its folder is made. Once training is set up, the first stop asks for a
    checkpoint at the end of the step; a second stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.callback = None
        self.say = None

    def install(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)
        return self

    def __call__(self, signum, frame) -> None:
        again, self.requested = self.requested, True
        callback = self.callback
        if callback is None or again:
            raise KeyboardInterrupt
        callback.stop_requested = True
        self.say("peft-advisor: stop requested; saving a checkpoint after this step")

    def attach(self, callback, say) -> None:
        """From now on a first stop is a checkpoint request (one made before is carried over)."""
        self.say, self.callback = say, callback
        callback.stop_requested = callback.stop_requested or self.requested


class Run:
    def __init__(self, recipe_path, run_dir=None, resume: bool = False, argv: list[str] | None = None, stop=None):
        self.started = time.time()
        self.stop = stop or StopSignal()
        self.recipe_path = Path(recipe_path)
        self.recipe = recipes.load(self.recipe_path)
        self.run_dir = Path(run_dir or self.recipe.output.dir).absolute()
        self.resume, self.argv = resume, argv or sys.argv
        self.checkpoint = None
        from peft_advisor.train.dist import Ranks

        self.ranks = Ranks.from_env()

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        self.check_run_dir()
        self.check_report_to()
        import torch

        from peft_advisor.train import data, dist, methods, techniques

        r, ranks = self.recipe, self.ranks
        self.cuda = torch.cuda.is_available()
        methods.check_device(r, self.cuda)  # before transformers and peft: those imports take seconds
        techniques.check_device(r, self.cuda)
        dist.check_gpus(ranks, r, self.cuda)
        dist.init(ranks, r, self.cuda)
        self.cap_gpu_memory()
        from transformers import set_seed

        from peft_advisor.train.model import (estimate_for, hub_id_for, load_model, load_tokenizer, name_base_model,
                                              resolve_model)

        self.model_path = resolve_model(r.model.id)
        self.tokenizer = load_tokenizer(self.model_path, r.model.trust_remote_code)
        with dist.main_first(ranks):  # rank 0 fills the datasets cache, the others read it
            self.data = data.prepare(r.data, self.tokenizer, r.train.seed, self.recipe_path.parent)
        for note in self.data.notes + dist.notes(r, ranks, self.cuda, self.run_dir):
            self.say(note)
        set_seed(r.train.seed)
        self.setup_deepspeed()
        model = load_model(self.model_path, r, self.cuda, ranks)
        self.estimate = estimate_for(model, r, ranks.world,
                                     self.data.estimate_shape(self.tokenizer, not self.sharded_forward()))
        self.fsdp_wrap = dist.wrap_classes(model)
        self.techniques = {"optimizer": r.train.optimizer}
        if r.train.liger_kernels:  # into the base model's own modules, before an adapter wraps them
            self.techniques["liger_kernels"] = techniques.apply_liger_kernels(model)
        self.built = methods.build(model, r, ranks)
        self.set_up_loss_and_offload()
        self.base_hub_id = hub_id_for(r.model.id, self.model_path)
        name_base_model(self.built.model, self.base_hub_id)  # portable adapter_config.json
        if self.stop.requested:  # a stop swallowed by a library during setup still stops the run here
            raise KeyboardInterrupt
        if ranks.main:
            self.create_run_folder()
        dist.barrier(ranks)  # nobody writes into the run folder before it exists
        self.make_callback()

    def set_up_loss_and_offload(self) -> None:
        """The loss the trainer computes (`train.fused_loss`: Liger's or the chunked one) and where
        activations are kept, as recorded in the start event and run.json."""
        from peft_advisor.train.fused_loss import FusedLoss, choose_impl

        t = self.recipe.train
        self.fused_loss = FusedLoss(self.built.model, choose_impl(self.cuda)) if t.fused_loss else None
        self.techniques["loss_impl"] = self.fused_loss.impl if self.fused_loss else "full"
        if self.fused_loss and self.fused_loss.impl == "chunked" and self.cuda:
            from peft_advisor.core.techniques import LIGER_INSTALL

            self.say(f"peft-advisor: note: train.fused_loss runs chunked in PyTorch; Liger's fused kernel is faster: "
                     f"{LIGER_INSTALL}")
        if t.offload_activations:
            self.techniques["offload_activations"] = "pinned" if self.cuda else "cpu, no-op"
            if not self.cuda:
                self.say("peft-advisor: note: train.offload_activations on the CPU is a no-op (activations are in "
                         "CPU memory already); the run goes on")

    def setup_deepspeed(self) -> None:
        """ZeRO: the DeepSpeed config, decided before the model loads; under ZeRO-3 it must be alive
        while `from_pretrained` runs (transformers then partitions each weight as it loads, through
        `deepspeed.zero.Init`, instead of loading the whole model on every GPU first)."""
        from peft_advisor.train import dist

        self.ds_config = None
        if not (self.ranks.distributed and dist.is_zero(self.recipe)):
            return
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=self.recipe.model.trust_remote_code)
        hidden = getattr(config.get_text_config(), "hidden_size", None) or 1024
        self.ds_config = dist.ds_config(self.recipe, self.cuda, hidden)
        if self.recipe.distributed.strategy == "zero3":
            from transformers.integrations import HfDeepSpeedConfig

            self.ds_zero3 = HfDeepSpeedConfig(self.ds_config)  # transformers holds only a weak reference

    def write_ds_config(self, folder: Path) -> None:
        """Rank 0: the run's DeepSpeed config into its folder (rewritten on a resume: the GPU count may differ)."""
        from peft_advisor.train.dist import DS_CONFIG

        if self.ds_config is not None:
            write_json(folder / DS_CONFIG, self.ds_config)

    def cap_gpu_memory(self) -> None:
        """Rehearse a smaller card: PEFT_ADVISOR_GPU_CAP_GIB caps this process's PyTorch allocator
        (the CUDA context comes on top, as on a real card of that size). `bench/fits.py` uses it
        to train advice for a 12 GiB card on an 80 GiB one."""
        text = os.environ.get(rf.GPU_CAP_ENV)
        if not text or not self.cuda:
            return
        import torch

        try:
            cap_bytes = float(text) * 2**30
        except ValueError:
            raise UserError(f"{rf.GPU_CAP_ENV}={text!r}: not a number of GiB", ExitCode.USAGE) from None
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory
        if not 0 < cap_bytes <= total:
            raise UserError(f"{rf.GPU_CAP_ENV}={text}: must be more than 0 and at most the card's "
                            f"{total / 2**30:.2f} GiB", ExitCode.USAGE)
        torch.cuda.set_per_process_memory_fraction(cap_bytes / total, device)
        self.say(f"peft-advisor: GPU memory capped at {cap_bytes / 2**30:.2f} GiB ({rf.GPU_CAP_ENV})")

    def say(self, line: str) -> None:
        """A note in train.log, once (rank 0), not once per GPU."""
        if self.ranks.main:
            print(line, file=sys.stderr, flush=True)

    def check_run_dir(self) -> None:
        if not self.resume:
            if self.ranks.main and self.run_dir.exists():  # other ranks may already see rank 0's new folder
                raise UserError(f"{self.run_dir}: run folder exists; pass --resume or another --run-dir", ExitCode.EXISTS)
            return
        if not self.run_dir.is_dir():
            raise UserError(f"{self.run_dir}: no such run folder to resume", ExitCode.USAGE)
        if self.ranks.main:  # one trainer per folder, for the whole run
            self.lock = rf.acquire_or_refuse(self.run_dir)
            rf.discard_partial(self.run_dir)
            rf.check_resumable(self.run_dir, self.recipe)
            self.say_world_change()
            write_json(self.run_dir / rf.RUN_JSON, self.run_info())  # who holds it, for stop and monitor
        self.checkpoint, skipped = rf.last_complete_checkpoint(self.run_dir)
        for torn in skipped:
            self.say(f"peft-advisor: skipping {torn.name}: incomplete (no {rf.CHECKPOINT_LAST_FILE})")
        if self.checkpoint is None:
            raise UserError(f"{self.run_dir}: no checkpoint-N folder to resume from", ExitCode.USAGE)

    def say_world_change(self) -> None:
        """Rank 0, resuming: a checkpoint from another number of processes (allowed ones only reach here)."""
        try:
            before = recipes.load(self.run_dir / rf.RECIPE)
        except UserError:
            return
        note = rf.world_change(self.run_dir, before, self.recipe)
        if note:
            self.say(f"peft-advisor: note: {note}")

    def resolved_recipe(self):
        """The recipe as run: its run folder, and a local data path made absolute."""
        changes = {"output.dir": str(self.run_dir)}
        path = self.recipe.data.path
        for candidate in (Path(path).expanduser(), self.recipe_path.parent / path):
            if path != "demo" and candidate.exists():
                changes["data.path"] = str(candidate.absolute())
                break
        return recipes.updated(self.recipe, changes)

    def launcher_pid(self) -> int:
        """The process to signal to stop the run: torchrun/accelerate (it forwards to every rank), else us."""
        return os.getppid() if self.ranks.distributed else os.getpid()

    def run_info(self) -> dict:
        info = {"pid": self.launcher_pid(), "argv": list(self.argv), "started": self.started, "run_dir": str(self.run_dir),
                **getattr(self, "techniques", {})}
        if self.ranks.distributed:
            info.update(rank0_pid=os.getpid(), world_size=self.ranks.world)
        return info

    def create_run_folder(self) -> None:
        """Rank 0 only: a staging folder, locked and filled, then renamed into place (so the folder
        is whole or absent, and the lock moves with it)."""
        info = self.run_info()
        if self.resume:
            write_json(self.run_dir / rf.RUN_JSON, {**info, "resumed_from": self.checkpoint.name})
            self.write_ds_config(self.run_dir)
            return
        staging = os.environ.get(STAGING_ENV)
        if staging and self.ranks.distributed:  # keep the launcher's command line (torchrun ...), not ours
            argv = rf.read_json(Path(staging) / rf.RUN_JSON).get("argv")
            if isinstance(argv, list):
                info["argv"] = argv
        parent = self.run_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(staging) if staging else Path(tempfile.mkdtemp(prefix=f".{self.run_dir.name}.", dir=parent))
            os.chmod(folder, 0o755)
        except OSError as err:
            raise UserError(f"{self.run_dir}: cannot create the run folder: {err.strerror or err}", ExitCode.USAGE) from None
        self.lock = rf.acquire_or_refuse(folder)
        (folder / rf.RECIPE).write_text(recipes.dumps(self.resolved_recipe()), encoding="utf-8")
        write_json(folder / rf.RUN_JSON, info)
        self.write_ds_config(folder)
        try:
            os.rename(folder, self.run_dir)
        except OSError:
            raise UserError(f"{self.run_dir}: run folder appeared meanwhile; not overwriting", ExitCode.EXISTS) from None
        self.created = True

    def discard_new_folder(self) -> None:
        """A stop that came after the folder was made but before training: remove what we made."""
        if getattr(self, "created", False) and not (self.run_dir / rf.EVENTS).exists():
            import shutil

            shutil.rmtree(self.run_dir, ignore_errors=True)

    def check_report_to(self) -> None:
        import importlib.util

        name = self.recipe.output.report_to
        if name != "none" and importlib.util.find_spec(name) is None:
            raise UserError(f"output.report_to = {name!r} needs the {name} package installed", ExitCode.BAD_RECIPE)

    def make_callback(self) -> None:
        """The events writer and callback; from here on every ending is an `end` event."""
        from peft_advisor.train.data import exact_match
        from peft_advisor.train.events_callback import EventsCallback, EventWriter

        r, d, model, ranks = self.recipe, self.data, self.built.model, self.ranks
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = model.get_nb_trainable_parameters()[1] if hasattr(model, "get_nb_trainable_parameters") else None
        global_batch = r.train.micro_batch * r.train.grad_accum * ranks.world
        start = {
            "method": r.method.name,
            "model": r.model.id,
            "trainable_params": trainable,
            "total_params": total or sum(p.numel() for p in model.parameters()),
            "estimate_peak_bytes": getattr(self.estimate, "peak_bytes", None),
            "estimate_adapter_bytes": getattr(self.estimate, "adapter_bytes", None),
            "device": "cuda:0" if self.cuda else "cpu",
            "pid": self.launcher_pid(),
            "run_dir": str(self.run_dir),
            "gpus": ranks.world,
            "strategy": r.distributed.strategy if ranks.distributed else None,
            "global_batch": global_batch,
        }
        if ranks.distributed:
            start.update(launcher=r.distributed.launcher, nnodes=r.distributed.nnodes, backend=self.backend())
        start.update(d.start_fields())  # rows cut at max_seq_len, for the terminal's start line
        start.update(self.techniques)
        if self.cuda:
            start["cuda_alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or os.environ.get("PYTORCH_ALLOC_CONF")
        tok = self.tokenizer
        accuracy = None
        # Exact match generates on rank 0 alone: fine with DDP (the module is unwrapped), but under
        # FSDP or ZeRO-3 every forward is a collective, so it is skipped there (eval loss is still reported).
        if d.eval_prompts and ranks.main and not self.sharded_forward():
            def accuracy(m):
                return exact_match(m, tok, d.eval_prompts, d.eval_answers, d.add_special_tokens)
        limit = os.environ.get("PEFT_ADVISOR_TIME_LIMIT_S")  # set by `peft-advisor bench` for equal budgets
        start["time_limit_s"] = float(limit) if limit else None
        self.writer = EventWriter(self.run_dir / "events.jsonl") if ranks.main else None
        self.callback = EventsCallback(self.writer, start, global_batch, accuracy,
                                       time_limit_s=start["time_limit_s"], ranks=ranks)
        self.stop.attach(self.callback, self.say)

    def sharded_forward(self) -> bool:
        from peft_advisor.core.distributed import shards_forward

        return self.ranks.distributed and shards_forward(self.recipe.distributed.strategy)

    def backend(self) -> str:
        from peft_advisor.train.dist import backend

        return backend(self.recipe, self.cuda)

    def make_trainer(self):
        from transformers import TrainingArguments

        from peft_advisor.train.data import Collator
        from peft_advisor.train.dist import DS_CONFIG
        from peft_advisor.train.dist import training_args as dist_args
        from peft_advisor.train.lean import LeanTrainer

        d = self.data
        kwargs = training_args(self.recipe, self.run_dir, self.cuda, d.eval is not None, self.resume)
        ds_path = self.run_dir / DS_CONFIG if self.ds_config is not None else None
        kwargs.update(dist_args(self.recipe, self.ranks, self.cuda, self.fsdp_wrap, ds_path))
        trainer = LeanTrainer(
            model=self.built.model,
            args=TrainingArguments(**{**kwargs, **self.built.args}),
            train_dataset=d.train,
            eval_dataset=d.eval,
            data_collator=Collator(self.tokenizer.pad_token_id),
            processing_class=self.tokenizer,
            optimizers=self.built.optimizers,
            callbacks=self.callbacks(),
        )
        trainer.baseline_rows = self.recipe.train.baseline_eval_rows
        trainer.fused_loss = self.fused_loss
        trainer.offload_activations, trainer.pin_memory = self.recipe.train.offload_activations, self.cuda
        return trainer

    def callbacks(self) -> list:
        """The events callback, after the one that limits checkpointing to `train.grad_ckpt_layers`
        blocks (it writes what it did into the start event's fields)."""
        t = self.recipe.train
        if not (t.grad_ckpt and t.grad_ckpt_layers):
            return [self.callback]
        from peft_advisor.train.techniques import partial_checkpointing_callback

        return [partial_checkpointing_callback(t.grad_ckpt_layers, self.callback.start_fields), self.callback]

    # ------------------------------------------------------------ train

    def train(self) -> int:
        import torch

        status, message, self.trainer = "ok", None, None
        try:
            trainer = self.trainer = self.make_trainer()
            trainer.train(resume_from_checkpoint=str(self.checkpoint) if self.checkpoint else None)
            state = trainer.state
            if self.callback.stop_requested and state.global_step < state.max_steps:
                status, message = "cancelled", f"stopped at step {state.global_step}; continue it with --resume"
            elif self.data.eval is not None and not any(
                "eval_loss" in h and h.get("step") == state.global_step for h in state.log_history
            ):
                trainer.evaluate()
            trainer.save_model(str(self.run_dir))
            trainer.save_state()
        except torch.cuda.OutOfMemoryError:
            status = "oom"
            peak = torch.cuda.max_memory_reserved() if self.cuda else 0
            self.callback.peak_bytes = max(self.callback.peak_bytes, peak)
            message = f"CUDA out of memory at step {self.step()}: peak {peak} bytes reserved"
            est = getattr(self.estimate, "peak_bytes", None)
            message += f", estimate {est} bytes" if est else ""
        except KeyboardInterrupt:
            status, message = "cancelled", "stopped at once on a second interrupt; no checkpoint for this step"
        except Exception as err:  # a library error mid-run: the run ends `error` with the reason
            traceback.print_exc()
            status, message = "error", self.disk_full_message(err) or (
                f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
        self.end(status, message)
        return rf.exit_code(status)

    def disk_full_message(self, err: Exception) -> str | None:
        """A full disk says so in one line (PyTorch's own words are 'enforce fail at
        inline_container.cc'); the half-written checkpoint is removed, the complete ones stay."""
        if not rf.is_disk_full(err):
            return None
        rf.discard_partial(self.run_dir)
        last, _ = rf.last_complete_checkpoint(self.run_dir)
        kept = f"{last.name} is the last complete checkpoint" if last else "no complete checkpoint was saved"
        return f"the disk is full (no space left on device) at step {self.step()}; {kept}. Free space, then --resume"

    def write_last_log(self) -> None:
        """A run that failed mid-step still reports the step before (LeanTrainer writes a step's
        log one step late); best effort, as the GPU may be what failed."""
        try:
            if self.trainer is not None:
                self.trainer.write_pending_log()
        except Exception:  # noqa: BLE001 - the run's end event matters more than this line
            pass

    def step(self) -> int:
        return self.trainer.state.global_step if self.trainer else 0

    def end(self, status: str, message: str | None) -> None:
        self.write_last_log()
        history = self.trainer.state.log_history if self.trainer else []
        losses = [h["loss"] for h in history if "loss" in h]
        evals = [h["eval_loss"] for h in history if "eval_loss" in h]
        if self.cuda:
            import torch

            self.callback.peak_bytes = max(self.callback.peak_bytes, torch.cuda.max_memory_reserved())
        if self.writer is None:  # not rank 0: rank 0 reports the run
            return
        # No collective here (a rank may have failed): the other ranks' peaks are from the last step event.
        by_rank = self.callback.peak_by_rank
        if by_rank is not None and self.cuda:
            by_rank = [max(by_rank[0] or 0, torch.cuda.max_memory_reserved()), *by_rank[1:]]
        self.writer.emit(
            "end",
            status=status,
            message=message,
            final_loss=losses[-1] if losses else None,
            best_eval_loss=min(evals) if evals else None,
            wall_s=round(time.time() - self.started, 2),
            mem_peak_bytes=self.callback.peak_bytes or None,
            mem_peak_bytes_by_rank=by_rank,
            estimate_peak_bytes=getattr(self.estimate, "peak_bytes", None),
        )
        self.say(f"peft-advisor: run ended {status}" + (f": {message}" if message else ""))
        if status in ("ok", "cancelled"):  # the model was saved: its card goes beside it
            self.write_card()

    def write_card(self) -> None:
        """README.md from the recipe copy and the events (core/model_card.py); never fails the run."""
        from peft_advisor.core.model_card import write_model_card

        try:
            write_model_card(self.run_dir, getattr(self, "base_hub_id", None))
        except (OSError, ValueError, UserError) as err:
            self.say(f"peft-advisor: no model card written ({err})")

    def cleanup(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------- helpers


def training_args(r, run_dir: Path, cuda: bool, has_eval: bool, resume: bool) -> dict:
    t = r.train
    dtype = r.model.dtype if cuda else "float32"
    mixed = r.distributed.mixed_precision  # "no" (the default): pure model.dtype, as the estimate assumes
    fp16 = mixed == "fp16" or (mixed == "no" and dtype == "float16")
    return dict(
        output_dir=str(run_dir),
        max_steps=t.max_steps or -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.micro_batch,
        per_device_eval_batch_size=t.micro_batch,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        gradient_checkpointing=t.grad_ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.grad_ckpt else None,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.log_every,
        eval_strategy="steps" if has_eval and t.eval_every else "no",
        eval_steps=t.eval_every or None,
        # A baseline, so improvement shows; on the first train.baseline_eval_rows rows (LeanTrainer).
        eval_on_start=has_eval and not resume and t.baseline_eval_rows > 0,
        save_strategy="steps" if t.save_every else "no",
        save_steps=t.save_every or None,
        save_total_limit=2,
        report_to=[] if r.output.report_to == "none" else [r.output.report_to],
        # Pure bf16 training, no autocast: the weights are already bf16 and peft keeps adapters in
        # fp32; this is the stack the memory estimator was measured on (and the PEFT study's).
        bf16=mixed == "bf16",
        fp16=fp16,
        # Trainer's NaN/inf filter reads the loss on the CPU after every backward, which makes the
        # GPU wait while the optimizer step is launched. It only helps with fp16's loss scaler (an
        # overflowing step is skipped and training goes on); in bf16 or fp32 a NaN loss has already
        # spoilt the weights, and the monitor shows it as NaN rather than an average that hides it.
        logging_nan_inf_filter=fp16,
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        # Each batch goes to the GPU without waiting for it (a blocking copy waits for the last step
        # to finish; LeanTrainer's step has no other wait).
        accelerator_config={"non_blocking": cuda},
        # On a GPU, rows are fetched and padded in two worker processes while the GPU computes;
        # on the CPU the cores are the compute, so the main process does it.
        dataloader_num_workers=2 if cuda else 0,
        dataloader_persistent_workers=cuda,
        include_num_input_tokens_seen="no",  # LeanTrainer counts them (non-padding), without a sync per step
        disable_tqdm=True,
        remove_unused_columns=False,
        prediction_loss_only=True,  # eval needs the loss, not every logit gathered in memory
    )
