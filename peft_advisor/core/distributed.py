"""Per-GPU memory on several GPUs: DDP (a full copy on each) and FSDP (everything sharded).

Built from the single-GPU terms in `estimate.py`, so the two can never disagree about what one
block saves:

- `ddp`: every GPU holds the whole model, its optimizer states and gradients, and DDP keeps its
  own flat gradient buckets for the whole step (one more copy of the trainable gradients). The
  global batch is micro-batch x GPUs x accumulation; activations per GPU are one micro-batch's.
- `fsdp` (FULL_SHARD; FSDP2 `fully_shard` per decoder block where torch has it): weights,
  trainable parameters, gradients and optimizer states are divided by the GPU count; each GPU
  also holds the all-gathered weights of the block being computed and of the one prefetched
  next, plus the root unit (embeddings, final norm, lm_head), gathered for the whole step. For
  QLoRA the 4-bit weights are sharded too (bitsandbytes' quant storage in bf16, as peft documents;
  the trainer uses FSDP1 there, since FSDP2 loses bitsandbytes' 4-bit metadata).
- `zero2` / `zero3` (DeepSpeed ZeRO through accelerate; see `zero_estimate`): only what trains is
  partitioned by ZeRO-2 (its fp32 master copy, optimizer states and gradients), ZeRO-3 partitions
  the frozen weights too; optional offload moves states (and with ZeRO-3 weights) to CPU RAM,
  reported as the estimate's `cpu_bytes`.

Pure arithmetic; the launcher (accelerate/torchrun) lives in the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from peft_advisor.core import estimate as E
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.model_spec import ModelSpec

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
ZERO_STRATEGIES = ("zero2", "zero3")
OFFLOADS = ("none", "optimizer", "optimizer+params")
LABELS = {"ddp": "DDP", "fsdp": "FSDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3"}


@dataclass(frozen=True)
class Parallel:
    """How a run spreads over GPUs (one GPU: strategy is ignored). `offload` is ZeRO's only."""

    gpus: int = 1
    strategy: str = "ddp"
    offload: str = "none"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {self.strategy!r}{did_you_mean(self.strategy, STRATEGIES)} "
                            f"(choose from {', '.join(STRATEGIES)})", ExitCode.USAGE)
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise UserError(f"GPU count must be a whole number >= 1, got {self.gpus!r}", ExitCode.USAGE)
        problem = offload_problem(self.strategy, self.offload)
        if problem:
            raise UserError(f"zero_offload {problem}", ExitCode.USAGE)

    @property
    def label(self) -> str:
        """'ZeRO-3 + optimizer offload', as the advice names it."""
        name = LABELS[self.strategy]
        return name if self.offload == "none" else f"{name} + {self.offload} offload"

    def describe(self) -> str:
        return "1 GPU" if self.gpus == 1 else f"{self.gpus} GPUs with {self.label}"


DEEPSPEED_INSTALL = 'pip install "peft-advisor[deepspeed]"'


def deepspeed_missing(strategy: str) -> str | None:
    """ZeRO needs the optional deepspeed package: the one line that says so and how to install it."""
    import importlib.util

    if strategy in ZERO_STRATEGIES and importlib.util.find_spec("deepspeed") is None:
        return f'distributed.strategy = "{strategy}" needs DeepSpeed, which is not installed: {DEEPSPEED_INSTALL}'
    return None


def shards_forward(strategy: str) -> bool:
    """Every forward is a collective (weights gathered per block): exact match's generation on rank 0
    alone would hang, so it is skipped (FSDP, ZeRO-3)."""
    return strategy in ("fsdp", "zero3")


def offload_problem(strategy: str, offload: str) -> str | None:
    """Why this offload cannot go with this strategy (the recipe check and `Parallel` share it)."""
    if offload not in OFFLOADS:
        return f"must be one of {', '.join(OFFLOADS)}, got {offload!r}"
    if offload != "none" and strategy not in ZERO_STRATEGIES:
        return f'= "{offload}" needs strategy "zero2" or "zero3" (DeepSpeed offloads; {strategy} does not)'
    if offload == "optimizer+params" and strategy != "zero3":
        return '= "optimizer+params" needs strategy "zero3" (ZeRO-2 does not partition the weights)'
    return None


def cpu_ram_what(settings, offload: str) -> str:
    """What an estimate's `cpu_bytes` holds, in words: offloaded activations (`offload_activations`,
    pinned), ZeRO's offloaded states (`offload`), or both. One wording for every front end."""
    parts = ["offloaded activations (pinned)"] if settings.offload_activations else []
    if offload == "optimizer":
        parts.append("ZeRO's offloaded optimizer states")
    elif offload == "optimizer+params":
        parts.append("ZeRO's offloaded optimizer states and weights")
    return " and ".join(parts) or "offloaded tensors"


def cheapest_first(gpus: int) -> list[Parallel]:
    """Every way to spread a run over `gpus` GPUs, least communication first: DDP (one all-reduce of
    the trainable gradients), FSDP and ZeRO-2 (sharded states; FSDP also gathers weights), ZeRO-3
    (weights gathered for every block, forward and backward), then offload (every step crosses PCIe)."""
    return [Parallel(gpus, "ddp"), Parallel(gpus, "fsdp"), Parallel(gpus, "zero2"), Parallel(gpus, "zero3"),
            Parallel(gpus, "zero2", "optimizer"), Parallel(gpus, "zero3", "optimizer"),
            Parallel(gpus, "zero3", "optimizer+params")]


def _block_bytes(spec: ModelSpec, s: E.Settings) -> int:
    """One decoder block's weights as stored (bf16, or NF4 for QLoRA)."""
    if s.method == "qlora":
        linear = sum(lin.d_in * lin.d_out for lin in spec.linears)
        return int(linear * E.NF4_BYTES_PER_PARAM) + (spec.layer_params - linear) * E.FP32
    return spec.layer_params * E.BF16


def _root_bytes(spec: ModelSpec, s: E.Settings) -> int:
    """Embeddings, final norm and lm_head: FSDP's root unit."""
    per = E.FP32 if s.method == "qlora" else E.BF16
    return (spec.embedding_params + spec.lm_head_params + spec.final_norm_params) * per


def per_gpu_estimate(spec: ModelSpec, s: E.Settings, par: Parallel, total_vram_bytes: int | None = None) -> E.Estimate:
    """The peak on each GPU (data-parallel ranks do the same work, so they are alike)."""
    c = E.components(spec, s)
    if par.gpus > 1 and par.strategy in ZERO_STRATEGIES:
        return zero_estimate(spec, s, par, total_vram_bytes)
    if par.gpus == 1:
        breakdown = E.assemble(c, s)
    elif par.strategy == "ddp":
        layerwise = s.method == "galore" and s.galore_layerwise
        breakdown = E.assemble(c, s, extra_static=0 if layerwise else c["grads_total"])
    else:
        n = par.gpus
        gathered = 2 * _block_bytes(spec, s) + _root_bytes(spec, s)
        sharded = dict(c, weights=c["weights"] // n + gathered, trainable=c["trainable"] // n,
                       optimizer=c["optimizer"] // n)
        breakdown = E.assemble(sharded, s, grads_held=c["grads_total"] // n)
    return E.from_breakdown(spec, s, breakdown, c["trainable_params"], total_vram_bytes)


def global_batch(s: E.Settings, par: Parallel) -> int:
    """Sequences per optimizer step across all GPUs."""
    return s.batch_size * s.grad_accum * par.gpus


# ---------------------------------------------------------------- DeepSpeed ZeRO


def zero_buckets(hidden_size: int) -> dict[str, int]:
    """ZeRO's communication buffers, in elements, sized from the hidden size as transformers' "auto"
    values are; the trainer writes these numbers into ds_config.json, so the estimate and the run agree."""
    return {"reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size}


def zero_estimate(spec: ModelSpec, s: E.Settings, par: Parallel, total_vram_bytes: int | None = None) -> E.Estimate:
    """Per-GPU peak and per-process CPU RAM under DeepSpeed ZeRO-2/3, knowing what is frozen.

    DeepSpeed's own planner (`estimate_zero2_model_states_mem_needs`, `..._zero3_...`) counts every
    parameter as trainable (16 bytes each for fp32 master, Adam states and gradients) and leaves
    activations out; with LoRA that is off by orders of magnitude. Here ZeRO partitions only what the
    optimizer sees, T trainable parameters over N GPUs:

    - the model in bf16 (the trainer turns on DeepSpeed's bf16 mode on GPUs, which casts the
      adapters to bf16 too), an fp32 master copy of the trainable partition (4 T / N) and Adam's
      two fp32 states on it (8 T / N);
    - gradients: the reduced bf16 partition (2 T / N) plus one reduce bucket (`reduce_bucket_size`
      elements, at most T);
    - weights: ZeRO-2 keeps every weight and the trainable model copy whole on each GPU; ZeRO-3
      partitions both (/ N) and gathers one decoder block at a time, plus its prefetch bucket and the
      larger of the embedding and lm_head while they compute (parameters below the persistence
      threshold, norms, stay whole; they are small);
    - offload "optimizer": master, states and the gradient partition live in CPU RAM (`cpu_bytes`);
      "optimizer+params" (ZeRO-3): the partitioned weights too. Activations never shard.
    """
    c = E.components(spec, s)
    n, trainable_params = par.gpus, c["trainable_params"]
    # DeepSpeed's bf16 mode casts the whole module to bf16, adapters too: their copy and gradients are 2 bytes
    trainable = 0 if E.trains_all_weights(s.method) else trainable_params * E.BF16
    master, states = E.FP32 * trainable_params // n, 2 * E.FP32 * trainable_params // n
    grad_partition = trainable_params * E.BF16 // n
    buckets = zero_buckets(spec.hidden_size)
    bucket = min(buckets["reduce_bucket_size"], trainable_params) * E.BF16
    weights = c["weights"]
    if par.strategy == "zero3":
        root = max(spec.embedding_params, spec.lm_head_params) * (E.FP32 if s.method == "qlora" else E.BF16)
        gathered = _block_bytes(spec, s) + buckets["stage3_prefetch_bucket_size"] * E.BF16 + root
        weights, trainable = weights // n, trainable // n
    else:
        gathered = 0
    cpu = 0
    if par.offload != "none":
        cpu, master, states, grad_partition = master + states + grad_partition, 0, 0, 0
    if par.offload == "optimizer+params":
        cpu, weights, trainable = cpu + weights + trainable, 0, 0
    sharded = dict(c, weights=weights + gathered, trainable=trainable, optimizer=master + states)
    breakdown = E.assemble(sharded, s, extra_static=bucket, grads_held=grad_partition)
    est = E.from_breakdown(spec, s, breakdown, trainable_params, total_vram_bytes)
    return replace(est, cpu_bytes=est.cpu_bytes + cpu)  # plus any offloaded activations
