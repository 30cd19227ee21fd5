"""What the estimator needs to know about a model: its shapes and exact parameter count.

Read from a Hugging Face `config.json` (a preset that ships with the package, a local model
folder, or a config file; a preset's Hub id, or its instruct/base variant's, maps to the preset).
No weights are read, so advice for a 70B model needs no download.

Supported: decoder-only causal LMs of the Llama family of layouts (llama, mistral, qwen2, qwen3,
gemma, gemma2, gemma3 text, phi3). A config of any other `model_type` is refused with a clear
message rather than guessed at: a wrong shape would make every estimate silently wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.limits import MODEL_DIM_CEILINGS
from peft_advisor.core.sources import expand_home


@dataclass(frozen=True)
class Linear:
    """One linear layer inside a decoder block (present once per block)."""

    name: str
    """Module name as peft's `target_modules` sees it, e.g. `q_proj`."""
    d_in: int
    d_out: int
    bias: bool
    group: str
    """`attn` or `mlp`: targets like `attention-only` select by group."""

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass(frozen=True)
class ModelSpec:
    """Shapes and counts of a decoder-only transformer, derived from its config."""

    id: str
    """Preset id, folder or file it came from."""
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool
    linears: tuple[Linear, ...]
    """The linear layers of one decoder block."""
    norm_params_per_layer: int
    """Weights of the norms inside one block (and q/k norms where the model has them)."""
    final_norm_params: int
    max_position_embeddings: int
    hf_id: str | None = None
    """Hugging Face Hub id of the real model, for recipes (presets only)."""
    logit_softcap: bool = False
    """Gemma 2's tanh soft-capping of the logits: two more vocabulary-wide tensors in the loss."""
    qk_norm: bool = False
    """RMSNorm on every head's queries and keys (Qwen3, Gemma 3): each keeps its fp32 input for
    backward, q + kv values per token per block (bench/results/h100_memory_trace.md)."""
    eager_attention: bool = False
    """transformers runs this architecture's attention eagerly (Gemma 2: SDPA cannot soft-cap the
    scores), so autograd keeps whole score matrices, heads x row length per token per block."""
    attn_softcap: bool = False
    """Eager attention soft-caps its scores (Gemma 2's `attn_logit_softcapping`): tanh keeps one more."""

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params_per_layer(self) -> int:
        return sum(lin.params for lin in self.linears)

    @property
    def layer_params(self) -> int:
        return self.linear_params_per_layer + self.norm_params_per_layer

    @property
    def total_params(self) -> int:
        """Exact parameter count, as `sum(p.numel() for p in model.parameters())` gives it."""
        return (
            self.embedding_params
            + self.lm_head_params
            + self.num_layers * self.layer_params
            + self.final_norm_params
        )

    @property
    def linear_names(self) -> tuple[str, ...]:
        return tuple(lin.name for lin in self.linears)

    def linear(self, name: str) -> Linear:
        for lin in self.linears:
            if lin.name == name:
                return lin
        raise KeyError(name)


SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")


def from_hf_config(config: dict, source: str = "config.json") -> ModelSpec:
    """Build a ModelSpec from a parsed `config.json` dict."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: not a JSON object", ExitCode.UNKNOWN_MODEL)
    config = _text_config(config)
    model_type = config.get("model_type")
    if not model_type:
        raise UserError(f"{source}: no 'model_type'; is this a model's config.json?", ExitCode.UNKNOWN_MODEL)
    if model_type not in SUPPORTED_TYPES:
        raise UserError(
            f"{source}: unsupported architecture {model_type!r}; supported: {', '.join(SUPPORTED_TYPES)}",
            ExitCode.UNKNOWN_MODEL,
        )
    try:
        return _build({**_TYPE_DEFAULTS.get(model_type, {}), **config}, model_type, source)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise UserError(f"{source}: missing or invalid field {err}", ExitCode.UNKNOWN_MODEL) from None


# Shape fields a real config may leave out because transformers' config class has a default.
# Gemma 3's multimodal configs rely on these: their `text_config` names only what differs.
_TYPE_DEFAULTS = {
    "gemma3_text": {
        "vocab_size": 262208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
    },
}


def _text_config(config: dict) -> dict:
    """Multimodal Gemma 3 nests the language model under `text_config`; advise for that part."""
    if config.get("model_type") == "gemma3" and isinstance(config.get("text_config"), dict):
        text = dict(config["text_config"])
        if text.get("model_type") in (None, "gemma3"):
            text["model_type"] = "gemma3_text"
        if "vocab_size" in config:
            text.setdefault("vocab_size", config["vocab_size"])
        text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", True))
        text.setdefault("_name_or_path", config.get("_name_or_path"))
        return text
    return config


def _positive(c: dict, key: str) -> int:
    """A shape: a positive integer under its ceiling (core.limits). An absurd one is refused here
    rather than overflowing a float in the estimator."""
    value = c[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key!r} = {_short(value)} (want a positive integer)")
    ceiling = MODEL_DIM_CEILINGS.get(key)
    if ceiling is not None and value > ceiling:
        raise ValueError(f"{key!r} = {_short(value)} is over the ceiling of {ceiling:,} (no real model comes close)")
    return value


def _optional(c: dict, key: str, default: int) -> int:
    """A shape the config may leave out or null (`default` then), checked like `_positive`."""
    return _positive(c, key) if c.get(key) is not None else default


def _short(value) -> str:
    """A value for a one-line message: a 400-digit number is not shown in full."""
    text = repr(value)
    return f"{text[:10]}...({len(text)} digits)" if isinstance(value, int) and len(text) > 20 else text[:40]


def _build(c: dict, model_type: str, source: str) -> ModelSpec:
    h = _positive(c, "hidden_size")
    heads = _positive(c, "num_attention_heads")
    kv = _optional(c, "num_key_value_heads", heads)
    head_dim = _optional(c, "head_dim", h // heads)
    inter = _positive(c, "intermediate_size")
    q_out, kv_out = heads * head_dim, kv * head_dim
    # Where transformers hard-codes biases, the config's flags are ignored, as the model does:
    # Qwen2 always has q/k/v biases (never o_proj), Mistral and Phi-3 never have any, and only
    # Llama reads `mlp_bias`.
    if model_type == "qwen2":
        qkv_bias, o_bias = True, False
    elif model_type in ("mistral", "phi3"):
        qkv_bias = o_bias = False
    else:
        qkv_bias = o_bias = bool(c.get("attention_bias", False))
    mlp_bias = model_type == "llama" and bool(c.get("mlp_bias", False))
    if model_type == "phi3":
        linears = (
            Linear("qkv_proj", h, q_out + 2 * kv_out, False, "attn"),
            Linear("o_proj", q_out, h, False, "attn"),
            Linear("gate_up_proj", h, 2 * inter, False, "mlp"),
            Linear("down_proj", inter, h, False, "mlp"),
        )
    else:
        linears = (
            Linear("q_proj", h, q_out, qkv_bias, "attn"),
            Linear("k_proj", h, kv_out, qkv_bias, "attn"),
            Linear("v_proj", h, kv_out, qkv_bias, "attn"),
            Linear("o_proj", q_out, h, o_bias, "attn"),
            Linear("gate_proj", h, inter, mlp_bias, "mlp"),
            Linear("up_proj", h, inter, mlp_bias, "mlp"),
            Linear("down_proj", inter, h, mlp_bias, "mlp"),
        )
    norms = {"gemma2": 4, "gemma3_text": 4}.get(model_type, 2) * h
    if model_type in ("qwen3", "gemma3_text"):
        norms += 2 * head_dim  # q_norm and k_norm
    tie_default = model_type in ("gemma", "gemma2", "gemma3_text")
    return ModelSpec(
        id=source,
        model_type=model_type,
        num_layers=_positive(c, "num_hidden_layers"),
        hidden_size=h,
        intermediate_size=inter,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=_positive(c, "vocab_size"),
        tie_embeddings=bool(c.get("tie_word_embeddings", tie_default)),
        linears=linears,
        norm_params_per_layer=norms,
        final_norm_params=h,
        max_position_embeddings=_optional(c, "max_position_embeddings", 0),
        hf_id=c.get("_name_or_path") or None,
        logit_softcap=bool(c.get("final_logit_softcapping")),
        qk_norm=model_type in ("qwen3", "gemma3_text"),
        eager_attention=model_type in EAGER_ATTENTION_TYPES,
        attn_softcap=model_type == "gemma2" and c.get("attn_logit_softcapping", 50.0) is not None,
    )


EAGER_ATTENTION_TYPES = ("gemma2",)
"""Architectures whose attention soft-caps its scores, which SDPA cannot do: the trainer loads them
with eager attention whatever the installed transformers would pick (transformers 5.25 does the
same; earlier 5.x ran Gemma 2 on SDPA and left the cap out), so the estimate counts their score
matrices."""


def attention_implementation(model_type: str | None) -> str | None:
    """The `attn_implementation` the trainer asks transformers for, or None for its default."""
    return "eager" if model_type in EAGER_ATTENTION_TYPES else None


# ---------------------------------------------------------------- presets and loading


def _preset_dir():
    return resources.files("peft_advisor.data").joinpath("models")


def preset_ids() -> list[str]:
    """Ids of the config-only presets that ship with the package, sorted."""
    return list(_preset_ids())


@lru_cache(maxsize=1)
def _preset_ids() -> tuple[str, ...]:
    """The package's files do not change while it runs: list the folder once (the TUI advises per keystroke)."""
    return tuple(sorted(p.name[: -len(".json")] for p in _preset_dir().iterdir() if p.name.endswith(".json")))


def preset_config(preset_id: str) -> dict:
    """A shipped preset's config.json as a dict (benchmarks build the real architecture from it)."""
    return json.loads(_preset_dir().joinpath(f"{preset_id}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=64)
def load_preset(preset_id: str) -> ModelSpec:
    """A shipped preset by exact id; callers that take user input use `load_model_spec`."""
    return from_hf_config(preset_config(preset_id), source=preset_id)


def load_model_spec(model: str) -> ModelSpec:
    """`demo`, a preset id (`llama-3.2-1b`), a local model folder, a path to a config.json, or the
    Hub id of a preset's model or of its instruct/base variant (same shapes: no download needed).

    A folder wins over a preset of the same name, as in the trainer's `resolve_model`, so the
    advice is for what would be trained."""
    key = model.strip().lower()
    path = expand_home(model, ExitCode.UNKNOWN_MODEL)
    try:
        is_dir = path.is_dir()
        is_file = not is_dir and path.is_file()
    except OSError:  # e.g. a name too long for the file system: it is no path
        is_dir = is_file = False
    if is_dir:
        if not (path / "config.json").is_file():
            raise UserError(f"{model}: folder has no config.json", ExitCode.UNKNOWN_MODEL)
        return _load_config_file(path / "config.json")
    if key == "demo":  # the embedded SmolLM2-135M-Instruct (STACK.md: 134,515,008 params, tied)
        return replace(load_preset("smollm2-135m"), id="demo", hf_id="demo")
    if key in preset_ids():
        return load_preset(key)
    if is_file:
        return _load_config_file(path)
    preset = _preset_for_hub_id(key)
    if preset is not None:
        return replace(load_preset(preset), hf_id=model.strip())
    if _HUB_ID.fullmatch(model.strip()):
        return replace(_load_config_file(_hub_config(model.strip())), hf_id=model.strip())
    raise UserError(
        f"unknown model {model!r}: not a preset, folder or config.json{did_you_mean(key, preset_ids())}",
        ExitCode.UNKNOWN_MODEL,
    )


def _load_config_file(path: Path) -> ModelSpec:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # json parses nesting recursively: a hostile file is not a traceback
        raise UserError(f"{path}: cannot read config: nested too deeply", ExitCode.UNKNOWN_MODEL) from None
    except (OSError, ValueError) as err:  # ValueError: bad JSON, bad UTF-8, an int of > 4300 digits
        raise UserError(f"{path}: cannot read config: {err}", ExitCode.UNKNOWN_MODEL) from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a JSON object", ExitCode.UNKNOWN_MODEL)
    # The folder is what gets trained; a stale `_name_or_path` from whoever saved it is not.
    config["_name_or_path"] = str(path.parent)
    return from_hf_config(config, source=str(path))


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _hub_config(hub_id: str) -> Path:
    """A model outside the presets by its Hub id: only its config.json is fetched (a few kB, kept
    in the Hugging Face cache, so later calls work offline). Offline and not cached, or refused by
    the Hub, it says exactly what to do instead."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise UserError(f"{hub_id}: not a preset, and huggingface_hub is not installed to read its config.json",
                        ExitCode.UNKNOWN_MODEL) from None
    try:
        return Path(hf_hub_download(hub_id, "config.json", etag_timeout=5))
    except LocalEntryNotFoundError:
        raise UserError(f"{hub_id}: not a preset, and its config.json is not in the Hugging Face cache (offline); "
                        f"run this once online, or on a machine that is: huggingface-cli download {hub_id} "
                        f"config.json, or give a local folder holding its config.json", ExitCode.UNKNOWN_MODEL) from None
    except GatedRepoError:
        raise UserError(f"{hub_id}: a gated model; accept its licence on the Hub and log in (huggingface-cli "
                        f"login), or give a local folder holding its config.json", ExitCode.UNKNOWN_MODEL) from None
    except RepositoryNotFoundError:
        raise UserError(f"{hub_id}: no such model on the Hugging Face Hub (or it is private){did_you_mean(hub_id.lower(), preset_ids())}",
                        ExitCode.UNKNOWN_MODEL) from None
    except Exception as err:  # noqa: BLE001 - network and HTTP errors of many kinds: one line
        raise UserError(f"{hub_id}: cannot read its config.json from the Hub: {type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}", ExitCode.UNKNOWN_MODEL) from None


_VARIANT_SUFFIX = re.compile(r"-(instruct|it|pt|base)(?=-|$)")


def _preset_for_hub_id(hub_id: str) -> str | None:
    """The preset whose model has the same shapes: instruct, base, `-it` and `-pt` variants of one
    release share every weight shape, so `Qwen/Qwen2.5-7B-Instruct` is advised as `qwen2.5-7b`."""
    if "/" not in hub_id:
        return None
    wanted = _VARIANT_SUFFIX.sub("", hub_id.lower())
    for preset in preset_ids():
        hf_id = load_preset(preset).hf_id or ""
        if _VARIANT_SUFFIX.sub("", hf_id.lower()) == wanted:
            return preset
    return None
