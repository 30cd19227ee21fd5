"""What one decoder block's backward holds beyond what forward saved, counted on the CPU with fake tensors.

Usage (no GPU needed; seconds per case):
    python bench/backward_audit.py --out bench/results/cpu_backward_audit.jsonl [--cases gemma-2-2b:lora:4096,...]
    python bench/backward_audit.py --table bench/results/cpu_backward_audit.jsonl   # against the estimator as it is now

The estimator puts a step's peak at the last block's backward when the fused loss has removed the
vocabulary-sized buffers: every saved activation plus what that block's backward allocates at its
widest moment (`estimate._backward_transient_bytes`). This builds the block as
bench/saved_audit.py does (the preset's real shapes, three blocks, the method applied by the
trainer's builder), swaps every weight for a fake tensor (`FakeTensorMode`: shapes and dtypes, no
data, so a 4096-token backward takes seconds) and, through a dispatch mode, follows every storage
the step creates until it dies. Per block it records the most bytes alive during that block's
backward above what was alive when its backward began: the net growth, frees of its saved tensors
included.

What this sees and what it does not: tensors as ATen's CPU kernels allocate them, at the moment
they die. The CUDA caching allocator rounds blocks and cannot always reuse a freed one at once, so
a GPU's peak can grow more than this (round 3's fits runs held 4-9 bytes per token per intermediate
feature where this counts about 5); kernel workspaces are not seen. It is a check of which phase of
a block's backward is the widest and how that scales, not a peak-memory figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.saved_audit import BATCH, build, run_rows, small_config  # noqa: E402

CASES = ("gemma-2-2b:lora:1024,gemma-2-2b:lora:2048,gemma-2-2b:lora:4096,gemma-2-2b:lora:8192,"
         "gemma-2-9b:lora:1024,gemma-2-9b:lora:4096,gemma-2-9b:lora:8192,gemma-2-27b:lora:4096,"
         "gemma-2-27b:lora:8192,gemma-2-2b:dora:8192,gemma-2-2b:full:8192,llama-3.2-1b:lora:4096,"
         "qwen3-0.6b:lora:4096,qwen3-0.6b:dora:4096,phi-3.5-mini:lora:4096")

STEP_CASES = ",".join(f"{m}:lora:4096{c}" for m in ("llama-3.2-1b", "llama-3.2-3b", "qwen2.5-0.5b", "qwen2.5-1.5b",
                                                    "qwen3-4b", "mistral-7b", "phi-3.5-mini", "gemma-3-1b",
                                                    "smollm2-1.7b") for c in ("", ":ckpt")) + \
    ",qwen3-0.6b:dora:4096:ckpt,qwen3-0.6b:full:4096:ckpt,phi-3.5-mini:dora:4096:ckpt"


def fake_weights(model):
    """The model with every parameter and buffer replaced by a fake tensor of the same shape, dtype
    and trainability, and the FakeTensorMode that owns them."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(mode.from_tensor(p), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = mode.from_tensor(b)
    return model, mode


def live_bytes_mode(model):
    """A dispatch mode that counts the bytes of every storage an op creates until the storage dies
    (weights and buffers excluded), with `live` and `peak` readable and `reset()` setting peak to live."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    from torch.utils.weak import WeakIdKeyDictionary
    import torch

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.known = WeakIdKeyDictionary()
            for t in (*model.parameters(), *model.buffers()):
                self.known[t.untyped_storage()] = 0

        def reset(self) -> None:
            self.peak = self.live

        def _free(self, nbytes: int) -> None:
            self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.untyped_storage() not in self.known:
                    storage = t.untyped_storage()
                    nbytes = storage.nbytes()
                    self.known[storage] = nbytes
                    weakref.finalize(storage, self._free, nbytes)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
            return out

    return LiveBytes()


class CudaBytes:
    """The same readers over the CUDA caching allocator's counters (allocated bytes, not reserved)."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda

    @property
    def live(self) -> int:
        return self.cuda.memory_allocated()

    @property
    def peak(self) -> int:
        return self.cuda.max_memory_allocated()

    def reset(self) -> None:
        self.cuda.reset_peak_memory_stats()


def block_growth(model, seq_len: int, cuda: bool = False) -> dict[str, int]:
    """The last decoder block at BATCH rows of `seq_len` tokens: its net growth during its own
    backward, and the most its forward held above what it ended with (its forward transient), in
    bytes. On the CPU the weights become fake tensors; with `cuda` the model runs on the GPU and the
    allocator's counters are read instead."""
    import contextlib

    import torch

    from peft_advisor.train.techniques import decoder_blocks

    if cuda:
        model, mode = model.to("cuda"), contextlib.nullcontext()
    else:
        model, mode = fake_weights(model)
    model.train()
    block = decoder_blocks(model)[-1]
    marks: dict[str, int] = {}
    with mode:
        counter = CudaBytes() if cuda else live_bytes_mode(model)

        def mark(name: str, reset: bool = False, peak: str | None = None):
            def hook(*_):
                if peak:
                    marks[peak] = counter.peak
                marks[name] = counter.live
                if reset:
                    counter.reset()
            return hook

        block.register_forward_pre_hook(mark("forward_start", reset=True))
        block.register_forward_hook(mark("forward_end", peak="forward_peak"))
        block.register_full_backward_pre_hook(mark("backward_start", reset=True))
        block.register_full_backward_hook(mark("backward_end", peak="backward_peak"))
        vocab = model.config.get_text_config().vocab_size
        ids = torch.randint(0, vocab, (BATCH, seq_len), device="cuda" if cuda else "cpu")
        with contextlib.nullcontext() if cuda else counter:
            model(input_ids=ids, labels=ids).loss.backward()
    return {"growth_bytes": marks["backward_peak"] - marks["backward_start"],
            "forward_transient_bytes": marks["forward_peak"] - marks["forward_end"]}


def estimated_growth(preset: str, method: str, seq_len: int, device: str = "fake") -> int:
    """The estimator's transient for the same block and rows; against the fake-tensor count without
    the bytes per score it adds for a GPU's kernels (`estimate.EAGER_BACKWARD_GPU_EXTRA`)."""
    from peft_advisor.core.estimate import Settings, _backward_transient_bytes
    from peft_advisor.core.model_spec import from_hf_config

    spec = from_hf_config(small_config(preset)[1], preset)
    s = Settings(method=method, rank=16, batch_size=BATCH, seq_len=seq_len)
    return _backward_transient_bytes(spec, s, gpu_extra=None if device == "cuda" else 0)


def step_peak(model, seq_len: int, grad_ckpt: bool) -> int:
    """The most bytes alive at once over one whole training step (forward, loss, backward; weights
    excluded, no optimizer step), counted with fake tensors, at BATCH rows of `seq_len` tokens."""
    import torch

    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model, mode = fake_weights(model)
    model.train()
    with mode:
        live = live_bytes_mode(model)
        ids = torch.randint(0, model.config.get_text_config().vocab_size, (BATCH, seq_len))
        with live:
            model(input_ids=ids, labels=ids).loss.backward()
    return live.peak


def estimated_step(preset: str, method: str, seq_len: int, grad_ckpt: bool) -> int:
    """The estimator's step for the same three-block model with its own vocabulary: activations,
    the loss's buffers and any gradients held at the peak (what `step_peak` can see)."""
    from peft_advisor.core.estimate import Settings, estimate
    from peft_advisor.core.model_spec import from_hf_config

    config, _ = small_config(preset, full_vocab=True)
    spec = from_hf_config({**config.to_dict(), **config.get_text_config().to_dict()}, preset)
    s = Settings(method=method, rank=16, batch_size=BATCH, seq_len=seq_len, grad_ckpt=grad_ckpt)
    b = estimate(spec, s).breakdown
    return b["activations"] + b["logits"] + b["gradients"]


def step_audit(preset: str, method: str, seq_len: int, grad_ckpt: bool) -> dict:
    start = time.perf_counter()
    measured = step_peak(build(preset, method, 16, full_vocab=True), seq_len, grad_ckpt)
    return {"model": preset, "method": method, "batch": BATCH, "seq_len": seq_len, "grad_ckpt": grad_ckpt,
            "step_peak_bytes": measured, "wall_s": round(time.perf_counter() - start, 1)}


def step_table(rows: list[dict]) -> str:
    out = ["| model | method | rows × tokens | checkpointing | step peak (fake tensors) | estimate | estimate / measured |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ckpt = "all blocks" if r.get("grad_ckpt") else "none"
        if "step_peak_bytes" not in r:
            out.append(f"| {r['model']} | {r['method']} | | {ckpt} | failed: {r.get('message', '')} | | |")
            continue
        est = estimated_step(r["model"], r["method"], r["seq_len"], r["grad_ckpt"])
        out.append(f"| {r['model']} | {r['method']} | {r['batch']} × {r['seq_len']} | {ckpt} | "
                   f"{r['step_peak_bytes'] / 2**20:,.0f} MiB | {est / 2**20:,.0f} MiB | {est / r['step_peak_bytes']:.2f} |")
    return "\n".join(out)


def audit(preset: str, method: str, seq_len: int, cuda: bool = False) -> dict:
    start = time.perf_counter()
    measured = block_growth(build(preset, method, 16), seq_len, cuda)
    tokens = BATCH * seq_len
    return {"model": preset, "method": method, "batch": BATCH, "seq_len": seq_len, "device": "cuda" if cuda else "fake",
            **measured, "growth_per_token_bytes": round(measured["growth_bytes"] / tokens, 1),
            "forward_transient_per_token_bytes": round(measured["forward_transient_bytes"] / tokens, 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def table(rows: list[dict]) -> str:
    out = ["| model | method | rows × tokens | counted on | backward growth per token | estimator's transient per token "
           "| estimate / measured |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "growth_bytes" not in r:
            out.append(f"| {r['model']} | {r['method']} | | | failed: {r.get('message', '')} | | |")
            continue
        est = estimated_growth(r["model"], r["method"], r["seq_len"], r.get("device", "fake")) / (r["batch"] * r["seq_len"])
        out.append(f"| {r['model']} | {r['method']} | {r['batch']} × {r['seq_len']} | {r.get('device', 'fake')} | "
                   f"{r['growth_per_token_bytes'] / 1024:,.1f} KiB | {est / 1024:,.1f} KiB | "
                   f"{est / r['growth_per_token_bytes']:.2f} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=CASES, help="comma list of MODEL:METHOD:SEQ_LEN")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--step", action="store_true", help="the whole step's peak instead, cases MODEL:METHOD:SEQ[:ckpt], "
                        "each model with its own vocabulary")
    parser.add_argument("--cuda", action="store_true", help="real weights on the GPU, the allocator's counters")
    parser.add_argument("--table", type=Path, help="print the table of a JSONL file and stop")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(step_table(rows) if rows and "grad_ckpt" in rows[0] else table(rows))
        return 0
    if args.step:
        cases = []
        for case in (STEP_CASES if args.cases == CASES else args.cases).split(","):
            preset, method, seq_len, *flag = case.split(":")
            ckpt = flag == ["ckpt"]
            cases.append(({"model": preset, "method": method, "seq_len": int(seq_len), "grad_ckpt": ckpt},
                          lambda p=preset, m=method, n=int(seq_len), c=ckpt: step_audit(p, m, n, c)))
        print(step_table(run_rows(cases, args.out)))
        return 0
    cases = []
    for case in args.cases.split(","):
        preset, method, seq_len = case.split(":")
        cases.append(({"model": preset, "method": method, "seq_len": int(seq_len)},
                      lambda p=preset, m=method, n=int(seq_len): audit(p, m, n, args.cuda)))
    print(table(run_rows(cases, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
