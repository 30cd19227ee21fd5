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

Pure arithmetic; the launcher (accelerate/torchrun) lives in the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft_advisor.core import estimate as E
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.model_spec import ModelSpec

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Parallel:
    """How a run spreads over GPUs (one GPU: strategy is ignored)."""

    gpus: int = 1
    strategy: str = "ddp"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {self.strategy!r}{did_you_mean(self.strategy, STRATEGIES)} "
                            f"(choose from {', '.join(STRATEGIES)})", ExitCode.USAGE)
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise UserError(f"GPU count must be a whole number >= 1, got {self.gpus!r}", ExitCode.USAGE)

    def describe(self) -> str:
        return "1 GPU" if self.gpus == 1 else f"{self.gpus} GPUs with {self.strategy.upper()}"


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
