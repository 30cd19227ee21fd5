"""Peak GPU memory, adapter size and trainable parameters of each fine-tuning method.

The model is a component breakdown of what PyTorch's caching allocator holds at the peak of a
training step on the stack peft-advisor launches: bf16 base weights, peft adapters kept in fp32
(peft's default `autocast_adapter_dtype`), fused torch AdamW (transformers' default optimizer on
torch >= 2.8), SDPA attention, the loss over the whole vocabulary, and for QLoRA bitsandbytes NF4
with peft's `prepare_model_for_kbit_training`.

Each term is counted from the tensors autograd really saves (checked against per-phase
measurements on an H200, `bench/results/`), not from a blanket multiplier:
- frozen linear layers save nothing for backward, but each LoRA layer saves an fp32 copy of its
  input (peft casts the input to the adapter's dtype), DoRA also keeps its base and LoRA outputs,
  VeRA keeps its scaled projections;
- `prepare_model_for_kbit_training` casts embeddings, norms and lm_head to fp32, so QLoRA's
  residual stream and activations are fp32, and fp32 attention with grouped KV heads falls back
  to SDPA's math kernel, which saves the full (heads x seq x seq) probability matrix;
- the loss upcasts logits to fp32: log-softmax saves 4 bytes per vocabulary entry per token, and
  its backward briefly holds two more such buffers (12 bytes per token per vocab entry in all).

The allocator reserves more than it hands out (rounding and fragmentation); that overhead is a
fitted fraction of the transient and gradient bytes, tuned on measured cases and checked on
held-out architectures (`bench/calibrate.py`). Only the pure arithmetic lives here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

from peft_advisor.core import adapters
from peft_advisor.core.catalog import METHOD_IDS, method_info, trains_all_weights
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.model_spec import ModelSpec
from peft_advisor.core.techniques import OPTIMIZERS
from peft_advisor.core.units import GIB

METHODS = METHOD_IDS
"""The catalog's method ids (data/methods.toml), re-exported for the estimator's callers."""
TARGET_PRESETS = ("all-linear", "attention", "mlp")

FP32, BF16 = 4, 2
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 blocks

# Fitted on the H200 calibration set (bench/calibrate.py); see the module docstring.
ALLOC_OVERHEAD = {"activations": 0.06, "logits": 0.15, "gradients": 0.15}
"""Reserved-minus-allocated bytes per byte of short-lived tensors (activations, logits) and of
gradients, which are allocated piecemeal while activations are freed and so fragment the cache."""
BAND = (0.90, 1.16)
"""Low/high factors around the expected peak. The tuning set's residuals span -10 % to +7 %, but
`peft-advisor train` on architectures and shapes outside it (bench/results/h100_fits_*.jsonl, ten
runs that ended ok and one out of memory) measured up to 14 % above the estimate: the high end
covers that, so advice marked "ok" (the whole band fits) holds there too."""
LIGER_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
"""Architectures liger-kernel's `MODEL_TYPE_TO_APPLY_LIGER_FN` patches (RMSNorm, SwiGLU/GeGLU,
RoPE, fused linear cross-entropy): every architecture the estimator supports today."""
CONTEXT_BASE_BYTES = int(0.45 * GIB)
CONTEXT_PER_TOTAL = 0.0065
"""CUDA context + libraries + driver reservation: NVML used minus torch reserved measured 1.35 GiB
on a 140 GiB H200; the driver's reservation grows with the card's size."""


@dataclass(frozen=True)
class Settings:
    """The knobs of one fine-tune that change its memory, speed and adapter size."""

    method: str
    rank: int = 16
    """LoRA-family rank (VeRA uses `vera_rank`)."""
    targets: str | tuple[str, ...] = "all-linear"
    """`all-linear`, `attention`, `mlp`, or module names such as ("q_proj", "v_proj")."""
    batch_size: int = 1
    """Micro-batch: the sequences in one forward pass."""
    seq_len: int = 1024
    grad_ckpt: bool = False
    grad_ckpt_layers: int = 0
    """With `grad_ckpt`: how many decoder blocks are checkpointed, counted from the first; the last
    ones keep their activations and are not recomputed (faster, more memory). 0 (or the model's
    layer count or more): every block."""
    grad_accum: int = 1
    """Does not change the peak; keeps the effective batch when the micro-batch shrinks."""
    galore_rank: int = 128
    galore_layerwise: bool = False
    galore_8bit: bool = False
    vera_rank: int = 256
    vera_save_projection: bool = True
    oft_block_size: int = 32
    lokr_factor: int = -1
    """LoKr decompose_factor; -1 = near the square root of each dimension (peft's default)."""
    c3a_block_size: int = 64
    eval_seq_len: int = 0
    """Tokens per row of the evaluation pass (its micro-batch is `batch_size`, as the trainer's
    per_device_eval_batch_size); 0: no evaluation counted."""
    generate_len: int = 0
    """Prompt plus new tokens per sequence of exact match's greedy generation (EVAL_GENERATE_BATCH
    sequences at a time); 0: no generation counted."""
    fused_loss: bool = False
    """Liger's fused linear cross-entropy: the loss over the vocabulary one chunk of tokens at a
    time, never the whole (tokens x vocabulary) logits (`_fused_loss_bytes`)."""
    liger_kernels: bool = False
    """Liger's RMSNorm, SwiGLU/GeGLU and RoPE kernels: fewer and smaller saved activations."""
    offload_activations: bool = False
    """Saved activations go to pinned CPU memory (`torch.autograd.graph.save_on_cpu`)."""
    optimizer: str = "adamw"
    """One of OPTIMIZERS; 8-bit states take 2 bytes per trainable parameter for both moments."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(
                f"unknown method {self.method!r}{did_you_mean(self.method, METHODS)} (choose from {', '.join(METHODS)})",
                ExitCode.UNKNOWN_METHOD,
            )
        for name in ("rank", "batch_size", "seq_len", "grad_accum", "galore_rank", "vera_rank", "oft_block_size",
                     "c3a_block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a whole number >= 1, got {value!r}", ExitCode.USAGE)
        for name in ("eval_seq_len", "generate_len", "grad_ckpt_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"{name} must be a whole number >= 0, got {value!r}", ExitCode.USAGE)
        if isinstance(self.targets, list):
            object.__setattr__(self, "targets", tuple(self.targets))
        self._check_techniques()

    def _check_techniques(self) -> None:
        """The techniques' switches are booleans and the optimizer one of OPTIMIZERS. Combinations
        that cannot run (a bitsandbytes optimizer for GaLore, ...) are `core.techniques.recipe_refusals`,
        which needs the strategy too: `core.advise.estimate_one` and the recipe check ask it."""
        for name in ("fused_loss", "liger_kernels", "offload_activations"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}", ExitCode.USAGE)
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}{did_you_mean(str(self.optimizer), OPTIMIZERS)} "
                            f"(choose from {', '.join(OPTIMIZERS)})", ExitCode.USAGE)

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = self.targets if isinstance(self.targets, str) else list(self.targets)
        d["quant"] = "nf4" if self.method == "qlora" else None
        return d


@dataclass(frozen=True)
class Estimate:
    """Expected peak memory and sizes of one method with one set of settings."""

    settings: Settings
    peak_bytes: int
    """Expected peak reserved by PyTorch's caching allocator (CUDA context excluded)."""
    low_bytes: int
    high_bytes: int
    context_bytes: int
    """CUDA context, libraries and driver reservation: outside the allocator, inside the card."""
    adapter_bytes: int
    """Size of the saved adapter file (the full model for `full` and `galore`)."""
    trainable_params: int
    breakdown: dict[str, int] = field(default_factory=dict)
    """weights, trainable, gradients, optimizer, activations, logits, overhead (sum = peak)."""
    calibrated: str | None = None
    """Set when a local measurement adjusted this estimate (says which)."""
    checkpointed_share: float = 0.0
    """Share of the decoder blocks that checkpointing recomputes (0: none, 1: all): the speed
    model's recompute cost scales with it (`recommend.speed_figure`)."""
    cpu_bytes: int = 0
    """Host RAM per training process beyond the usual: activations offloaded by `offload_activations`
    (pinned) and ZeRO's offloaded optimizer states and weights; 0 with neither. The advice checks it
    against the machine's free RAM."""

    @property
    def total_bytes(self) -> int:
        """What the card must have free: the allocator's peak plus the CUDA context."""
        return self.peak_bytes + self.context_bytes

    def to_dict(self) -> dict:
        return {
            "method": self.settings.method,
            "settings": self.settings.to_dict(),
            "peak_bytes": self.peak_bytes,
            "low_bytes": self.low_bytes,
            "high_bytes": self.high_bytes,
            "context_bytes": self.context_bytes,
            "total_bytes": self.total_bytes,
            "adapter_bytes": self.adapter_bytes,
            "trainable_params": self.trainable_params,
            "breakdown": dict(self.breakdown),
            "calibrated": self.calibrated,
            "cpu_bytes": self.cpu_bytes,
        }


# ---------------------------------------------------------------- targets and parameter counts


def resolve_targets(spec: ModelSpec, targets) -> tuple[str, ...]:
    """Module names that an adapter (or GaLore's projection) applies to."""
    if isinstance(targets, str):
        key = targets.strip().lower()
        if key in ("all-linear", "all_linear", "all"):
            return spec.linear_names
        if key in ("attention", "attn"):
            return tuple(lin.name for lin in spec.linears if lin.group == "attn")
        if key == "mlp":
            return tuple(lin.name for lin in spec.linears if lin.group == "mlp")
        targets = tuple(t.strip() for t in key.split(",") if t.strip())
    names = tuple(targets)
    choices = f"(modules: {', '.join(spec.linear_names)}; or all-linear, attention, mlp)"
    if not names:
        raise UserError(f"no target module given {choices}", ExitCode.USAGE)
    unknown = [t for t in names if t not in spec.linear_names]
    if unknown:
        bad = unknown[0]
        raise UserError(f"target module {bad!r} is not in {spec.id}{did_you_mean(bad, spec.linear_names)} {choices}",
                        ExitCode.USAGE)
    return names


@lru_cache(maxsize=256)
def _target_layers(spec: ModelSpec, targets) -> tuple:
    return tuple(spec.linear(name) for name in resolve_targets(spec, targets))


def _targets(spec: ModelSpec, s: Settings):
    return _target_layers(spec, s.targets)


def trainable_params(spec: ModelSpec, s: Settings) -> int:
    """Parameters the optimizer updates (peft's `print_trainable_parameters` count)."""
    if trains_all_weights(s.method):
        return spec.total_params
    L, targets = spec.num_layers, _targets(spec, s)
    if s.method == "vera":  # lambda_d (rank) and lambda_b (d_out) per adapted layer
        return L * sum(s.vera_rank + lin.d_out for lin in targets)
    family = method_info(s.method).family
    if family not in ("lora", "vera"):  # OFT, LoKr, LoHa, IA3, MiSS, C3A, SHiRA: core.adapters
        k = adapters.Knobs(s.rank, s.oft_block_size, s.lokr_factor, s.c3a_block_size)
        return L * sum(adapters.layer_params(family, t.d_in, t.d_out, t.group == "mlp", k) for t in targets)
    if s.method == "lorafa":  # A stays frozen at its initialisation: only B trains
        return L * sum(s.rank * lin.d_out for lin in targets)
    lora = L * sum(s.rank * (lin.d_in + lin.d_out) for lin in targets)
    if s.method == "dora":  # one magnitude per output feature
        lora += L * sum(lin.d_out for lin in targets)
    return lora


def _vera_projection_params(spec: ModelSpec, s: Settings) -> int:
    """VeRA's shared frozen A (r x max d_in) and B (max d_out x r), sized for the largest target."""
    targets = _targets(spec, s)
    return s.vera_rank * (max(t.d_in for t in targets) + max(t.d_out for t in targets))


def adapter_bytes(spec: ModelSpec, s: Settings) -> int:
    """Bytes of the saved weights file (safetensors payload, header excluded).

    peft saves adapters in the dtype they train in (fp32); `full` and `galore` save the whole
    model in bf16. VeRA also saves its shared projections unless `save_projection=False`.
    """
    if trains_all_weights(s.method):
        return spec.total_params * BF16
    n = trainable_params(spec, s)
    if s.method == "vera" and s.vera_save_projection:
        n += _vera_projection_params(spec, s)
    if s.method == "lorafa":  # the frozen A is saved with B
        n = spec.num_layers * sum(s.rank * (t.d_in + t.d_out) for t in _targets(spec, s))
    return n * adapters.saved_bytes_per_param(method_info(s.method).family)


# ---------------------------------------------------------------- static memory


def _weight_bytes(spec: ModelSpec, s: Settings) -> int:
    """Base model weights as loaded, plus what the adapter holds that the optimizer never updates."""
    if s.method != "qlora":
        return spec.total_params * BF16 + _adapter_frozen_bytes(spec, s)
    linear = spec.num_layers * sum(lin.d_in * lin.d_out for lin in spec.linears)
    rest = spec.total_params - linear  # embeddings, norms, biases, lm_head: cast to fp32
    return int(linear * NF4_BYTES_PER_PARAM) + rest * FP32


def _adapter_frozen_bytes(spec: ModelSpec, s: Settings) -> int:
    """Adapter tensors without gradients, which the trainable term misses: VeRA's shared random
    projections, LoRA-FA's frozen A (fp32 parameters), OFT's row/column index buffers and SHiRA's
    sparse indices (checked against the peft model's tensors on a tiny model, tests)."""
    if s.method == "vera":
        return _vera_projection_params(spec, s) * FP32
    if s.method == "lorafa":
        return spec.num_layers * sum(s.rank * t.d_in for t in _targets(spec, s)) * FP32
    family = method_info(s.method).family
    if family == "oft":
        return spec.num_layers * sum(adapters.oft_index_bytes(t.d_in, s.oft_block_size) for t in _targets(spec, s))
    if family == "shira":
        return trainable_params(spec, s) * adapters.SHIRA_INDEX_MEMORY_BYTES
    return 0


def _galore_state_bytes(spec: ModelSpec, s: Settings) -> int:
    """Adam moments on rank-r projected gradients plus the projection matrix, per GaLore target;
    ordinary Adam moments on everything GaLore does not project (embeddings, norms, lm_head)."""
    state = 1 if s.galore_8bit else BF16
    projected = 0
    per_layer = 0
    for lin in _targets(spec, s):
        r = min(s.galore_rank, lin.d_in, lin.d_out)
        big, small = max(lin.d_in, lin.d_out), min(lin.d_in, lin.d_out)
        per_layer += 2 * big * r * state + small * r * BF16
        projected += lin.d_in * lin.d_out
    projected *= spec.num_layers
    rest = spec.total_params - projected
    return spec.num_layers * per_layer + rest * 2 * state


EIGHT_BIT_STATE_BYTES = 1 + 4 / 256
"""Bytes per parameter of one bitsandbytes 8-bit Adam moment: the 8-bit code plus an fp32 absmax
per block of 256 (block-wise quantisation). Assumed, not yet measured: bitsandbytes keeps tensors
under 4,096 elements (`min_8bit_size`) in 32-bit, which this ignores (a few norm-sized vectors)."""


def _optimizer_bytes(spec: ModelSpec, s: Settings, n_trainable: int) -> int:
    """Adam's two moments per trainable parameter: fp32 for adapters (they train in fp32), bf16 for
    full fine-tuning (states follow the parameters' dtype), about one byte each with a bitsandbytes
    8-bit optimizer (a quarter of fp32 Adam's). A paged optimizer holds the same bytes on the GPU
    while there is room; its pages can spill to CPU RAM under pressure (not counted as saved)."""
    if s.method == "galore":
        return _galore_state_bytes(spec, s)
    if s.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return int(2 * n_trainable * EIGHT_BIT_STATE_BYTES)
    return 2 * n_trainable * (BF16 if s.method == "full" else FP32)


def _gradient_bytes(spec: ModelSpec, s: Settings, n_trainable: int) -> int:
    """Gradients alive at the end of backward. Layer-wise GaLore steps each weight inside
    backward and frees its gradient, so only the largest single gradient is ever held."""
    if s.method == "galore" and s.galore_layerwise:
        return max(spec.embedding_params, max(lin.d_in * lin.d_out for lin in spec.linears)) * BF16
    return n_trainable * (BF16 if trains_all_weights(s.method) else FP32)


# ---------------------------------------------------------------- activations


def _hidden_dtype_bytes(s: Settings) -> int:
    """Bytes per element of the hidden states and saved activations: bf16, but fp32 for QLoRA
    (`prepare_model_for_kbit_training` casts embeddings, norms and lm_head to fp32)."""
    return FP32 if s.method == "qlora" else BF16


def _act_bytes_per_token_layer(spec: ModelSpec, s: Settings) -> int:
    """Bytes autograd saves per token in one decoder block, without checkpointing."""
    h, i = spec.hidden_size, spec.intermediate_size
    q, kv, heads = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim, spec.num_heads
    a = _hidden_dtype_bytes(s)
    fp32_acts = a == FP32
    norms = _norms_per_block(spec)
    total = norms * _norm_saved_bytes(s, spec.hidden_size)
    if spec.qk_norm:  # the per-head query and key norms save theirs too
        total += _norm_saved_bytes(s, q + kv)
    if spec.eager_attention:
        total += _eager_attention_bytes(spec, s)
    elif fp32_acts and spec.num_kv_heads < spec.num_heads:
        # fp32 + grouped KV: SDPA's math kernel (expanded K/V, the probability matrix)
        total += FP32 * 3 * q + FP32 * heads * s.seq_len
    else:  # flash / memory-efficient: q, k, v, output and the log-sum-exp
        total += a * (2 * q + 2 * kv) + FP32 * heads
    total += _mlp_saved_tensors(s) * a * i
    if trains_all_weights(s.method):
        # trainable weights also need every linear input and the norms' bf16 outputs
        total += norms * BF16 * h + BF16 * (2 * h + q + i) + BF16 * i
        return total
    return total + _adapter_saved_bytes(spec, s, _targets(spec, s))


def _adapter_saved_bytes(spec: ModelSpec, s: Settings, targets) -> int:
    """Per token, what the method's adapters on `targets` save for backward beyond the base model."""
    a = _hidden_dtype_bytes(s)
    if s.method == "vera":
        return sum(FP32 * (s.vera_rank + t.d_out) for t in targets)
    family = method_info(s.method).family
    if family == "shira":  # F.linear on the bf16 input as it comes: inputs shared by q/k/v or gate/up once
        # (o_proj's input too: on the CPU it shares SDPA's output, but the H100 runs say it is a copy)
        return BF16 * sum({_input_of(t): t.d_in for t in targets}.values())
    if family == "ia3":  # feed-forward (MLP) targets scale their input cast to fp32, the others their output
        return sum(FP32 * t.d_in if t.group == "mlp" else a * t.d_out for t in targets)
    if family == "miss" or s.method == "lorafa":
        # MiSS sums the input into rank-sized groups and LoRA-FA's A is frozen: neither keeps the
        # input, only one rank-sized fp32 tensor per target (bench/results/cpu_saved_audit.md)
        return FP32 * s.rank * len(targets)
    if family in DELTA_WEIGHT_BYTES:  # the fp32 input copy only: no rank-sized intermediate
        return FP32 * sum(t.d_in for t in targets)
    if a == FP32:  # inputs are fp32 already: adapters sharing an input share the saved tensor
        total = FP32 * sum({_input_of(t): t.d_in for t in targets}.values())
    else:  # peft casts each adapted layer's input to fp32: one copy per target
        total = FP32 * sum(t.d_in for t in targets)
    total += FP32 * s.rank * len(targets)
    if s.method == "dora":  # base result (bf16) and LoRA result (fp32) kept for the magnitude
        total += (BF16 + FP32) * sum(t.d_out for t in targets)
    return total


def _norms_per_block(spec: ModelSpec) -> int:
    """RMSNorms in one decoder block: two, or Gemma 2/3's four (their per-layer norm weights tell)."""
    h = spec.hidden_size
    return min(spec.norm_params_per_layer // h if spec.norm_params_per_layer >= h else 2, 4)


def _mlp_half_saved_bytes(spec: ModelSpec, s: Settings) -> int:
    """Per token, what a block saves after its attention (the norms after it, the MLP, the adapters
    on the MLP's targets): backward has freed all of it by the time it reaches the attention."""
    a = _hidden_dtype_bytes(s)
    total = (_norms_per_block(spec) - 1) * _norm_saved_bytes(s, spec.hidden_size)
    total += _mlp_saved_tensors(s) * a * spec.intermediate_size
    if trains_all_weights(s.method):  # down_proj's bf16 input (the norms' outputs left out: a floor)
        return total + BF16 * spec.intermediate_size
    return total + _adapter_saved_bytes(spec, s, [t for t in _targets(spec, s) if t.group == "mlp"])


def _eager_score_bytes(spec: ModelSpec, s: Settings) -> int:
    """Bytes per score (head x query x key) that eager attention keeps for backward: softmax's fp32
    output, the probabilities cast back to the model's dtype (the same tensor in fp32) and, when the
    scores are soft-capped, tanh's output."""
    a = _hidden_dtype_bytes(s)
    return FP32 + (0 if a == FP32 else a) + (a if spec.attn_softcap else 0)


def _eager_attention_bytes(spec: ModelSpec, s: Settings) -> int:
    """Per token, what transformers' eager attention saves (Gemma 2): the queries, the keys and
    values repeated to every head, and the whole score matrix, one row of `seq_len` keys per head
    whatever the causal mask or sliding window hides. Counted by autograd on the CPU: 64 bytes per
    token per key position on Gemma 2 (8 heads x 8 bytes), with the linear part exact
    (bench/results/cpu_saved_audit.md)."""
    a = _hidden_dtype_bytes(s)
    q = spec.num_heads * spec.head_dim
    return a * 3 * q + _eager_score_bytes(spec, s) * spec.num_heads * s.seq_len


DELTA_WEIGHT_BYTES = {"lokr": FP32, "loha": FP32, "shira": BF16}
"""Methods whose peft forward builds each adapted layer's whole weight and multiplies the input by
it, so `F.linear` keeps a d_out x d_in matrix per adapted layer for backward, whatever the token
count: LoKr's Kronecker product and LoHa's Hadamard product (fp32, the adapter's dtype; peft
`_get_delta_activations`), SHiRA's base weight plus its sparse delta (a bf16 clone). Bytes per
element; measured: LoKr and LoHa ran 12-14 % above an estimate without it on Qwen2.5-0.5B
(bench/results/h100_round3_speed.md)."""


def _delta_weight_bytes_per_block(spec: ModelSpec, s: Settings) -> int:
    """What one decoder block keeps of DELTA_WEIGHT_BYTES's matrices (0 for other methods)."""
    per = DELTA_WEIGHT_BYTES.get(method_info(s.method).family)
    return per * sum(t.d_in * t.d_out for t in _targets(spec, s)) if per else 0


def _norm_saved_bytes(s: Settings, width: int) -> int:
    """Per token, what RMSNorms over `width` features save for backward. transformers' RMSNorm
    upcasts its input and keeps that fp32 copy (4 bytes per feature, calibrated); LigerRMSNorm keeps
    its input in the model's dtype plus one fp32 rstd per row (bf16: about half; assumed, not yet
    measured)."""
    if not s.liger_kernels:
        return FP32 * width
    return _hidden_dtype_bytes(s) * width + FP32


def _mlp_saved_tensors(s: Settings) -> int:
    """Intermediate-sized tensors the gated MLP saves: transformers keeps the gate output (for
    SiLU/GELU), the activation's output and the up output (for their product), calibrated;
    Liger's SwiGLU/GeGLU keeps only gate and up and recomputes the activation in backward
    (assumed, not yet measured). Liger's RoPE works in place on q and k: torch's RoPE saves only
    cos/sin, so it changes no counted term."""
    return 2 if s.liger_kernels else 3


def _input_of(lin) -> str:
    """Which tensor feeds a linear layer: q/k/v read the same normed input, as do gate and up."""
    if lin.name in ("o_proj", "down_proj"):
        return lin.name
    return lin.group


LOGIT_BYTES = 12
"""Per token and vocabulary entry at the loss's peak: log-softmax output (fp32), its incoming and
outgoing gradients."""
SOFTCAP_BYTES = 2
"""Soft-capped logits (Gemma 2: logits / cap, tanh, * cap, in the model's dtype before the fp32
upcast) add the tanh output autograd saves and the gradient through it: two bf16 tensors."""


def _logits_bytes(spec: ModelSpec, s: Settings) -> int:
    """Peak of the loss over the whole vocabulary (or, fused, over one chunk of tokens)."""
    if s.fused_loss:  # Liger's kernel runs when liger_kernels is on (it needs liger-kernel installed);
        # otherwise the machine decides (Liger where installed, else the chunked loss): count the larger
        liger = _fused_loss_bytes(spec, s)
        return liger if s.liger_kernels else max(liger, _chunked_loss_bytes(spec, s))
    per_entry = LOGIT_BYTES + (SOFTCAP_BYTES if spec.logit_softcap else 0)
    return per_entry * s.tokens * spec.vocab_size


def fused_loss_chunk_tokens(spec: ModelSpec, s: Settings) -> int:
    """Tokens per chunk of Liger's fused linear cross-entropy (ops/fused_linear_cross_entropy.py):
    it bounds one chunk's logits to about tokens x hidden elements, so the chunk is the next power
    of two of ceil(tokens / ceil(vocab / hidden)), never more than the tokens."""
    per_hidden = -(-spec.vocab_size // spec.hidden_size)
    chunk = 1 << max(0, (-(-s.tokens // per_hidden) - 1).bit_length())
    return min(chunk, s.tokens)


def _fused_loss_bytes(spec: ModelSpec, s: Settings) -> int:
    """What Liger's fused linear cross-entropy holds at its peak, in forward: one chunk's logits in
    the hidden states' dtype (the kernel writes their gradient in place, and softcapping happens
    inside it), the gradient of every hidden state (computed in forward, held until backward), the
    fp32 per-token losses, and when the output projection trains (full fine-tuning, GaLore) its
    gradient, allocated in forward. The whole-vocabulary log-softmax is never built. Counted from
    Liger's code; assumed, not yet measured. The chunked torch loss used where Liger is not (no
    CUDA, or liger-kernel not installed) is `_chunked_loss_bytes`. The trainer's evaluation goes through
    the same loss (LeanTrainer.compute_loss), so `_eval_bytes` counts it there too."""
    a = _hidden_dtype_bytes(s)  # prepare_model_for_kbit_training: fp32 hidden states
    chunk = fused_loss_chunk_tokens(spec, s) * spec.vocab_size * a
    grad_hidden = s.tokens * spec.hidden_size * a
    losses = s.tokens * FP32
    head_grad = spec.vocab_size * spec.hidden_size * BF16 if trains_all_weights(s.method) else 0
    return chunk + grad_hidden + losses + head_grad


CHUNKED_LOSS_BYTES = 12
"""Per logit of one chunk of the chunked PyTorch loss, beyond its two model-dtype tensors (the
logits and their gradient): the fp32 copy, cross-entropy's fp32 log-softmax, and the fp32 gradient,
all alive in the chunk's recomputed backward (train/fused_loss.py). Counted from the code; not yet
measured on a GPU."""


def _chunked_loss_bytes(spec: ModelSpec, s: Settings) -> int:
    """The chunked PyTorch loss's peak, where Liger does not run: one checkpointed chunk of
    `core.techniques.loss_chunk_tokens` tokens (about 2^26 logits, whatever the vocabulary) in its
    backward, plus the gradient of every hidden state and, when the head trains, its gradient."""
    from peft_advisor.core.techniques import loss_chunk_tokens

    a = _hidden_dtype_bytes(s)
    chunk = min(s.tokens, loss_chunk_tokens(spec.vocab_size)) * spec.vocab_size
    per_logit = 2 * a + CHUNKED_LOSS_BYTES + (SOFTCAP_BYTES if spec.logit_softcap else 0)
    head_grad = spec.vocab_size * spec.hidden_size * BF16 if trains_all_weights(s.method) else 0
    return chunk * per_logit + s.tokens * spec.hidden_size * a + head_grad


EVAL_LOGIT_BYTES = 10
"""Per token and vocabulary entry of a no-grad loss: the model-dtype logits, their fp32 copy and
log-softmax's fp32 output (nothing is kept for backward). Not yet calibrated on a GPU."""


def _eval_bytes(spec: ModelSpec, s: Settings) -> int:
    """Transient peak of the evaluation the recipe asks for; the weights and optimizer states stay,
    the gradients were freed after the step. Either a no-grad forward of one eval micro-batch (one
    block's tensors at a time, bounded by what a block saves in training, plus the loss), or exact
    match's greedy generation: the KV cache of EVAL_GENERATE_BATCH sequences plus the prefill of
    their prompts (its logits for the last token only). Not yet calibrated on a GPU."""
    from peft_advisor.core.data_profile import EVAL_GENERATE_BATCH

    forward = generate = 0
    if s.eval_seq_len:
        ev = replace(s, seq_len=s.eval_seq_len)
        forward = ev.tokens * _act_bytes_per_token_layer(spec, ev) + _eval_loss_bytes(spec, ev)
    if s.generate_len:
        gen = replace(s, batch_size=EVAL_GENERATE_BATCH, seq_len=s.generate_len)
        a = _hidden_dtype_bytes(s)
        kv_cache = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * a * gen.tokens
        prefill = gen.tokens * _act_bytes_per_token_layer(spec, gen)
        generate = kv_cache + prefill + EVAL_GENERATE_BATCH * spec.vocab_size * (BF16 + FP32)
    if not (forward or generate):
        return 0
    return max(forward, generate) + _kernel_scratch_bytes(spec, s)


def _eval_loss_bytes(spec: ModelSpec, ev: Settings) -> int:
    """The evaluation's loss over its micro-batch: the trainer evaluates through the same loss it
    trains with (LeanTrainer.compute_loss), so with the fused loss one chunk, counted as in training
    (an upper bound: nothing is kept for a backward); else the whole vocabulary without gradients."""
    if ev.fused_loss:
        return _logits_bytes(spec, ev)
    return (EVAL_LOGIT_BYTES + (SOFTCAP_BYTES if spec.logit_softcap else 0)) * ev.tokens * spec.vocab_size


OFFLOAD_BLOCKS_ON_GPU = 2
"""With activation offloading, the saved tensors of about this many blocks are on the GPU at once:
the one being computed and the one being copied to (forward) or back from (backward) pinned CPU
memory. Assumed, not yet measured."""


def checkpointed_layers(spec: ModelSpec, s: Settings) -> int:
    """Decoder blocks that checkpointing recomputes: none without it, else `grad_ckpt_layers`
    (0 or more than the model has: all of them)."""
    if not s.grad_ckpt:
        return 0
    if 0 < s.grad_ckpt_layers < spec.num_layers:
        return s.grad_ckpt_layers
    return spec.num_layers


def _saved_per_block_bytes(spec: ModelSpec, s: Settings, checkpointed: bool) -> int:
    """What one decoder block saves for backward: its input when checkpointed, else everything."""
    if checkpointed:
        return s.tokens * _hidden_dtype_bytes(s) * spec.hidden_size
    return s.tokens * _act_bytes_per_token_layer(spec, s) + _delta_weight_bytes_per_block(spec, s)


def _blocks_saved_bytes(spec: ModelSpec, s: Settings) -> tuple[int, int]:
    """(checkpointed blocks' inputs, the other blocks' whole activations), all layers together."""
    k = checkpointed_layers(spec, s)
    return (k * _saved_per_block_bytes(spec, s, True),
            (spec.num_layers - k) * _saved_per_block_bytes(spec, s, False))


def _saved_activation_bytes(spec: ModelSpec, s: Settings) -> int:
    """Every activation saved for backward at its start (logits excluded), wherever it is kept."""
    final = _norm_saved_bytes(s, spec.hidden_size) + (BF16 * spec.hidden_size if trains_all_weights(s.method) else 0)
    return sum(_blocks_saved_bytes(spec, s)) + s.tokens * final


def _offloaded_bytes(spec: ModelSpec, s: Settings) -> int:
    """Decoder blocks' saved activations that leave the card: those beyond the
    OFFLOAD_BLOCKS_ON_GPU in flight. Weights stay (the trainer's pack hook,
    `train.techniques.offload_saved_tensors`, keeps Parameters, views of them and their storage,
    so FSDP's and ZeRO-3's gathered weights stay too)."""
    if not s.offload_activations:
        return 0
    return sum(_blocks_saved_bytes(spec, s)) - sum(_blocks_on_card_while_offloading(spec, s))


def _blocks_on_card_while_offloading(spec: ModelSpec, s: Settings) -> tuple[int, int]:
    """(checkpointed, whole) bytes of the last OFFLOAD_BLOCKS_ON_GPU blocks, the ones still on the
    card when backward starts; with partial checkpointing the last blocks are the whole ones."""
    on_card = min(OFFLOAD_BLOCKS_ON_GPU, spec.num_layers)
    whole = min(on_card, spec.num_layers - checkpointed_layers(spec, s))
    return ((on_card - whole) * _saved_per_block_bytes(spec, s, True),
            whole * _saved_per_block_bytes(spec, s, False))


def _offloaded_cpu_bytes(spec: ModelSpec, s: Settings) -> int:
    """Pinned CPU RAM while offloading: the blocks' activations, plus what the final norm and the
    loss save (the head's input; without the fused loss also cross-entropy's fp32 log-softmax over
    the whole vocabulary). The card's figure keeps the loss's own peak as is. The pinned
    allocator's rounding of host blocks is not counted (assumed, not yet measured)."""
    if not s.offload_activations:
        return 0
    a = _hidden_dtype_bytes(s)
    loss = s.tokens * spec.hidden_size * a + (0 if s.fused_loss else s.tokens * spec.vocab_size * FP32)
    final = s.tokens * _norm_saved_bytes(s, spec.hidden_size)
    return _offloaded_bytes(spec, s) + final + loss


def _activation_bytes(spec: ModelSpec, s: Settings) -> int:
    """Saved activations on the GPU at the start of backward (logits excluded); with checkpointing
    each block keeps its input and one block is recomputed at a time (`_recompute_bytes`)."""
    return _saved_activation_bytes(spec, s) - _offloaded_bytes(spec, s)


def _recompute_bytes(spec: ModelSpec, s: Settings) -> int:
    """With checkpointing: one block's activations plus the gradient flowing through it."""
    if not checkpointed_layers(spec, s):
        return 0
    return (s.tokens * (_act_bytes_per_token_layer(spec, s) + 2 * FP32 * spec.hidden_size)
            + _delta_weight_bytes_per_block(spec, s))


def _backward_transient_bytes(spec: ModelSpec, s: Settings, gpu_extra: float | None = None) -> int:
    """What the backward of one block allocates beyond the activations it saved, at its widest
    moment, the down projection's backward: the gradient of its input (intermediate-sized, per
    token) from the frozen base path, and from an adapter on it that casts the input to fp32 (peft's
    LoRA-style layers, LoKr, LoHa) an fp32 gradient and its cast back, plus, for the methods that
    build a whole delta weight, that weight's gradient. Counted from the code (torch's linear
    backward, peft's cast); hidden under the whole-vocabulary loss's buffers, it sets the peak once
    the fused loss removes them: round 3's fits runs with the fused loss held 4-9 bytes per token per
    intermediate feature more than the saved activations (bench/results/h100_fits_round3.jsonl)."""
    extra = EAGER_BACKWARD_GPU_EXTRA if gpu_extra is None else gpu_extra  # 0: what the CPU's kernels hold
    return max(_mlp_backward_bytes(spec, s), _eager_backward_bytes(spec, s, gpu_extra=extra))


def _mlp_backward_bytes(spec: ModelSpec, s: Settings) -> int:
    """`_backward_transient_bytes` at the widest MLP linear's backward: the down projection's input
    gradient (intermediate-wide) or, where gate and up are one fused linear (Phi-3), that linear's
    output gradient (twice as wide). Counted with fake tensors on the CPU, Phi-3.5-mini's block
    backward grows 80 KiB per token at its widest, 1.25x the down projection's term alone
    (bench/results/cpu_backward_audit.md)."""
    a = _hidden_dtype_bytes(s)
    family = method_info(s.method).family
    targeted = {t.name: t for t in _targets(spec, s)}
    one_gradient = trains_all_weights(s.method) or family == "shira"  # one matmul: one input gradient
    adapter = FP32 + (0 if a == FP32 else BF16)  # the fp32 copy's gradient and its cast back

    def at(name: str, width: int) -> int:
        t = targeted.get(name)
        if t is None or one_gradient:
            return s.tokens * a * width
        return s.tokens * (a + adapter) * width + DELTA_WEIGHT_BYTES.get(family, 0) * t.d_in * t.d_out

    widths = {"down_proj": spec.intermediate_size}
    widths.update({lin.name: lin.d_out for lin in spec.linears if lin.name == "gate_up_proj"})
    widest = max(at(name, width) for name, width in widths.items())
    if s.method == "dora":  # its magnitude scaling's gradients at a gate/up projection's output
        outputs = [t.d_out for t in targeted.values() if t.group == "mlp" and t.name != "down_proj"]
        widest = max([widest] + [s.tokens * DORA_OUTPUT_GRADIENT_BYTES * w for w in outputs])
    return widest


DORA_OUTPUT_GRADIENT_BYTES = 12
"""Per token per output feature, what DoRA's backward holds at a gate/up projection: the gradients
of its fp32 magnitude-scaled base and LoRA results and their casts. Counted with fake tensors on the
CPU (net of what that backward frees): 10-12 bytes on Llama-3.2-1B, Qwen3-0.6B and Phi-3.5-mini,
against LoRA's 4.5, which put DoRA's whole step 4-10 % above the estimate before
(bench/results/cpu_backward_audit.md, cpu_step_audit.md). Not yet measured on a GPU."""


EAGER_BACKWARD_GPU_EXTRA = 4.5
"""Bytes per score that eager attention's backward holds on a CUDA GPU beyond what the CPU's kernels
allocate: the H100 runs of Gemma-2-2B at 4096-8192 tokens per row held 4.3-4.7 more than the
fake-tensor count (bench/results/h100_round4.md); which kernel holds them is not traced yet."""


def _eager_backward_bytes(spec: ModelSpec, s: Settings, gpu_extra: float = EAGER_BACKWARD_GPU_EXTRA) -> int:
    """Eager attention's backward (Gemma 2) at its widest: the gradient of the probabilities in the
    model's dtype and its fp32 cast, a whole score matrix each (6 bytes per score, counted with fake
    tensors on the CPU, bench/results/cpu_backward_audit.md), plus what the GPU holds beyond that
    (EAGER_BACKWARD_GPU_EXTRA), while the MLP half of the block is already freed. It outgrows the
    down projection's transient past about 3,000 tokens per row on Gemma-2-2B."""
    if not spec.eager_attention:
        return 0
    scores_per_token = spec.num_heads * s.seq_len
    per_score = FP32 + _hidden_dtype_bytes(s) + gpu_extra
    return max(0, int(s.tokens * (per_score * scores_per_token - _mlp_half_saved_bytes(spec, s))))


def _uncheckpointed_on_card_bytes(spec: ModelSpec, s: Settings) -> int:
    """The whole activations of the blocks checkpointing leaves alone (partial checkpointing), as
    far as they stay on the card: backward frees them before it recomputes a checkpointed block."""
    if not s.grad_ckpt:
        return 0
    if s.offload_activations:
        return _blocks_on_card_while_offloading(spec, s)[1]
    return _blocks_saved_bytes(spec, s)[1]


def _kernel_scratch_bytes(spec: ModelSpec, s: Settings) -> int:
    """Short-lived per-layer buffers: NF4 weights dequantised to fp32 for one matmul."""
    if s.method == "qlora":
        return max(lin.d_in * lin.d_out for lin in spec.linears) * FP32
    return 0


# ---------------------------------------------------------------- the estimate


def components(spec: ModelSpec, s: Settings) -> dict[str, int]:
    """The raw terms of one training step on one GPU, before they are combined into a peak."""
    return dict(_components(spec, s))


@lru_cache(maxsize=1024)
def _components(spec: ModelSpec, s: Settings) -> tuple:
    n_trainable = trainable_params(spec, s)
    acts = _activation_bytes(spec, s)
    return tuple({
        "trainable_params": n_trainable,
        "weights": _weight_bytes(spec, s),
        "trainable": 0 if trains_all_weights(s.method) else n_trainable * FP32,
        "optimizer": _optimizer_bytes(spec, s, n_trainable),
        "grads_total": _gradient_bytes(spec, s, n_trainable),
        "acts": acts,
        "acts_kept": acts - _uncheckpointed_on_card_bytes(spec, s),
        "logits": _logits_bytes(spec, s),
        "scratch": _kernel_scratch_bytes(spec, s),
        "recompute": _recompute_bytes(spec, s),
        "backward": _backward_transient_bytes(spec, s),
        "eval": _eval_bytes(spec, s),
        "cpu": _offloaded_cpu_bytes(spec, s),
    }.items())


def assemble(c: dict[str, int], s: Settings, extra_static: int = 0, grads_held: int | None = None) -> dict[str, int]:
    """Combine the terms into the peak's breakdown (its values sum to the peak).

    The peak is either the start of backward (every saved activation plus the loss's buffers, or
    a checkpointed block being recomputed) or the end of backward (every gradient held), or, when
    Settings ask for one, the evaluation pass (`_eval_bytes`): then the breakdown says so under
    "evaluation". Sharding or DDP buckets change `grads_held` and `extra_static`; the activations
    never change.
    """
    grads = c["grads_total"] if grads_held is None else grads_held
    # a checkpointed block is recomputed once backward has freed the blocks left uncheckpointed;
    # the last block's backward runs on top of every saved activation when that block kept its own
    transient = c["backward"]
    last_kept = not s.grad_ckpt or c["acts_kept"] < c["acts"]
    block_backward = (c["acts"] + transient) if last_kept else 0
    recompute = c["acts_kept"] + c["recompute"] + transient if c["recompute"] else 0
    forward_peak = max(c["acts"] + c["logits"], block_backward, recompute) + c["scratch"]
    backward_end = grads + (c["acts_kept"] if s.grad_ckpt else 0) + c["scratch"]
    at_backward_end = backward_end > forward_peak
    k = ALLOC_OVERHEAD
    overhead = int(k["activations"] * (c["acts"] + c["recompute"]) + k["logits"] * c["logits"] + k["gradients"] * grads)
    evaluation = c.get("eval", 0)
    eval_overhead = int(k["activations"] * evaluation)
    if evaluation + eval_overhead > max(forward_peak, backward_end) + overhead:
        return {"weights": c["weights"] + extra_static, "trainable": c["trainable"], "gradients": 0,
                "optimizer": c["optimizer"], "activations": 0, "logits": 0, "evaluation": evaluation,
                "overhead": eval_overhead}
    return {
        "weights": c["weights"] + extra_static,
        "trainable": c["trainable"],
        "gradients": grads if at_backward_end else 0,
        "optimizer": c["optimizer"],
        "activations": backward_end - grads if at_backward_end else forward_peak - c["logits"],
        "logits": 0 if at_backward_end else c["logits"],
        "overhead": overhead,
    }


def context_bytes(total_vram_bytes: int | None) -> int:
    return CONTEXT_BASE_BYTES + int(CONTEXT_PER_TOTAL * (total_vram_bytes or 140 * GIB))


def from_breakdown(spec: ModelSpec, s: Settings, breakdown: dict[str, int], n_trainable: int,
                   total_vram_bytes: int | None = None) -> Estimate:
    peak = sum(breakdown.values())
    return Estimate(
        settings=s,
        peak_bytes=int(peak),
        low_bytes=int(peak * BAND[0]),
        high_bytes=int(peak * BAND[1]),
        context_bytes=context_bytes(total_vram_bytes),
        adapter_bytes=adapter_bytes(spec, s),
        trainable_params=n_trainable,
        breakdown=breakdown,
        cpu_bytes=_offloaded_cpu_bytes(spec, s),
        checkpointed_share=checkpointed_layers(spec, s) / spec.num_layers,
    )


def estimate(spec: ModelSpec, s: Settings, total_vram_bytes: int | None = None) -> Estimate:
    """Expected peak memory of one training step; `total_vram_bytes` sizes the CUDA context."""
    c = components(spec, s)
    return from_breakdown(spec, s, assemble(c, s), c["trainable_params"], total_vram_bytes)


def with_settings(s: Settings, **changes) -> Settings:
    """A copy of `s` with some knobs changed (the recommender's search uses this)."""
    return replace(s, **changes)
