"""The value checks behind every recipe field: types, ranges, choices, and the one-line messages.

Kept apart from the schema (`recipe.py`) so each field's declaration stays one line: `_f(default,
ge=…, choices=…)`. A failed check raises `_Bad` with the message; the parser adds the key and line.
"""

from __future__ import annotations

import math
from dataclasses import field

from peft_advisor.core.errors import closest
from peft_advisor.core.limits import MAX_GPUS_PER_NODE
from peft_advisor.core.toml_text import fmt_float, toml_str

TARGET_PRESETS = ("all-linear", "attention", "mlp")

def did_you_mean(word: str, choices) -> str:
    """The single closest name: one suggestion reads better in a one-line error than three."""
    near = closest(word, choices, n=1)
    return f"; did you mean {near[0]}?" if near else ""


class _Bad(ValueError):
    """One field's problem, without the key or line (the caller adds those)."""


def _show(value) -> str:
    """A value as the user wrote it in TOML, short enough for a one-line message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_str(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, float):
        return fmt_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _as_int(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected an integer, got {_show(value)}")
    if not -(2**63) <= value < 2**63:  # TOML's integers are 64-bit: it could not be written back
        raise _Bad(f"too large for a recipe (64-bit integers), got {_show(value)}")
    return value


def _as_float(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a number, got {_show(value)}")
    if not math.isfinite(value):
        raise _Bad(f"expected a finite number, got {_show(value)}")
    return float(value)


def _as_bool(value):
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_show(value)}")
    return value


def _as_str(value):
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_show(value)}")
    return value


def _as_targets(value):
    """A preset name, or a non-empty list of module names (kept as a tuple so recipes hash)."""
    if isinstance(value, str) and value in TARGET_PRESETS:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    hint = did_you_mean(value, TARGET_PRESETS) if isinstance(value, str) else ""
    raise _Bad(f'expected "all-linear", "attention", "mlp" or a list of module names, got {_show(value)}{hint}')


def _as_split(value):
    """A fraction of the rows, or a count of rows (an integer >= 1)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    try:
        fraction = _as_float(value)
    except _Bad:
        fraction = -1.0
    if not 0 <= fraction < 0.5:
        raise _Bad(f"expected a fraction in [0, 0.5) or a row count >= 1, got {_show(value)}")
    return fraction


def _as_template(value):
    """Only plain `{column}` fields: `str.format` would otherwise reach attributes (`{x.__class__}`)."""
    import string

    text = _as_str(value)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise _Bad(f"bad template: {err}") from None
    for name in names:
        if not name.isidentifier():
            raise _Bad(f"template fields must be plain column names like {{instruction}}, got {{{name}}}")
    return text


COLUMN_FIELDS = ("instruction", "input", "output", "messages", "prompt", "completion", "text")  # as core.rows


def _as_columns(value):
    """The data's columns renamed to the format's fields, as a table `{instruction = "question"}` or
    the text "instruction=question,output=answer"; kept as that text, so recipes hash and write back."""
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, str):
        pairs = [tuple(p.strip() for p in part.split("=", 1)) for part in value.split(",") if part.strip()]
    else:
        raise _Bad(f'expected a table like {{instruction = "question", output = "answer"}}, got {_show(value)}')
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[1], str) or not pair[1].strip():
            raise _Bad(f"expected field=column pairs like instruction=question, got {_show(value)}")
        if pair[0] not in COLUMN_FIELDS:
            hint = did_you_mean(pair[0], COLUMN_FIELDS) or f"; expected {', '.join(COLUMN_FIELDS)}"
            raise _Bad(f"unknown field {_show(pair[0])}{hint}")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _Bad(f"a field is mapped twice in {_show(value)}")
    return ",".join(f"{name}={column.strip()}" for name, column in pairs)


def column_map(text: str) -> dict[str, str]:
    """data.columns as {field: column}."""
    return dict(part.split("=", 1) for part in text.split(",")) if text else {}


def _as_gpu_ids(value):
    """GPU indices as `nvidia-smi` numbers them: a list of distinct integers >= 0 (kept as a tuple)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Bad(f"expected a list of GPU indices like [0, 1], got {_show(value)}")
    if any(v < 0 for v in value) or len(set(value)) != len(value):
        raise _Bad(f"GPU indices must be distinct and >= 0, got {_show_ids(value)}")
    if any(v >= MAX_GPUS_PER_NODE for v in value):
        raise _Bad(f"GPU indices must be below {MAX_GPUS_PER_NODE}, got {max(value)}")
    return tuple(value)


def _show_ids(value) -> str:
    """A list of ids for a one-line message: the first few of a long one."""
    return str(list(value)) if len(value) <= 8 else f"[{', '.join(map(str, value[:8]))}, ...] ({len(value)} ids)"


_PARSERS = {int: _as_int, float: _as_float, bool: _as_bool, str: _as_str}


def _f(default, *, ge=None, gt=None, lt=None, le=None, choices=None, nonempty=False, parse=None):
    """A recipe field: its default and the checks on its value (choices may be a callable).
    `le` is a sanity ceiling (core.limits), named on its own when exceeded."""
    meta = {"ge": ge, "gt": gt, "lt": lt, "le": le, "choices": choices, "nonempty": nonempty, "parse": parse}
    return field(default=default, metadata=meta)


def _check_range(value, meta) -> None:
    ge, gt, lt = meta["ge"], meta["gt"], meta["lt"]
    if meta["nonempty"] and not value.strip():
        raise _Bad("must not be empty")
    low_ok = (ge is None or value >= ge) and (gt is None or value > gt)
    if low_ok and meta.get("le") is not None and value > meta["le"]:
        raise _Bad(f"must be <= {_show(meta['le'])}, got {_show(value)}")
    if low_ok and (lt is None or value < lt):
        return
    low = f"[{_show(ge)}" if ge is not None else f"({_show(gt)}" if gt is not None else ""
    if lt is not None and low:
        raise _Bad(f"must be in {low}, {_show(lt)}), got {_show(value)}")
    if lt is not None:
        raise _Bad(f"must be < {_show(lt)}, got {_show(value)}")
    raise _Bad(f"must be {'>=' if ge is not None else '>'} {_show(ge if ge is not None else gt)}, got {_show(value)}")


def _check_choice(value, meta) -> None:
    choices = meta["choices"]
    choices = choices() if callable(choices) else choices
    if choices is None or value in choices:
        return
    hint = did_you_mean(value, choices) or f"; expected one of {', '.join(choices)}"
    raise _Bad(f"unknown value {_show(value)}{hint}")
