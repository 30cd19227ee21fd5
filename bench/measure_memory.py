"""Measure peak GPU memory and speed of every method on real architectures (random weights).

Usage (on a machine with an NVIDIA GPU):
    python bench/measure_memory.py --cases calib --out bench/results/h200_memory.jsonl [--budget-s 540]

Each case builds a real architecture from its preset config directly on the GPU with random
bf16 weights (memory and speed do not depend on weight values), applies the method exactly as
the trainer does (peft LoRA/DoRA/rsLoRA/VeRA with fp32 adapters, LoRA+ optimizer, galore-torch,
bitsandbytes NF4 + prepare_model_for_kbit_training), runs a few optimizer steps with fused
torch AdamW (transformers' default on torch >= 2.8) and records:
    peak_reserved_bytes  torch.cuda.max_memory_reserved() over the steps (what the estimate predicts)
    peak_allocated_bytes torch.cuda.max_memory_allocated()
    static_bytes         allocated between steps (weights + adapters + optimizer states)
    nvml_used_bytes      NVML's used memory for the device after the steps (context + reserved)
    context_bytes        nvml_used - reserved at that moment (the CUDA context and libraries)
    tokens_per_s         over the timed steps
Results are appended one JSON line per case, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peft_advisor.core.catalog import trains_all_weights  # noqa: E402
from peft_advisor.core.model_spec import attention_implementation, preset_config  # noqa: E402

PLAIN_LORA_VARIANTS = ("lora", "rslora", "dora", "loraplus", "qlora")
"""The LoRA variants this independent reference loop builds with peft itself (not through the
trainer's builders), so that it stays a check of them."""


def target_names(model_type: str, targets: str) -> list[str]:
    if model_type == "phi3":
        attn, mlp = ["qkv_proj", "o_proj"], ["gate_up_proj", "down_proj"]
    else:
        attn, mlp = ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]
    return {"all-linear": attn + mlp, "attention": attn, "mlp": mlp, "qv": [attn[0], attn[2]] if model_type != "phi3" else attn}[targets]


def build_base(cfg_dict: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(cfg_dict)
    cfg.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg)
    attn = attention_implementation(getattr(config.get_text_config(), "model_type", None)) or "sdpa"  # as the trainer
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
    model.config.use_cache = False
    return model


def quantize_nf4(model):
    """Swap decoder nn.Linear for bitsandbytes NF4 (double quant, bf16 compute), as
    BitsAndBytesConfig(load_in_4bit=True, ...) does at load time; lm_head stays unquantised."""
    import bitsandbytes as bnb

    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name != "lm_head":
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=True,
                                      quant_type="nf4", device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False,
                                             compress_statistics=True, quant_type="nf4").to("cuda")
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q)
                del child
    model.is_loaded_in_4bit = True
    gc.collect()
    torch.cuda.empty_cache()
    return model


def apply_method(model, case):
    """Returns (model, optimizer). Mirrors peft_advisor/train/methods.py."""
    method, gc_on = case["method"], case["grad_ckpt"]
    lr = 1e-4
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = quantize_nf4(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_on,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gc_on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not trains_all_weights(method):
            model.enable_input_require_grads()
    targets = target_names(model.config.model_type, case["targets"])
    if method in PLAIN_LORA_VARIANTS:
        from peft import LoraConfig, get_peft_model

        r = case["rank"]
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets,
                                                 use_rslora=method == "rslora", use_dora=method == "dora",
                                                 task_type="CAUSAL_LM"))
        if method == "loraplus":
            from peft.optimizers import create_loraplus_optimizer

            return model, create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=16.0, fused=True)
        params = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(params, lr=lr, fused=True)
    if method == "vera":
        from peft import VeraConfig, get_peft_model

        model = get_peft_model(model, VeraConfig(r=case.get("vera_rank", 256), target_modules=targets, d_initial=0.1,
                                                 save_projection=True, task_type="CAUSAL_LM"))
        params = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(params, lr=lr, fused=True)
    if method == "full":
        return model, torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    if method == "galore":
        return model, galore_optimizer(model, case, targets, lr)
    raise ValueError(method)


def galore_optimizer(model, case, targets, lr):
    """As transformers' Trainer builds it for optim='galore_adamw[_8bit][_layerwise]'."""
    from galore_torch import GaLoreAdamW, GaLoreAdamW8bit

    cls = GaLoreAdamW8bit if case.get("galore_8bit") else GaLoreAdamW
    galore, other = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name.endswith(t) for t in targets):
            galore.append(module.weight)
    ids = {id(p) for p in galore}
    other = [p for p in model.parameters() if id(p) not in ids]
    kw = dict(rank=case.get("galore_rank", 128), update_proj_gap=200, scale=0.25, proj_type="std")
    if not case.get("galore_layerwise"):
        return cls([{"params": other}, {"params": galore, **kw}], lr=lr)
    opts = {}
    for p in model.parameters():
        group = [{"params": [p], **kw}] if id(p) in ids else [{"params": [p]}]
        opts[p] = cls(group, lr=lr)

    def hook(p):
        if p.grad is not None:
            opts[p].step()
            opts[p].zero_grad()

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(hook)
    return None  # steps happen in the backward hooks


def nvml_used() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        return int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
    except Exception:  # noqa: BLE001 - NVML is optional for the measurement
        return None


def run_case(case: dict, warm: int = 2, timed: int = 3) -> dict:
    cfg = preset_config(case["model"])
    torch.manual_seed(0)
    model = build_base(cfg)
    model, opt = apply_method(model, case)
    model.train()
    B, S = case["batch"], case["seq"]
    vocab = model.config.vocab_size if hasattr(model.config, "vocab_size") else cfg["vocab_size"]
    ids = torch.randint(0, vocab, (B, S), device="cuda")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    weights_alloc = torch.cuda.memory_allocated()
    t0 = None
    static = fwd_saved = None
    for step in range(warm + timed):
        if step == warm:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        before = torch.cuda.memory_allocated()
        loss = model(input_ids=ids, labels=ids).loss
        if step == 1:
            fwd_saved = torch.cuda.memory_allocated() - before
        loss.backward()
        del loss
        if opt is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if step == 1:
            static = torch.cuda.memory_allocated()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    reserved_now = torch.cuda.memory_reserved()
    used = nvml_used()
    out = dict(case, ok=True, trainable_params=trainable,
               peak_reserved_bytes=torch.cuda.max_memory_reserved(),
               peak_allocated_bytes=torch.cuda.max_memory_allocated(),
               weights_alloc_bytes=weights_alloc, static_bytes=static, fwd_saved_bytes=fwd_saved,
               nvml_used_bytes=used, context_bytes=(used - reserved_now) if used else None,
               tokens_per_s=B * S * timed / elapsed, step_s=elapsed / timed)
    del model, opt, ids
    return out


def cases_calib() -> list[dict]:
    methods = ["full", "lora", "rslora", "dora", "loraplus", "vera", "galore", "qlora"]
    base = dict(rank=16, targets="all-linear", batch=4, seq=512, grad_ckpt=False)
    out = []
    for model in ("qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"):
        for m in methods:
            if m == "galore" and model == "llama-3.1-8b":
                continue  # the first step's SVDs of 8B take minutes; measured on <= 3B
            out.append(dict(base, model=model, method=m))
    # shapes: sequence, batch, checkpointing, targets, rank
    for model in ("qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b"):
        for m in ("full", "lora", "dora", "qlora", "vera"):
            out.append(dict(base, model=model, method=m, batch=1, seq=2048))
            out.append(dict(base, model=model, method=m, grad_ckpt=True, batch=8, seq=1024))
        out.append(dict(base, model=model, method="lora", targets="attention", rank=64))
        out.append(dict(base, model=model, method="lora", targets="qv", rank=32, batch=4, seq=768))
        out.append(dict(base, model=model, method="galore", galore_layerwise=True))
        out.append(dict(base, model=model, method="galore", galore_8bit=True))
    for m in ("full", "lora", "qlora", "dora"):
        out.append(dict(base, model="llama-3.1-8b", method=m, grad_ckpt=True, batch=2, seq=2048))
    return out


def cases_holdout() -> list[dict]:
    """Architectures and shapes the estimator is NOT tuned on."""
    base = dict(rank=16, targets="all-linear", batch=2, seq=1024, grad_ckpt=False)
    out = []
    for model in ("qwen2.5-1.5b", "qwen3-1.7b", "mistral-7b"):
        for m in ("full", "lora", "dora", "vera", "qlora", "galore"):
            if m == "galore" and model == "mistral-7b":
                continue
            out.append(dict(base, model=model, method=m))
        out.append(dict(base, model=model, method="lora", rank=64, targets="attention", grad_ckpt=True, batch=4, seq=2048))
        out.append(dict(base, model=model, method="qlora", rank=32, grad_ckpt=True, batch=4, seq=2048))
    return out


def measure_and_append(case: dict, out: Path, quiet: bool = False) -> dict:
    try:
        res = run_case(case)
    except Exception as err:  # noqa: BLE001 - record the failure and go on
        res = dict(case, ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
    gc.collect()
    torch.cuda.empty_cache()
    with out.open("a") as f:
        f.write(json.dumps(res) + "\n")
    return res if quiet else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="calib", help="calib | holdout | comma list of 'model:method'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting new cases after this")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N cases (resume a cut-short run)")
    ap.add_argument("--isolate", action="store_true", help="run each case in a fresh process (no leaks between cases)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return measure_and_append(json.loads(args.one), Path(args.out))
    cases = {"calib": cases_calib, "holdout": cases_holdout}[args.cases]()[args.skip:]
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(cases)} cases on {torch.cuda.get_device_name()}", flush=True)
    for i, case in enumerate(cases):
        if time.perf_counter() - start > args.budget_s:
            print(f"budget reached after {i} cases", flush=True)
            break
        case = dict(case, set=args.cases, gpu=torch.cuda.get_device_name(), torch=torch.__version__)
        if args.isolate:
            import subprocess

            before = len(out.read_text().splitlines()) if out.exists() else 0
            subprocess.run([sys.executable, __file__, "--one", json.dumps(case), "--out", str(out)], check=False)
            lines = out.read_text().splitlines() if out.exists() else []
            res = json.loads(lines[-1]) if len(lines) > before else dict(case, ok=False, error="process died")
        else:
            res = measure_and_append(case, out, quiet=True)
        gib = (res.get("peak_reserved_bytes") or 0) / 2**30
        print(f"[{time.perf_counter() - start:6.1f}s] {case['model']:14s} {case['method']:9s} "
              f"b{case['batch']} s{case['seq']} gc={int(case['grad_ckpt'])} -> {gib:7.2f} GiB "
              f"{res.get('tokens_per_s', 0):9.0f} tok/s {res.get('error', '')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
