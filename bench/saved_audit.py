"""What one decoder block saves for backward, counted by autograd on the CPU, against the estimator.

Usage (no GPU needed):
    python bench/saved_audit.py --out bench/results/cpu_saved_audit.jsonl [--models all] [--methods lora,dora]
    python bench/saved_audit.py --table bench/results/cpu_saved_audit.jsonl   # against the estimator as it is now

The saved activations are the estimator's largest term and the one that most depends on each
architecture's and each method's code: `estimate._act_bytes_per_token_layer` says how many bytes
one block saves per token. This checks it on every preset without a GPU: each architecture is built from its own config with three
decoder blocks and a small vocabulary (the block's shapes are the real ones), in bf16 with random
weights, the method applied by the trainer's own builder, and one forward runs at three row lengths
(autograd has saved everything by the end of forward; backward adds nothing to count, and bf16
matmuls' backward is very slow on a CPU). A `saved_tensors_hooks` pack hook attributes every
storage autograd keeps (weights excluded, each storage once) to the block whose forward saved it;
the last block is the typical one (the first sees frozen embeddings). The block's bytes are solved
as a constant, a multiple of the tokens and a multiple of tokens x row length (what grows faster
than the tokens: an attention score matrix); the last two are compared with the estimator's, and at
4096 tokens per row.

What this does not see: kernel transients (the backward's own buffers), Liger's kernels and
bitsandbytes (CUDA only: QLoRA and the `liger` techniques are left out), and any difference between
the CPU's attention kernel and CUDA's. One is known: on the CPU the input of o_proj is SDPA's own
output, while the H100 runs of SHiRA (which keeps that input in bf16) fit only if it is a copy, so
the estimator counts one, and SHiRA and full fine-tuning read 2 bytes per query feature per token
above what this audit sees on SDPA architectures."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCKS = 3
VOCAB = 512
METHODS = ("lora", "dora", "vera", "full", "oft", "lokr", "loha", "ia3", "miss", "c3a", "shira", "lorafa")
SEQ_LENS = (64, 128, 256)
REPORT_SEQ = 4096
BATCH = 2


def presets() -> list[str]:
    folder = ROOT / "peft_advisor" / "data" / "models"
    return sorted(p.stem for p in folder.glob("*.json"))


def small_config(preset: str, full_vocab: bool = False):
    """The preset's config with BLOCKS decoder blocks and a VOCAB-entry vocabulary (or its own)."""
    from transformers import AutoConfig

    from peft_advisor.core.model_spec import preset_config

    raw = preset_config(preset)
    config = AutoConfig.for_model(**{k: v for k, v in raw.items() if not k.startswith("_")})
    text = config.get_text_config()
    text.num_hidden_layers = BLOCKS
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[:BLOCKS]
    if full_vocab:
        return config, raw
    text.vocab_size = VOCAB
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids must fit the small vocabulary
        if isinstance(getattr(text, name, None), int) and getattr(text, name) >= VOCAB:
            setattr(text, name, 0)
    return config, raw


def build(preset: str, method: str, rank: int, full_vocab: bool = False):
    """The small model with the method applied by the trainer's builder, bf16, random weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from peft_advisor.core import recipe as rc
    from peft_advisor.train.methods import BUILDERS

    config, _ = small_config(preset, full_vocab)
    torch.manual_seed(0)
    with torch.device("meta"):  # no init pass over full-size weights: 70B blocks fit the RAM of a laptop
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.normal_(0, 0.02) if tensor.is_floating_point() else tensor.zero_()
    recipe = rc.updated(rc.Recipe(), {"model.id": preset, "method.name": method, "method.rank": rank})
    return BUILDERS[method](model, recipe).model


class _Held:
    """What the pack hook hands autograd: the graph holds it as long as it holds the saved tensor,
    so a weak reference to it tells whether the tensor is still saved at the end of forward."""

    __slots__ = ("tensor", "block", "__weakref__")

    def __init__(self, tensor, block):
        self.tensor, self.block = tensor, block


def saved_per_block(model, tokens: int) -> dict[int, int]:
    """Bytes of the storages still saved for backward at the end of forward, per decoder block that
    saved them (weights excluded, each storage once). Tensors saved by a graph that forward then
    dropped (a detached sub-result, as DoRA's weight norm) are not counted: their memory was
    reused."""
    import torch

    from peft_advisor.train.techniques import _storage_ptr, decoder_blocks, weight_storages

    weights = weight_storages(model)
    held: list[weakref.ref] = []
    current: list[int | None] = [None]

    def pack(tensor):
        item = _Held(tensor, current[0])
        held.append(weakref.ref(item))
        return item

    handles = []
    for i, block in enumerate(decoder_blocks(model)):
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)))
        handles.append(block.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (BATCH, tokens // BATCH), generator=torch.Generator().manual_seed(0))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda item: item.tensor):
            out = model(input_ids=ids, labels=ids)  # what is saved is known after forward: no backward needed
    finally:
        for h in handles:
            h.remove()
    seen: set[int] = set()
    per_block: dict[int, int] = {}
    for ref in held:
        item = ref()
        ptr = None if item is None else _storage_ptr(item.tensor)
        if item is None or item.block is None or ptr is None or ptr in weights or ptr in seen:
            continue
        seen.add(ptr)
        per_block[item.block] = per_block.get(item.block, 0) + item.tensor.untyped_storage().nbytes()
    del out
    return per_block


def estimated_per_token(spec, method: str, rank: int) -> tuple[int, int]:
    """The estimator's (per token, per token per key position) bytes for one block."""
    from peft_advisor.core.estimate import Settings, _act_bytes_per_token_layer

    at = [_act_bytes_per_token_layer(spec, Settings(method=method, rank=rank, batch_size=1, seq_len=n)) for n in (1, 2)]
    return 2 * at[0] - at[1], at[1] - at[0]


def fit(measured: dict[int, int]) -> tuple[float, float, float]:
    """(constant, per token, per token per key position) of bytes = c + l t + q t s, t = BATCH x s,
    solved exactly from three row lengths (Gaussian elimination on the 3 x 3 system)."""
    rows = [[1.0, BATCH * s, BATCH * s * s, float(y)] for s, y in sorted(measured.items())]
    for i in range(3):
        for j in range(i + 1, 3):
            f = rows[j][i] / rows[i][i]
            rows[j] = [x - f * y for x, y in zip(rows[j], rows[i])]
    out = [0.0, 0.0, 0.0]
    for i in (2, 1, 0):
        out[i] = (rows[i][3] - sum(rows[i][k] * out[k] for k in range(i + 1, 3))) / rows[i][i]
    return out[0], out[1], out[2]


def measure(model) -> tuple[dict[int, int], tuple[float, float, float]]:
    """The last block's saved bytes at each of SEQ_LENS, and their `fit`."""
    model.train()
    from peft_advisor.train.techniques import decoder_blocks

    last = len(decoder_blocks(model)) - 1
    measured = {s: saved_per_block(model, BATCH * s)[last] for s in SEQ_LENS}
    return measured, fit(measured)


def audit(preset: str, method: str, rank: int) -> dict:
    """The last block's saved bytes per token against the estimator's, and both at REPORT_SEQ
    tokens per row."""
    from peft_advisor.core.model_spec import from_hf_config

    start = time.perf_counter()
    measured, (constant, linear, quadratic) = measure(build(preset, method, rank))
    est_linear, est_quadratic = estimated_per_token(from_hf_config(small_config(preset)[1], preset), method, rank)
    at = linear + quadratic * REPORT_SEQ
    est_at = est_linear + est_quadratic * REPORT_SEQ
    return {"model": preset, "method": method, "rank": rank, "batch": BATCH, "seq_lens": list(SEQ_LENS),
            "saved_bytes_last_block": list(measured.values()), "constant_bytes": round(constant),
            "per_token_bytes": round(linear, 1), "per_token_per_key_bytes": round(quadratic, 2),
            "estimate_per_token_bytes": est_linear, "estimate_per_token_per_key_bytes": est_quadratic,
            "report_seq": REPORT_SEQ, "error": round((est_at - at) / at, 4),
            "wall_s": round(time.perf_counter() - start, 1)}


def rescored(row: dict) -> dict:
    """The row with the estimator's figures as the code is now (the measured ones never change)."""
    from peft_advisor.core.model_spec import from_hf_config

    if "per_token_bytes" not in row:
        return row
    spec = from_hf_config(small_config(row["model"])[1], row["model"])
    est_linear, est_quadratic = estimated_per_token(spec, row["method"], row["rank"])
    at = row["per_token_bytes"] + row["per_token_per_key_bytes"] * REPORT_SEQ
    est_at = est_linear + est_quadratic * REPORT_SEQ
    return {**row, "estimate_per_token_bytes": est_linear, "estimate_per_token_per_key_bytes": est_quadratic,
            "error": round((est_at - at) / at, 4)}


def table(rows: list[dict]) -> str:
    out = ["| model | method | per token (autograd) | estimate | per token per key position (autograd) | estimate "
           f"| error at {REPORT_SEQ} tokens per row |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" not in r:
            out.append(f"| {r['model']} | {r['method']} | failed: {r.get('message', '')} | | | | |")
            continue
        out.append(f"| {r['model']} | {r['method']} | {r['per_token_bytes'] / 1024:,.1f} KiB | "
                   f"{r['estimate_per_token_bytes'] / 1024:,.1f} KiB | {r['per_token_per_key_bytes']:,.1f} B | "
                   f"{r['estimate_per_token_per_key_bytes']:,} B | {r['error']:+.1%} |")
    errors = [abs(r["error"]) for r in rows if "error" in r]
    if errors:
        out.insert(0, f"**{len(errors)} runs: |error| at {REPORT_SEQ} tokens per row median "
                      f"{statistics.median(errors):.1%}, worst {max(errors):.1%}**\n")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="comma list of presets, or all")
    parser.add_argument("--methods", default="lora", help=f"comma list, or all ({','.join(METHODS)})")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--table", type=Path, help="print the table of a JSONL file and stop")
    args = parser.parse_args()
    if args.table:
        print(table([rescored(json.loads(line)) for line in args.table.read_text().splitlines() if line.strip()]))
        return 0
    models = presets() if args.models == "all" else args.models.split(",")
    methods = METHODS if args.methods == "all" else tuple(args.methods.split(","))
    cases = [({"model": p, "method": m}, lambda p=p, m=m: audit(p, m, args.rank)) for p in models for m in methods]
    print(table(run_rows(cases, args.out)))
    return 0


def run_rows(cases, out: Path | None) -> list[dict]:
    """Each (identity, measure) case's row, printed and appended to `out` as it finishes; a case
    that raises records its error instead, so one architecture's failure does not lose the others'."""
    rows = []
    for identity, measure_case in cases:
        try:
            row = measure_case()
        except Exception as err:  # noqa: BLE001 - record and go on
            row = {**identity, "message": f"{type(err).__name__}: {err}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
