"""Recipes: one TOML file holds everything needed to reproduce a fine-tune.

Reading is strict, because a typo that is silently ignored trains the wrong thing for hours: an
unknown key, a wrong type or a value out of range is one line naming the key and its line
(`train.lr: expected a number, got "fast" (line 12)`). Reading never runs code: methods are ids,
never import paths, and `trust_remote_code` is only ever what the file says.

Writing produces commented TOML (a short note per key, like torchtune's configs) by hand, since
tomli-w writes no comments and tomlkit is not in the stack. The note of each key is the first
line of its attribute docstring below, so the docs and the file never disagree.

To add a section: write a frozen dataclass whose fields use `_f(...)` and have attribute
docstrings, and add it as a field of `Recipe`. Parsing, validation and writing follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.files import check_regular
from peft_advisor.core.limits import (
    MAX_ADAPTER_MB,
    MAX_ALPHA,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_GPUS_PER_NODE,
    MAX_NODES,
    MAX_RANK,
    MAX_RECIPE_BYTES,
    MAX_SEQ_LEN,
    MAX_STEPS,
    MAX_VRAM_GIB,
)
from peft_advisor.core.recipe_fields import (  # noqa: F401 (did_you_mean is re-exported)
    TARGET_PRESETS,
    _Bad,
    _PARSERS,
    _as_columns,
    _as_gpu_ids,
    _as_split,
    _as_targets,
    _as_template,
    _check_choice,
    _check_range,
    _f,
    _show,
    did_you_mean,
)
from peft_advisor.core.techniques import OPTIMIZERS
from peft_advisor.core.toml_text import fmt_float, toml_str, toml_value  # noqa: F401 (re-exported)

VERSION = 1
DTYPES = ("bfloat16", "float16", "float32")
DATA_FORMATS = ("auto", "instruction", "chat", "sharegpt", "prompt_completion", "text")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")  # as core.distributed.STRATEGIES (not imported: that pulls in the estimator)
MIXED_PRECISION = ("no", "bf16", "fp16")
LAUNCHERS = ("torchrun", "accelerate")
BACKENDS = ("auto", "nccl", "gloo")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ZERO_OFFLOADS = ("none", "optimizer", "optimizer+params")  # as core.distributed.OFFLOADS



def methods() -> tuple[str, ...]:
    """The method ids: the catalog's single list (data/methods.toml)."""
    from peft_advisor.core.catalog import METHOD_IDS

    return METHOD_IDS


def default_lr(method: str) -> float:
    """The method's starting learning rate, from the catalog (peft's method_comparison defaults)."""
    from peft_advisor.core.catalog import default_lr as catalog_lr

    return catalog_lr(method)


# ---------------------------------------------------------------- the schema


@dataclass(frozen=True)
class ModelSection:
    """[model] which base model to load, and how"""

    id: str = _f("demo", nonempty=True)
    """"demo" (embedded SmolLM2-135M-Instruct), a preset id, a local folder or a Hub id"""
    dtype: str = _f("bfloat16", choices=DTYPES)
    """bfloat16 | float16 | float32; the trainer uses float32 on CPU"""
    load_in_4bit: bool = _f(False)
    """NF4 4-bit base weights: qlora only (set automatically for qlora; needs CUDA)"""
    trust_remote_code: bool = _f(False)
    """run Python code shipped with the model; only for repos you trust"""


@dataclass(frozen=True)
class MethodSection:
    """[method] the fine-tuning method; each method reads only its own keys"""

    name: str = _f("lora", choices=methods)
    """a method id: full, lora, rslora, dora, loraplus, vera, galore, qlora, oft, lokr, loha, ia3, miss, c3a, shira, lorafa, pissa, olora"""
    rank: int = _f(16, ge=1, le=MAX_RANK)
    """LoRA-family rank; higher: better fit, more memory, larger adapter"""
    alpha: int = _f(32, ge=1, le=MAX_ALPHA)
    """LoRA scale numerator: scale = alpha/rank (alpha/sqrt(rank) for rslora)"""
    dropout: float = _f(0.0, ge=0, lt=1)
    """dropout on the adapter's input; 0 is fastest, 0.05-0.1 helps on small data"""
    targets: str | tuple[str, ...] = _f("all-linear", parse=_as_targets)
    """"all-linear" | "attention" | "mlp" | ["q_proj", ...]; more: better fit, more memory"""
    loraplus_lr_ratio: float = _f(16.0, ge=1)
    """loraplus: B matrices learn this many times faster than A"""
    vera_rank: int = _f(256, ge=1, le=MAX_RANK)
    """vera: rank of the shared frozen random projections"""
    vera_d_initial: float = _f(0.1, gt=0)
    """vera: initial value of the trainable scaling vector d"""
    vera_save_projection: bool = _f(True)
    """vera: store the projections in the adapter (larger file, reload needs no seed)"""
    galore_rank: int = _f(128, ge=1, le=MAX_RANK)
    """galore: rank of the gradient projection; higher: closer to AdamW, more memory"""
    galore_update_proj_gap: int = _f(200, ge=1)
    """galore: steps between SVDs of the gradients (each SVD costs time)"""
    galore_scale: float = _f(0.25, gt=0)
    """galore: multiplier on the projected update (acts like an lr factor)"""
    galore_layerwise: bool = _f(False)
    """galore: update each layer during backward; less memory, needs train.grad_accum = 1"""
    galore_8bit: bool = _f(False)
    """galore: 8-bit optimizer states; less memory, needs CUDA"""
    oft_block_size: int = _f(32, ge=1, le=MAX_RANK)
    """oft: size of each orthogonal block (peft picks the nearest divisor of the layer's width)"""
    lokr_factor: int = _f(-1, ge=-1)
    """lokr: Kronecker decompose_factor; -1 = near the square root of each dimension"""
    c3a_block_size: int = _f(64, ge=1, le=MAX_RANK)
    """c3a: circulant block size; must divide every target's input and output width"""


@dataclass(frozen=True)
class DataSection:
    """[data] the training data and how it becomes tokens"""

    path: str = _f("demo", nonempty=True)
    """"demo" (shipped arithmetic problems), a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a Hub id"""
    format: str = _f("auto", choices=DATA_FORMATS)
    """auto | instruction | chat | sharegpt | prompt_completion | text"""
    prompt_template: str = _f("", parse=_as_template)
    """optional, e.g. "Question: {instruction}\\nAnswer:"; plain {column} fields only"""
    config: str = _f("")
    """a Hub dataset's configuration (subset), or a subfolder of a save_to_disk folder; "" = none"""
    split: str = _f("")
    """the split trained on; "" = train (eval rows: a validation/test/eval split, else eval_split)"""
    columns: str = _f("", parse=_as_columns)
    """your columns as the format's fields: {instruction = "question", output = "answer"}; "" = as named"""
    eval_split: float | int = _f(0.1, parse=_as_split)
    """rows held out for eval: a fraction in [0, 0.5) or a row count"""
    max_seq_len: int = _f(512, ge=1, le=MAX_SEQ_LEN)
    """tokens per example, longer ones are truncated; memory grows with it"""
    packing: bool = _f(False)
    """pack short examples into full-length rows: fewer pad tokens, faster"""


@dataclass(frozen=True)
class TrainSection:
    """[train] the optimisation loop"""

    max_steps: int = _f(200, ge=0, le=MAX_STEPS)
    """optimizer steps; 0 = run train.epochs instead"""
    epochs: float = _f(1.0, ge=0, le=MAX_EPOCHS)
    """passes over the data, used when max_steps = 0"""
    micro_batch: int = _f(4, ge=1, le=MAX_BATCH)
    """examples per forward pass; memory grows with it"""
    grad_accum: int = _f(1, ge=1, le=MAX_BATCH)
    """micro-batches per optimizer step: effective batch = micro_batch * grad_accum"""
    lr: float = _f(2e-4, gt=0)
    """peak learning rate"""
    lr_scheduler: str = _f("cosine", choices=SCHEDULERS)
    """linear | cosine | constant | constant_with_warmup"""
    warmup_ratio: float = _f(0.03, ge=0, lt=1)
    """fraction of the steps spent warming the learning rate up"""
    weight_decay: float = _f(0.0, ge=0)
    """AdamW weight decay"""
    max_grad_norm: float = _f(1.0, ge=0)
    """gradient clipping norm; 0 = no clipping"""
    grad_ckpt: bool = _f(False)
    """recompute activations in backward: much less memory, ~30% slower"""
    grad_ckpt_layers: int = _f(0, ge=0, le=10_000)
    """with grad_ckpt: blocks checkpointed, from the first (the rest keep activations: faster); 0 = all"""
    seed: int = _f(42, ge=0, le=2**32 - 1)
    """random seed for data order and adapter init"""
    eval_every: int = _f(50, ge=0, le=MAX_STEPS)
    """steps between evals; 0 = only at the end"""
    baseline_eval_rows: int = _f(64, ge=0)
    """eval rows scored before step 1 (the base model's loss, to compare); 0 = no baseline"""
    save_every: int = _f(100, ge=0, le=MAX_STEPS)
    """steps between checkpoints; 0 = only at the end"""
    log_every: int = _f(1, ge=1, le=MAX_STEPS)
    """steps between step events"""
    fused_loss: bool = _f(False)
    """loss without the whole vocabulary's logits (Liger on CUDA, else chunked); less memory"""
    liger_kernels: bool = _f(False)
    """Liger's RMSNorm/SwiGLU/RoPE kernels (CUDA; pip install 'peft-advisor[fast]')"""
    offload_activations: bool = _f(False)
    """keep activations saved for backward in pinned CPU memory; less GPU memory, slower"""
    optimizer: str = _f("adamw", choices=OPTIMIZERS)
    """adamw | adamw_8bit | paged_adamw_8bit | paged_adamw (the last three: bitsandbytes, CUDA)"""


@dataclass(frozen=True)
class OutputSection:
    """[output] where the run goes"""

    dir: str = _f("runs/demo-lora", nonempty=True)
    """run folder: checkpoints, adapter, events.jsonl, train.log"""
    report_to: str = _f("none", choices=REPORT_TO)
    """none | tensorboard | wandb | mlflow"""


@dataclass(frozen=True)
class BudgetSection:
    """[budget] what the recipe was advised for (informational)"""

    vram_gib: float = _f(0.0, ge=0, le=MAX_VRAM_GIB)
    """GPU memory budget in GiB; 0 = not set"""
    adapter_mb: float = _f(0.0, ge=0, le=MAX_ADAPTER_MB)
    """adapter size budget in MB; 0 = no limit"""
    priority: str = _f("quality")
    """what the advice favoured"""
    gpu: str = _f("")
    """the GPU it was advised for"""


@dataclass(frozen=True)
class EstimateSection:
    """[estimate] the estimate at advice time (informational; 0 = not estimated)"""

    peak_bytes: int = _f(0, ge=0)
    """expected peak memory reserved by PyTorch, CUDA context excluded"""
    adapter_bytes: int = _f(0, ge=0)
    """expected size of the saved adapter (the whole model for full and galore)"""
    trainable_params: int = _f(0, ge=0)
    """parameters the optimizer updates"""


@dataclass(frozen=True)
class DistributedSection:
    """[distributed] several GPUs; only this table changes between a 1-GPU and a many-GPU run"""

    gpus: int = _f(1, ge=1, le=MAX_GPUS_PER_NODE)
    """GPUs (processes) per node; 1 = a plain single-process run"""
    gpu_ids: tuple[int, ...] = _f((), parse=_as_gpu_ids)
    """which GPUs of this node, e.g. [0, 1] (sets CUDA_VISIBLE_DEVICES); [] = the first `gpus`"""
    strategy: str = _f("ddp", choices=STRATEGIES)
    """ddp (a full copy per GPU) | fsdp (all sharded per decoder block) | zero2 | zero3 (DeepSpeed ZeRO)"""
    zero_offload: str = _f("none", choices=ZERO_OFFLOADS)
    """none | optimizer | optimizer+params (zero3 only): what DeepSpeed keeps in CPU RAM"""
    mixed_precision: str = _f("no", choices=MIXED_PRECISION)
    """no (pure model.dtype, what the estimate assumes) | bf16 | fp16 autocast"""
    launcher: str = _f("torchrun", choices=LAUNCHERS)
    """torchrun | accelerate: the engine that starts one process per GPU"""
    backend: str = _f("auto", choices=BACKENDS)
    """auto (nccl on CUDA, gloo on CPU) | nccl | gloo"""
    nnodes: int = _f(1, ge=1, le=MAX_NODES)
    """machines; each runs the same command with its own node_rank"""
    node_rank: int = _f(0, ge=0)
    """this machine's rank, 0 to nnodes - 1; node 0 holds the run folder"""
    master_addr: str = _f("127.0.0.1", nonempty=True)
    """address of node 0, reachable from every node"""
    master_port: int = _f(29500, ge=0, lt=65536)
    """rendezvous port on node 0; 0 = a free port (one node only)"""
    fsdp_version: int = _f(0, ge=0, lt=3)
    """0 = auto (FSDP2 where the installed torch and accelerate have it, else 1) | 1 | 2"""


def processes_per_node(d: DistributedSection) -> int:
    """Training processes on this node: one per listed GPU id, else `gpus`."""
    return len(d.gpu_ids) or d.gpus


def world_size(d: DistributedSection) -> int:
    """Training processes (GPUs) in the whole run."""
    return processes_per_node(d) * d.nnodes


@dataclass(frozen=True)
class Recipe:
    """A whole recipe. Frozen: change it with `updated(recipe, {"train.lr": 1e-4})`."""

    version: int = VERSION
    model: ModelSection = field(default_factory=ModelSection)
    method: MethodSection = field(default_factory=MethodSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    estimate: EstimateSection = field(default_factory=EstimateSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    @classmethod
    def from_settings(cls, model_id: str, settings, estimate=None, **kwargs) -> Recipe:
        """The recipe for an estimator `Settings`; see `recipe_from_recommendation`."""
        return recipe_from_recommendation(model_id, settings, estimate, **kwargs)

    def to_dict(self) -> dict:
        """Plain JSON-able data, tables as dicts (what `loads` reads, minus the comments)."""
        return {
            "version": self.version,
            **{name: {f.name: _plain(getattr(sec, f.name)) for f in fields(sec)} for name, sec in _sections(self)},
        }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _sections(recipe: Recipe):
    return [(f.name, getattr(recipe, f.name)) for f in fields(recipe) if f.name != "version"]


@cache
def _section_types() -> dict[str, type]:
    import typing

    hints = typing.get_type_hints(Recipe)
    return {f.name: hints[f.name] for f in fields(Recipe) if f.name != "version"}


@cache
def _field_hints(cls) -> dict:
    import typing

    return typing.get_type_hints(cls)


# ---------------------------------------------------------------- problems and line numbers


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: `str()` is the one line shown to the user."""

    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.key}: {self.message}{where}" if self.key else f"{self.message}{where}"


_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


def _norm_key(text: str) -> str:
    return ".".join(part.strip().strip("\"'").strip() for part in text.split("."))


def key_lines(text: str) -> dict[str, int]:
    """The line (1-based) of each table header and `key = ...` in the text.

    tomllib gives no positions, so a small scan is enough for messages: it knows tables, dotted
    keys and quoted keys, and skips the inside of multi-line strings.
    """
    lines: dict[str, int] = {}
    table, in_multi = "", False
    for number, line in enumerate(text.splitlines(), 1):
        was_multi = in_multi
        if (line.count('"""') + line.count("'''")) % 2:
            in_multi = not in_multi
        if was_multi:
            continue
        header = _HEADER_RE.match(line)
        if header:
            table = _norm_key(header.group(1))
            lines.setdefault(table, number)
        elif "=" in line and not line.lstrip().startswith("#"):
            key = _norm_key(line.split("=", 1)[0])
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


def _line_of(lines: dict[str, int], key: str) -> int | None:
    """The key's own line, else the line of the nearest enclosing table (inline tables)."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


# ---------------------------------------------------------------- parsing


def _parse_field(f, hints, value):
    parse = f.metadata.get("parse") or _PARSERS[hints[f.name]]
    value = parse(value)
    if f.metadata.get("choices") is not None:
        _check_choice(value, f.metadata)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        _check_range(value, f.metadata)
    return value


def _build_section(cls, name: str, raw: dict, problems: list, lines: dict):
    hints = _field_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        path = f"{name}.{key}"
        if key not in by_name:
            message = f"unknown key{did_you_mean(key, by_name)}"
            problems.append(Problem(path, message, _line_of(lines, path)))
            continue
        try:
            values[key] = _parse_field(by_name[key], hints, value)
        except _Bad as bad:
            problems.append(Problem(path, str(bad), _line_of(lines, path)))
    return cls(**values)


def _build(doc: dict, lines: dict) -> tuple[Recipe, list[Problem]]:
    """Every problem in a parsed document, and the recipe made of its good values."""
    problems: list[Problem] = []
    sections = _section_types()
    built = {}
    for key, raw in doc.items():
        if key == "version":
            if isinstance(raw, bool) or not isinstance(raw, int):
                problems.append(Problem(key, f"expected an integer, got {_show(raw)}", _line_of(lines, key)))
            elif raw != VERSION:
                message = f"unsupported recipe version {raw}; this peft-advisor reads version {VERSION}"
                problems.append(Problem(key, message, _line_of(lines, key)))
        elif key not in sections:
            what = "table" if isinstance(raw, dict) else "key"
            problems.append(Problem(key, f"unknown {what}{did_you_mean(key, sections)}", _line_of(lines, key)))
        elif not isinstance(raw, dict):
            problems.append(Problem(key, f"expected a table, got {_show(raw)}", _line_of(lines, key)))
        else:
            built[key] = _build_section(sections[key], key, raw, problems, lines)
    recipe = _normalise(Recipe(**built))
    if not problems:
        problems = [Problem(k, m, _line_of(lines, k)) for k, m in _cross_checks(recipe)]
    problems.sort(key=lambda p: p.line or 10**9)
    return recipe, problems


def _normalise(recipe: Recipe) -> Recipe:
    """QLoRA is LoRA on a 4-bit base: its recipes always say so, whatever the file said."""
    if recipe.method.name == "qlora" and not recipe.model.load_in_4bit:
        recipe = replace(recipe, model=replace(recipe.model, load_in_4bit=True))
    return recipe


def _cross_checks(recipe: Recipe) -> list[tuple[str, str]]:
    """Rules that tie keys of different sections together, as (key, message)."""
    m, t = recipe.method, recipe.train
    out = []
    if recipe.model.load_in_4bit and m.name != "qlora":
        out.append(("model.load_in_4bit", f'true only for method "qlora" (method.name is {_show(m.name)})'))
    if m.name == "galore" and m.galore_layerwise and t.grad_accum != 1:
        out.append(("train.grad_accum", f"must be 1 with method.galore_layerwise = true, got {t.grad_accum}"))
    if t.max_steps == 0 and t.epochs <= 0:
        out.append(("train.epochs", "must be > 0 when train.max_steps = 0"))
    return out + _technique_checks(recipe) + _distributed_checks(recipe)


def _technique_checks(recipe: Recipe) -> list[tuple[str, str]]:
    """The [train] techniques that cannot run with this method, these targets or this [distributed]."""
    from peft_advisor.core.techniques import checkpointing_refusal, recipe_refusals

    m, t, d = recipe.method, recipe.train, recipe.distributed
    ckpt = checkpointing_refusal(t.grad_ckpt, t.grad_ckpt_layers, d.strategy, world_size(d))
    return recipe_refusals(m.name, m.targets, t.optimizer, t.fused_loss, d.strategy, world_size(d),
                           qlora=m.name == "qlora") + ([ckpt] if ckpt else [])


def _distributed_checks(recipe: Recipe) -> list[tuple[str, str]]:
    """What cannot run on several GPUs, and a [distributed] table that contradicts itself."""
    d, m = recipe.distributed, recipe.method
    out = []
    if d.gpu_ids and d.gpus not in (1, len(d.gpu_ids)):
        out.append(("distributed.gpus", f"is {d.gpus} but distributed.gpu_ids lists {len(d.gpu_ids)} GPUs; set one of them"))
    if d.node_rank >= d.nnodes:
        out.append(("distributed.node_rank", f"must be < distributed.nnodes = {d.nnodes}, got {d.node_rank}"))
    if d.nnodes > 1 and d.master_addr in LOOPBACK:
        out.append(("distributed.master_addr", f"must be node 0's address, reachable from all {d.nnodes} nodes"))
    if d.nnodes > 1 and d.master_port == 0:
        out.append(("distributed.master_port", "must be a fixed port when nnodes > 1 (every node must use the same)"))
    from peft_advisor.core.distributed import offload_problem  # the one rule, shared with the advice

    problem = offload_problem(d.strategy, d.zero_offload)
    if problem:
        out.append(("distributed.zero_offload", problem.removeprefix("= ")))
    if world_size(d) == 1 or m.name not in methods():
        return out
    from peft_advisor.core.catalog import method_info, zero_refusal  # the per-method facts: data/methods.toml

    info = method_info(m.name)
    for switch in (s for s in info.single_gpu_switches if getattr(m, s, False)):
        out.append((f"method.{switch}", f"{m.name} with {switch} = true runs on one GPU only (transformers "
                    "supports it with neither DDP nor FSDP); set it to false or distributed.gpus = 1"))
    if d.strategy == "fsdp" and not info.fsdp:
        out.append(("distributed.strategy", f'method "{m.name}" {info.fsdp_refusal}; use "ddp"'))
    zero = zero_refusal(m.name, d.strategy)
    if zero:
        out.append(("distributed.strategy", zero))
    if d.strategy == "fsdp" and info.fsdp_version and d.fsdp_version not in (0, info.fsdp_version):
        out.append(("distributed.fsdp_version", f"{info.name} with FSDP runs on FSDP{info.fsdp_version} only (FSDP2 "
                    f"drops bitsandbytes' 4-bit metadata when it gathers the weights); set it to 0 (auto) or "
                    f"{info.fsdp_version}"))
    return out


def _syntax_problem(err) -> Problem:
    message = re.sub(r"\(at line (\d+), column (\d+)\)", r"(line \1, column \2)", str(err))
    return Problem("", f"invalid TOML: {message}")


def toml_loads(text: str) -> dict:
    """tomllib.loads, where nesting too deep for Python's stack is one more ValueError: tomllib
    parses arrays and inline tables recursively, so `x = [[[[...` 100,000 deep raised
    RecursionError past every caller's `except ValueError` (validate showed a traceback)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def problems(text: str) -> list[Problem]:
    """Every problem in a recipe's text, in file order (for the TUI to show at once)."""
    try:
        doc = toml_loads(text)
    except ValueError as err:  # TOMLDecodeError is a ValueError
        return [_syntax_problem(err)]
    return _build(doc, key_lines(text))[1]


def loads(text: str, source: str = "recipe.toml", allow_empty: bool = True) -> Recipe:
    """Parse and check a recipe; the first problem becomes a one-line UserError(BAD_RECIPE).
    Keys left out take their defaults; a file with no key at all is refused (`allow_empty=False`):
    an empty file is a failed write or the wrong path far more often than a wish for all defaults."""
    try:
        doc = toml_loads(text)
    except ValueError as err:
        raise UserError(f"{source}: {_syntax_problem(err)}", ExitCode.BAD_RECIPE) from None
    if not doc and not allow_empty:
        raise UserError(f"{source}: empty recipe (no keys); write one with peft-advisor export -o FILE",
                        ExitCode.BAD_RECIPE)
    recipe, found = _build(doc, key_lines(text))
    if found:
        raise UserError(f"{source}: {found[0]}", ExitCode.BAD_RECIPE)
    return recipe


def load(path) -> Recipe:
    """Read a recipe file: a regular file of at most MAX_RECIPE_BYTES, checked before it is opened,
    so a FIFO (which would block `validate` and `train` for ever) or a huge file is one line at once."""
    path = Path(path)
    try:
        check_regular(path, MAX_RECIPE_BYTES, ExitCode.BAD_RECIPE, "recipe file")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such recipe file", ExitCode.BAD_RECIPE) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text", ExitCode.BAD_RECIPE) from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}", ExitCode.BAD_RECIPE) from None
    return loads(text, source=str(path), allow_empty=False)


def remote_code_warning(recipe: Recipe, source) -> str | None:
    """What `validate` says of a recipe that turns `trust_remote_code` on: the file is valid, but
    whoever shared it decides what Python code a `train` of it runs, so the reader is told."""
    if not recipe.model.trust_remote_code:
        return None
    return (f"{source}: model.trust_remote_code = true runs Python code shipped with the model "
            f"({recipe.model.id}); train needs --trust-remote-code to run it")


def check_remote_code(recipe: Recipe, source, allowed: bool) -> None:
    """Refuse (BAD_RECIPE) to start a recipe that turns `trust_remote_code` on unless the person at
    the keyboard said so (`--trust-remote-code`): a recipe may come from anyone, and a recipe
    never runs code by itself. The flag only consents; it turns nothing on."""
    if recipe.model.trust_remote_code and not allowed:
        raise UserError(f"{source}: model.trust_remote_code = true would run Python code shipped with the model "
                        f"({recipe.model.id}); pass --trust-remote-code if you trust it", ExitCode.BAD_RECIPE)


def validate(recipe: Recipe) -> list[str]:
    """Problems of a recipe built in code (TUI edits, flags): field checks, then cross-field rules."""
    return [str(p) for p in _build(recipe.to_dict(), {})[1]]


def updated(recipe: Recipe, changes: dict) -> Recipe:
    """A copy with dotted keys changed (`{"method.rank": 8}`), each checked like in a file."""
    doc = recipe.to_dict()
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if key == "version":
            doc[key] = value  # checked by _build like a file's
            continue
        if section in doc and not name:
            example = next(iter(doc[section]), "")
            raise UserError(f"{key}: a table, not a key; set one of its keys, e.g. {section}.{example}",
                            ExitCode.BAD_RECIPE)
        if section not in doc:
            sections = [k for k in doc if k != "version"]
            raise UserError(f"{key}: unknown key{did_you_mean(section, sections)}", ExitCode.BAD_RECIPE)
        doc[section][name] = value
    new, found = _build(doc, {})
    if found:
        raise UserError(str(found[0]), ExitCode.BAD_RECIPE)
    return new


# ---------------------------------------------------------------- writing


@cache
def _notes(cls) -> tuple[str, dict[str, str]]:
    """The class docstring and the first line of each field's attribute docstring."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return (cls.__doc__ or "").strip(), {}
    body = tree.body[0].body
    notes = {}
    for node, nxt in zip(body, body[1:]):
        doc = getattr(getattr(nxt, "value", None), "value", None)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(doc, str):
            notes[node.target.id] = doc.strip().splitlines()[0]
    return (cls.__doc__ or "").strip().splitlines()[0], notes


def _table_lines(name: str, section) -> list[str]:
    title, notes = _notes(type(section))
    pairs = [(f"{f.name} = {toml_value(getattr(section, f.name))}", notes.get(f.name, "")) for f in fields(section)]
    width = min(max(len(kv) for kv, _ in pairs), 36)
    rows = [f"{kv:<{width}}  # {note}".rstrip() if note else kv for kv, note in pairs]
    comment = title.removeprefix(f"[{name}]").strip()
    return [f"[{name}]" + (f"  # {comment}" if comment else ""), *rows]


def dumps(recipe: Recipe, header: str = "") -> str:
    """Commented TOML; `loads(dumps(r)) == r`. `header` becomes comment lines at the top."""
    out = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header.strip() else []
    out.append("# peft-advisor recipe. Check: peft-advisor validate FILE   Run: peft-advisor train FILE")
    out += ["", f"version = {recipe.version}"]
    for name, section in _sections(recipe):
        out += ["", *_table_lines(name, section)]
    return "\n".join(out) + "\n"


def _not_a_recipe(path: Path) -> str | None:
    """Why the file at `path` is not a recipe, or None when `--force` may replace it: an empty file,
    or TOML with a `version` key or at least one recipe table (even with bad values or a typo'd
    table: it is still the user's recipe). `export --force -o model.gguf` once replaced a model's
    weights; the name is not trusted either way, only the content."""
    try:
        if not path.is_file():
            return "not a regular file"
        if path.stat().st_size > MAX_RECIPE_BYTES:
            return f"larger than {MAX_RECIPE_BYTES >> 20} MiB"
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        return f"cannot read it: {err.strerror}"
    except UnicodeDecodeError:
        return "not UTF-8 text"
    if not text.strip():
        return None
    try:
        doc = toml_loads(text)
    except ValueError:
        return "not valid TOML"
    if "version" in doc or any(key in _section_types() for key in doc):
        return None
    return "no recipe table such as [model] or [method]"


def save(recipe: Recipe, path, force: bool = False, header: str = "") -> Path:
    """Write atomically (temp file in the same folder, then os.replace); never clobber unasked, and
    even with `force` replace only a recipe (see `_not_a_recipe`)."""
    if not str(path).strip():
        raise UserError("no recipe file name given", ExitCode.USAGE)
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name for the recipe", ExitCode.USAGE)
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to overwrite)", ExitCode.EXISTS)
    why = _not_a_recipe(path) if path.exists() else None
    if why:
        raise UserError(f"{path}: exists and is not a recipe ({why}); --force replaces only recipes: "
                        "remove it or choose another file", ExitCode.EXISTS)
    from peft_advisor.core.run_folder import atomic_write_text

    text = dumps(recipe, header=header)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror or err}", ExitCode.USAGE) from None
    return path


# ---------------------------------------------------------------- from an estimate, and back




def default_output_dir(model_id: str, method: str) -> str:
    """`runs/<model>-<method>`, the model's last path part in lower case (Qwen/Qwen2.5-7B -> qwen2.5-7b)."""
    slug = re.sub(r"[^a-z0-9.]+", "-", model_id.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-.")
    return f"runs/{slug or 'model'}-{method}"


def recipe_from_recommendation(
    model_id: str,
    settings,
    estimate=None,
    *,
    vram_gib: float = 0.0,
    adapter_mb: float = 0.0,
    priority: str = "quality",
    gpu: str = "",
    output_dir: str | None = None,
    data_path: str = "demo",
    lr: float | None = None,
    max_steps: int = 200,
    gpus: int = 1,
    strategy: str = "ddp",
) -> Recipe:
    """A recipe for an `estimate.Settings` (and its `Estimate`), duck-typed so this module does
    not depend on the estimator. Alpha follows the catalog's one rule (`catalog.alpha_for`: 2 ×
    rank, rank for rsLoRA). `gpus` > 1 fills the [distributed] table, the only thing that differs
    between a 1-GPU and a many-GPU recipe."""
    from peft_advisor.core.catalog import alpha_for

    name = settings.method
    known = name in methods()  # an unknown one is named by `validate` below, as a recipe problem
    targets = settings.targets
    if isinstance(targets, str) and targets not in TARGET_PRESETS:
        targets = (targets,)
    recipe = Recipe(
        model=ModelSection(id=model_id),
        method=MethodSection(
            name=name,
            rank=settings.rank,
            alpha=alpha_for(name, settings.rank) if known else 2 * settings.rank,
            targets=tuple(targets) if not isinstance(targets, str) else targets,
            vera_rank=settings.vera_rank,
            vera_save_projection=settings.vera_save_projection,
            galore_rank=settings.galore_rank,
            galore_layerwise=settings.galore_layerwise,
            galore_8bit=settings.galore_8bit,
        ),
        data=DataSection(path=data_path, max_seq_len=settings.seq_len),
        train=TrainSection(
            max_steps=max_steps,
            micro_batch=settings.batch_size,
            grad_accum=settings.grad_accum,
            grad_ckpt=settings.grad_ckpt,
            grad_ckpt_layers=getattr(settings, "grad_ckpt_layers", 0) if settings.grad_ckpt else 0,
            lr=lr if lr is not None else default_lr(name) if known else 2e-4,
            **technique_keys(settings),
        ),
        output=OutputSection(dir=output_dir or default_output_dir(model_id, name)),
        budget=BudgetSection(vram_gib=float(vram_gib), adapter_mb=float(adapter_mb), priority=priority, gpu=gpu),
        estimate=EstimateSection(
            peak_bytes=int(getattr(estimate, "peak_bytes", 0)),
            adapter_bytes=int(getattr(estimate, "adapter_bytes", 0)),
            trainable_params=int(getattr(estimate, "trainable_params", 0)),
        ),
        distributed=DistributedSection(gpus=gpus, strategy=strategy) if gpus > 1 else DistributedSection(),
    )
    recipe = _normalise(recipe)
    found = validate(recipe)
    if found:
        raise UserError(found[0], ExitCode.BAD_RECIPE)
    return recipe


TECHNIQUE_KEYS = {"fused_loss": False, "liger_kernels": False, "offload_activations": False, "optimizer": "adamw"}
"""The [train] keys of the memory-saving techniques, named as `estimate.Settings` names them, with
their defaults (issue 15)."""


def technique_keys(settings=None) -> dict:
    """The techniques of a `Settings` (None: all off) as [train] keys."""
    return {key: getattr(settings, key, default) for key, default in TECHNIQUE_KEYS.items()}


def settings_from_recipe(recipe: Recipe):
    """The estimator's `Settings` for a recipe (imports core.estimate, which must exist). The
    [train] techniques go along where `Settings` has a field of the same name."""

    from peft_advisor.core.estimate import Settings

    m, t = recipe.method, recipe.train
    return Settings(
        method=m.name,
        rank=m.rank,
        targets=m.targets,
        batch_size=t.micro_batch,
        seq_len=recipe.data.max_seq_len,
        grad_ckpt=t.grad_ckpt,
        grad_ckpt_layers=t.grad_ckpt_layers,
        grad_accum=t.grad_accum,
        galore_rank=m.galore_rank,
        galore_layerwise=m.galore_layerwise,
        galore_8bit=m.galore_8bit,
        vera_rank=m.vera_rank,
        vera_save_projection=m.vera_save_projection,
        oft_block_size=m.oft_block_size,
        lokr_factor=m.lokr_factor,
        c3a_block_size=m.c3a_block_size,
        **{key: getattr(t, key) for key in TECHNIQUE_KEYS},
    )
