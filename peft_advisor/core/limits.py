"""Sanity ceilings on shapes, shared by recipes and the CLI flags. Larger values are typos (a digit
too many), not runs anyone can do; refusing them early beats an estimate of millions of GiB."""

MAX_RANK = 65_536
MAX_SEQ_LEN = 1_048_576
MAX_BATCH = 65_536
MAX_VRAM_GIB = 4096.0  # one GPU
MAX_GPUS = 131_072  # above the largest training clusters built (about 100,000 GPUs)
MAX_ADAPTER_MB = 10_000_000.0  # 10 TB: far above any model's full weights
