"""Every training row checked against its format's schema before the first step.

A row that parses but is wrong used to train anyway: `{"instruction": 5, "output": null}` as the
prompt "5" with an empty answer, a list as its Python repr, a row without the format's fields as an
empty prompt. Hours of training on that are worse than one line now, so the first bad row is refused
by line (a .jsonl file, read here before `datasets` touches it) or row number, naming the field:
`line 3: "output" must be a string, got null`. Nothing is coerced.

The schemas, by format:
    instruction        "instruction" and "output" strings; "input" a string, absent or null
    chat               "messages": a non-empty list of {"role": string, "content": string} objects,
                       at least one with role "assistant" (the turns trained on)
    sharegpt           "conversations": a non-empty list of {"from": string, "value": string}
                       objects, "from" one of human, gpt, system (user, assistant also taken), at
                       least one from gpt; rendered as chat (human -> user, gpt -> assistant)
    prompt_completion  "prompt" and "completion" strings
    text               "text" a string
Other columns are left alone (a prompt template may use them). "input" may be null because
columnar files (parquet, a .jsonl read by `datasets`) cannot tell a missing value from null.
Pure: no torch, no datasets, so the launcher and the tests can use it in a moment.
"""

from __future__ import annotations

import json
from pathlib import Path

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.limits import MAX_LINE_BYTES
from peft_advisor.core.units import fmt_bytes

REQUIRED = {
    "instruction": ("instruction", "output"),
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
OPTIONAL = {"instruction": ("input",)}  # strings when present; null is the same as absent
EXPECTED = "instruction+output[+input], messages, conversations (ShareGPT), prompt+completion or text"
MESSAGE_KEYS = ("role", "content")
SHAREGPT_KEYS = ("from", "value")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
"""ShareGPT's role tags and the chat roles they become."""


def bad(message: str) -> UserError:
    return UserError(f"data: {message}", ExitCode.BAD_DATA)


def json_type(value) -> str:
    """A value's type in JSON's words (what the user wrote), not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})" if len(repr(value)) <= 20 else "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else type(value).__name__


def field_problem(row: dict, name: str, optional: bool = False) -> str | None:
    if name not in row:
        return None if optional else f'"{name}" is missing'
    value = row[name]
    if isinstance(value, str) or (optional and value is None):
        return None
    return f'"{name}" must be a string, got {json_type(value)}'


def turns_problem(turns, field: str, keys: tuple[str, str]) -> str | None:
    """A chat's list of turns (`messages` or ShareGPT's `conversations`): a non-empty list of
    objects with the two string `keys`; the first problem, naming the turn (1-based)."""
    pair = f'{{"{keys[0]}", "{keys[1]}"}}'
    if not isinstance(turns, list):
        return f'"{field}" must be a list of {pair} objects, got {json_type(turns)}'
    if not turns:
        return f'"{field}" is empty'
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            return f'"{field}" item {number} must be an object with "{keys[0]}" and "{keys[1]}", got {json_type(turn)}'
        problem = next(filter(None, (field_problem(turn, key) for key in keys)), None)
        if problem:
            return f'"{field}" item {number}: {problem}'
    return None


def messages_problem(messages) -> str | None:
    """A chat row's `messages`: a list of {role, content} strings with an assistant turn to train on."""
    problem = turns_problem(messages, "messages", MESSAGE_KEYS)
    if problem:
        return problem
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        found = ", ".join(dict.fromkeys(roles))
        return f'"messages" has no "assistant" message, so nothing to train on (roles: {found})'
    return None


def conversations_problem(turns) -> str | None:
    """A ShareGPT row's `conversations`: {from, value} turns from human, gpt or system, with a gpt
    turn to train on."""
    problem = turns_problem(turns, "conversations", SHAREGPT_KEYS)
    if problem:
        return problem
    for number, turn in enumerate(turns, 1):
        if turn["from"] not in SHAREGPT_ROLES:
            return f'"conversations" item {number}: "from" must be human, gpt or system, got {turn["from"][:40]!r}'
    if all(SHAREGPT_ROLES[t["from"]] != "assistant" for t in turns):
        found = ", ".join(dict.fromkeys(t["from"] for t in turns))
        return f'"conversations" has no "gpt" turn, so nothing to train on (from: {found})'
    return None


def sharegpt_messages(turns: list[dict]) -> list[dict]:
    """A checked ShareGPT row as chat messages (human -> user, gpt -> assistant), so it trains
    exactly as the same conversation in OpenAI `messages` form would."""
    return [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in turns]


def role_tags(rows, fmt: str, limit: int = 10_000) -> tuple[str, ...]:
    """The role tags of checked chat or ShareGPT rows, first seen first (the first `limit` rows)."""
    key, field = {"chat": ("messages", "role"), "sharegpt": ("conversations", "from")}.get(fmt, (None, None))
    if key is None:
        return ()
    seen: dict[str, None] = {}
    for number, row in enumerate(rows):
        if number >= limit:
            break
        seen.update((turn[field], None) for turn in row[key])
    return tuple(seen)


def row_problem(row: dict, fmt: str) -> str | None:
    """What is wrong with one row for format `fmt`, or None."""
    if fmt == "chat":
        return messages_problem(row["messages"]) if "messages" in row else '"messages" is missing'
    if fmt == "sharegpt":
        return conversations_problem(row["conversations"]) if "conversations" in row else '"conversations" is missing'
    for name in REQUIRED[fmt]:
        problem = field_problem(row, name)
        if problem:
            return problem
    for name in OPTIONAL.get(fmt, ()):
        problem = field_problem(row, name, optional=True)
        if problem:
            return problem
    return None


def first_bad_row(rows, fmt: str) -> tuple[int, str] | None:
    """(1-based row number, problem) of the first bad row of an iterable of row dicts, or None."""
    for number, row in enumerate(rows, 1):
        problem = row_problem(row, fmt)
        if problem:
            return number, problem
    return None


def detect_format(columns: list[str], wanted: str, source: str) -> str:
    """The format the columns make (`wanted`, checked, or the first whose columns are all there)."""
    if wanted != "auto":
        missing = [c for c in REQUIRED[wanted] if c not in columns]
        if missing:
            extra = " (input optional)" if wanted == "instruction" else ""
            raise bad(
                f"{source}: format {wanted} needs columns {', '.join(REQUIRED[wanted])}{extra}; "
                f"found {', '.join(columns) or 'none'}"
            )
        return wanted
    for name, needed in REQUIRED.items():
        if all(c in columns for c in needed):
            return name
    raise bad(f"{source}: cannot tell the format from columns {', '.join(columns) or 'none'}; expected {EXPECTED} "
              "(name yours with data.columns, e.g. {instruction = \"question\", output = \"answer\"}, "
              "or --columns instruction=question,output=answer)")


# ---------------------------------------------------------------- a JSON-lines file, by line number


def parse_line(text: bytes, number: int) -> dict:
    """One line as a row; a line that is not a JSON object is refused here (`datasets` only says that
    generating the dataset failed)."""
    try:
        row = json.loads(text.decode("utf-8"))  # decoded here: json.loads would guess UTF-16 from NUL bytes
    except json.JSONDecodeError as err:
        raise ValueError(f"line {number}, column {err.colno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"line {number}, column {err.start + 1}: not UTF-8 (byte 0x{text[err.start]:02x})") from None
    if not isinstance(row, dict):
        raise ValueError(f'line {number}: not a JSON object (a row is {{"column": value, ...}})')
    return row


class _FirstProblems:
    """The first bad line for each format still in question: the format is known only once every
    line's columns are (as `datasets` takes the union of them), so each is followed in one pass."""

    def __init__(self, wanted: str):
        self.formats = list(REQUIRED) if wanted == "auto" else [wanted]
        self.found: dict[str, tuple[int, str]] = {}
        self.columns: dict[str, None] = {}
        self.rows = 0

    def add(self, row: dict, number: int) -> None:
        self.rows += 1
        self.columns.update(dict.fromkeys(row))
        for fmt in self.formats:
            if fmt not in self.found:
                problem = row_problem(row, fmt)
                if problem:
                    self.found[fmt] = (number, problem)


def scan_jsonl(path: Path, wanted: str = "auto", source: str | None = None) -> int:
    """Check every line of a .jsonl file: a JSON object, valid for its format (`wanted`, or the one
    its columns make). Returns the number of rows; the first problem is one UserError line naming
    the line. A line that is not JSON stops the scan at once; a schema problem is known to be one only
    at the end, once the columns, and so the format, are. Lines are read at most MAX_LINE_BYTES at a time."""
    source = source or str(path)
    seen = _FirstProblems(wanted)
    with open(path, "rb") as fh:
        for number, line in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(line) > MAX_LINE_BYTES:
                raise bad(f"{source}: line {number} is longer than {fmt_bytes(MAX_LINE_BYTES)}, the most one row may be")
            if not line.strip():
                continue
            try:
                seen.add(parse_line(line, number), number)
            except ValueError as err:
                raise bad(f"{source}: {err}") from None
    if seen.rows:
        fmt = detect_format(list(seen.columns), wanted, source)
        if fmt in seen.found:
            number, problem = seen.found[fmt]
            raise bad(f"{source}: line {number}: {problem}")
    return seen.rows
