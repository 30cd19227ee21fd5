"""Sanity ceilings on shapes, shared by recipes and the CLI flags. Larger values are typos (a digit
too many), not runs anyone can do; refusing them early beats an estimate of millions of GiB."""

MAX_RANK = 65_536
MAX_SEQ_LEN = 1_048_576
MAX_BATCH = 65_536
