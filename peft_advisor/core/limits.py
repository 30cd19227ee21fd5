"""Sanity ceilings on shapes, shared by recipes and the CLI flags. Larger values are typos (a digit
too many), not runs anyone can do; refusing them early beats an estimate of millions of GiB.

The file ceilings are checked from `stat` before a byte is read, so a wrong path (a disk image, a
sparse file, a log) is one line at once instead of minutes of parsing and gigabytes of memory."""

MAX_RANK = 65_536
MAX_SEQ_LEN = 1_048_576
MAX_BATCH = 65_536
MAX_VRAM_GIB = 4096.0  # one GPU
MAX_GPUS = 131_072  # above the largest training clusters built (about 100,000 GPUs)
MAX_ADAPTER_MB = 10_000_000.0  # 10 TB: far above any model's full weights
MAX_ALPHA = 1_048_576  # LoRA's alpha: 16 x the largest rank; a scale of millions is a typo
MAX_EPOCHS = 100_000.0  # passes over the data; a million epochs of even one row is not a fine-tune

# A recipe is a few kB of TOML; a MiB of it is not a recipe.
MAX_RECIPE_BYTES = 1024**2
# One data file (.jsonl, .json, .csv, .parquet). The largest public fine-tuning sets ship as single
# files of 1 to 3 GB (OpenHermes-2.5 is a 1.9 GB .json), so 4 GiB refuses none of them; beyond it the
# trainer, which holds every tokenized row in memory, would need well over 100 GiB of RAM. A bigger
# set can still be given as a folder written by `datasets`' save_to_disk, which has no ceiling.
MAX_DATA_FILE_BYTES = 4 * 1024**3
# One line of a .jsonl or .csv file (one row). A row as long as MAX_SEQ_LEN tokens is about 4 MiB of
# text, some 24 MiB if every character is \u-escaped; a longer line is not a row (a file of NUL bytes,
# a binary file renamed), and it is refused after reading this much, not the whole file.
MAX_LINE_BYTES = 64 * 1024**2

# A model config.json's shapes (core.model_spec). The largest real models are far below these
# (Llama 3.1 405B: 126 layers, hidden 16384, MLP 53248, 128 heads; Gemma 3: a 262,144-token
# vocabulary); a value past one is a corrupt or hostile config, and refusing it keeps the
# estimator's arithmetic inside float range (num_hidden_layers = 10**400 raised OverflowError).
MODEL_DIM_CEILINGS = {
    "num_hidden_layers": 10_000,
    "hidden_size": 1_048_576,
    "intermediate_size": 4_194_304,
    "num_attention_heads": 65_536,
    "num_key_value_heads": 65_536,
    "head_dim": 65_536,
    "vocab_size": 16_777_216,
    "max_position_embeddings": 1 << 34,  # 17 G tokens; the longest context today is 10 M
}

# A run's size ([distributed] in a recipe). A node holds 8 or 16 GPUs today, and a CPU run (gloo)
# one process per core, a few hundred at most; the largest clusters built have ~25,000 nodes of 8
# GPUs. `gpus = 100000` is a typo that torchrun would try to honour (100000 processes on one machine).
MAX_GPUS_PER_NODE = 1024
MAX_NODES = 65_536

# Optimizer steps (train.max_steps, bench --steps). At 10 steps a second 10 M steps take 11 days;
# pretraining the largest models takes ~1 M. `--steps 10**20` filled a bench folder with error rows.
MAX_STEPS = 10_000_000
