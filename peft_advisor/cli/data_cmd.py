"""`peft-advisor data FILE --model M`: the training data as the trainer will see it, in tokens.

Before choosing max_seq_len (and so the memory a run needs), a person should know how long the
rows really are: the format the trainer detects, the row count, a histogram of token lengths, the
share of rows max_seq_len would cut, and the max_seq_len that keeps 99 % whole. Counting loads
`datasets` and a tokenizer (seconds), so this module imports them only when it runs.
"""

from __future__ import annotations

import json

from peft_advisor.core.advise import DEFAULT_MODEL
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.limits import MAX_SEQ_LEN

BAR_WIDTH = 40
"""Characters of the longest histogram bar."""


def register(sub) -> None:
    p = sub.add_parser("data", help="a dataset in the model's tokens: format, rows, lengths, what max_seq_len cuts")
    p.add_argument("data", metavar="DATA", help="a .jsonl/.json/.csv/.parquet file, a saved folder, demo or a cached Hub id")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"whose tokenizer counts (preset id, model folder, demo or Hub id; default {DEFAULT_MODEL})")
    p.add_argument("--max-seq-len", type=int, default=1024, metavar="TOKENS", help="the truncation length (default 1024)")
    p.add_argument("--packing", action="store_true", help="rows packed into max-seq-len tokens (data.packing)")
    p.add_argument("--format", default="auto", help="auto | instruction | chat | sharegpt | prompt_completion | text")
    from peft_advisor.cli.advise import add_data_choice

    add_data_choice(p, with_="")
    p.add_argument("--bins", type=int, default=10, help="histogram buckets (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_data)


def check_args(args) -> None:
    from peft_advisor.core.rows import REQUIRED

    if not 1 <= args.max_seq_len <= MAX_SEQ_LEN:
        raise UserError(f"--max-seq-len must be 1 to {MAX_SEQ_LEN:,}, got {args.max_seq_len}", ExitCode.USAGE)
    if not 1 <= args.bins <= 100:
        raise UserError(f"--bins must be 1 to 100, got {args.bins}", ExitCode.USAGE)
    if args.columns:
        from peft_advisor.core.advise import check_columns

        check_columns("--columns", args.columns)
    if args.format != "auto" and args.format not in REQUIRED:
        raise UserError(f"--format must be auto or one of {', '.join(REQUIRED)}, got {args.format!r}", ExitCode.USAGE)


def run_data(args) -> int:
    check_args(args)
    from peft_advisor.data_scan import profile

    prof = profile(args.data, args.model, fmt=args.format, columns=args.columns, config=args.data_config,
                   split=args.data_split)
    if args.json:
        print(json.dumps(dict(prof.to_dict(args.max_seq_len, args.packing), model=args.model), indent=2))
    else:
        print(format_profile(prof, args.model, args.max_seq_len, args.packing, args.bins))
    return ExitCode.OK


def format_profile(prof, model: str, max_seq_len: int, packing: bool, bins: int) -> str:
    lengths = prof.lengths
    lines = [
        f"{prof.source} · format {prof.format_words} · {prof.rows:,} rows · tokens counted with {prof.counted_by}",
        f"tokens per row: shortest {lengths[0]:,}, median {lengths[len(lengths) // 2]:,}, longest {lengths[-1]:,}; "
        f"{prof.total_tokens:,} in all",
        "",
    ]
    lines += histogram_lines(prof.histogram(bins), max_seq_len)
    cut = prof.cut_share(max_seq_len)
    lines += [
        "",
        f"max_seq_len {max_seq_len:,} cuts {cut:.1%} of rows ({round(cut * prof.rows):,})",
        f"max_seq_len that keeps 99 % of rows whole: {prof.keep_len():,}",
        f"the estimate uses {prof.seq_len_for(max_seq_len, packing):,} tokens per row "
        + ("(packed rows)" if packing else "(the longest row after truncation)"),
    ]
    if prof.generate_len():
        lines.append(f"exact match would generate from prompts of up to {prof.generate_prompt_tokens:,} tokens "
                     f"(+{prof.generate_new_tokens} new)")
    return "\n".join(lines)


def histogram_lines(buckets, max_seq_len: int) -> list[str]:
    """One text bar per bucket, scaled to the fullest; buckets past max_seq_len are marked as cut."""
    top = max((n for _, _, n in buckets), default=0) or 1
    width = len(f"{buckets[-1][1]:,}") if buckets else 1
    out = []
    for low, high, rows in buckets:
        bar = "█" * round(BAR_WIDTH * rows / top) or ("▏" if rows else "")
        mark = "  (cut)" if low > max_seq_len else "  (partly cut)" if high > max_seq_len else ""
        out.append(f"{low:>{width},}–{high:<{width},} tokens {rows:>8,} {bar}{mark}")
    return out
