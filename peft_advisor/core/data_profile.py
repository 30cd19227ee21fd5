"""The training data in tokens: how long its rows are, what max_seq_len cuts, and the sequence
length the estimate should use instead of assuming every row is max_seq_len long.

A fine-tune on short rows (the demo's arithmetic problems are about 50 tokens) never holds a
1,024-token batch: the collator pads each micro-batch to its longest row only, so the peak comes
from the longest row after truncation, times the micro-batch. With packing every row but the last
is max_seq_len long. Exact match (train/data.py `exact_match`) generates for up to
EVAL_GENERATE_ROWS held-out prompts, EVAL_GENERATE_BATCH at a time, when their reference answers
are short; its KV cache can outweigh the training step when the micro-batch is small.

Pure: the lengths come in (counted by `peft_advisor.data_scan` with the model's tokenizer, or
approximated), the numbers and their words go out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from peft_advisor.core.rows import SHAREGPT_ROLES

EVAL_GENERATE_ROWS = 32
"""Exact match greedy-generates this many eval prompts: cheap, still a signal."""
EVAL_GENERATE_BATCH = 16
"""Prompts generated for at once (left-padded to the batch's longest)."""
MAX_ANSWER_CHARS = 64
"""Longer reference answers make exact match meaningless; the trainer skips it then."""
MAX_NEW_TOKENS = 64
NEW_TOKENS_MARGIN = 8
"""Generation stops after the longest reference answer's tokens plus this margin, at most MAX_NEW_TOKENS."""
CHARS_PER_TOKEN = 4
"""The approximation used where no tokenizer is available locally: English text with a BPE
vocabulary of 32k-256k entries averages about four characters per token."""
KEEP_SHARE = 0.99
"""`keep_len` finds the max_seq_len that keeps this share of rows whole."""
SHORT_ANSWER_SHARE = 0.9
"""Generation is counted when at least this share of answers is short: the trainer checks only
the 32 rows it generates for, which then almost surely are."""


def new_tokens_for(longest_answer_tokens: int) -> int:
    """The `max_new_tokens` exact match generates with (the trainer and the estimate share it)."""
    return min(MAX_NEW_TOKENS, longest_answer_tokens + NEW_TOKENS_MARGIN)


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class DataProfile:
    """One dataset's rows in tokens, as the trainer renders them (template, chat template, EOS)."""

    source: str
    format: str
    lengths: tuple[int, ...]
    """Tokens per training row before truncation, sorted ascending."""
    counted_by: str
    """How the tokens were counted, in words ("the tokenizer of demo", or the approximation)."""
    exact: bool = True
    """False when the lengths are an approximation (no tokenizer available locally)."""
    generate_prompt_tokens: int = 0
    """Longest prompt exact match would generate from (prompts are not truncated); 0: no generation."""
    generate_new_tokens: int = 0
    roles: tuple[str, ...] = ()
    """The role tags the rows use, first seen first (chat: "role"; sharegpt: "from"); () for the others."""

    @property
    def format_words(self) -> str:
        """The format with its role tags: "sharegpt (human → user, gpt → assistant)"."""
        if not self.roles:
            return self.format
        if self.format == "sharegpt":
            return f"{self.format} ({', '.join(f'{r} → {SHAREGPT_ROLES[r]}' for r in self.roles)})"
        return f"{self.format} ({', '.join(self.roles)})"

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def total_tokens(self) -> int:
        return sum(self.lengths)

    def cut_share(self, max_seq_len: int) -> float:
        """Share of rows longer than max_seq_len (the trainer truncates them)."""
        return sum(n > max_seq_len for n in self.lengths) / self.rows if self.rows else 0.0

    def keep_len(self, share: float = KEEP_SHARE) -> int:
        """The smallest max_seq_len that keeps `share` of the rows whole."""
        if not self.rows:
            return 0
        return self.lengths[max(0, math.ceil(share * self.rows) - 1)]

    def seq_len_for(self, max_seq_len: int, packing: bool = False) -> int:
        """Tokens per row of the longest batch the run will see: the longest row after truncation
        (each micro-batch is padded to its longest row), or max_seq_len when rows are packed
        (fewer when the whole dataset is shorter)."""
        if packing:
            return max(1, min(max_seq_len, self.total_tokens))
        return max(1, min(max_seq_len, self.lengths[-1] if self.lengths else 1))

    def generate_len(self) -> int:
        """Tokens per sequence of exact match's generation (prompt plus new tokens); 0: none."""
        if not self.generate_prompt_tokens:
            return 0
        return self.generate_prompt_tokens + self.generate_new_tokens

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """(lowest, highest, rows) per length bucket of equal width, from the shortest row to the longest."""
        if not self.rows:
            return []
        low, top = self.lengths[0], self.lengths[-1]
        width = max(1, math.ceil((top - low + 1) / bins))
        counts = [0] * math.ceil((top - low + 1) / width)
        for n in self.lengths:
            counts[(n - low) // width] += 1
        return [(low + i * width, min(top, low + (i + 1) * width - 1), c) for i, c in enumerate(counts)]

    def words(self, max_seq_len: int, packing: bool = False) -> str:
        """The reason line: what the estimate used and why."""
        used = self.seq_len_for(max_seq_len, packing)
        cut = self.cut_share(max_seq_len)
        how = (f"packed into rows of {used} tokens" if packing else
               f"longest row {min(self.lengths[-1], max_seq_len)} tokens after truncation at {max_seq_len}")
        return (f"data: {self.source}: {self.rows:,} rows ({self.format_words}), counted with {self.counted_by}; {how}"
                f" ({cut:.1%} of rows cut): " + (f"estimated at {used} tokens per row instead of {max_seq_len}"
                                                   if used != max_seq_len else f"estimated at the full {used} tokens per row"))

    def to_dict(self, max_seq_len: int, packing: bool = False) -> dict:
        return {
            "source": self.source,
            "format": self.format,
            "roles": list(self.roles),
            "rows": self.rows,
            "counted_by": self.counted_by,
            "exact": self.exact,
            "max_seq_len": max_seq_len,
            "packing": packing,
            "longest_tokens": self.lengths[-1] if self.lengths else 0,
            "median_tokens": self.lengths[self.rows // 2] if self.rows else 0,
            "total_tokens": self.total_tokens,
            "cut_share": round(self.cut_share(max_seq_len), 4),
            "keep_99_len": self.keep_len(),
            "estimate_seq_len": self.seq_len_for(max_seq_len, packing),
            "generate_len": self.generate_len(),
            "histogram": [{"from": lo, "to": hi, "rows": n} for lo, hi, n in self.histogram()],
        }
