"""Generate the shipped demo dataset: short arithmetic word problems with one numeric answer.

Usage:  python peft_advisor/data/demo/make_demo_data.py   (rewrites arithmetic.jsonl next to it)

Why this task: every answer is a single number, so exact-match accuracy means something, and a
135 M-parameter model learns the answer format (and improves at the sums) within a few minutes of
CPU fine-tuning. The output shows the operation before the result ("12 + 7 = 19"): a small model
gets the number right far more often when it writes the sum out first; the answer is the last number.

The text is generated here from our own templates with a fixed seed, so the file is reproducible
byte for byte and its licence is the project's.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20240611
ROWS = 2000
OUT = Path(__file__).with_name("arithmetic.jsonl")

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
         "Mo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tomas", "Uma", "Vik", "Wren", "Yusuf", "Zoe"]
THINGS = ["apples", "books", "marbles", "stickers", "coins", "pencils", "shells", "cookies", "stamps",
          "cards", "eggs", "flowers", "bottles", "toy cars", "buttons", "oranges"]
PLACES = [("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"), ("tray", "trays"),
          ("drawer", "drawers")]

# Each template: (operation, text). {a} and {b} are the operands; the answer is a <op> b.
TEMPLATES = [
    ("+", "{n} has {a} {t}. {m} gives {n} {b} more. How many {t} does {n} have now?"),
    ("+", "There are {a} {t} in a {p} and {b} {t} on the table. How many {t} are there in all?"),
    ("+", "{n} collected {a} {t} on Monday and {b} {t} on Tuesday. How many {t} did {n} collect?"),
    ("+", "A {p} holds {a} red {t} and {b} blue {t}. How many {t} are in the {p}?"),
    ("-", "{n} had {a} {t} and gave {b} of them to {m}. How many {t} does {n} have left?"),
    ("-", "A {p} had {a} {t}. {n} took out {b}. How many {t} are still in the {p}?"),
    ("-", "{n} needs {a} {t} and already has {b}. How many more {t} does {n} need?"),
    ("-", "{n} has {a} {t} and {m} has {b}. How many more {t} does {n} have than {m}?"),
    ("*", "{n} has {a} {ps} with {b} {t} in each. How many {t} does {n} have?"),
    ("*", "Each of {a} friends brings {b} {t}. How many {t} do they bring together?"),
    ("*", "{n} buys {a} packs of {t}. Each pack has {b} {t}. How many {t} does {n} buy?"),
    ("/", "{n} shares {a} {t} equally among {b} friends. How many {t} does each friend get?"),
    ("/", "{a} {t} are packed into {ps} of {b}. How many {ps} are filled?"),
]


def operands(op: str, rng: random.Random) -> tuple[int, int, int]:
    """Operands small enough for a 135 M model, with whole, positive answers."""
    if op == "+":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return a, b, a + b
    if op == "-":
        a = rng.randint(10, 80)
        b = rng.randint(1, a - 1)
        return a, b, a - b
    if op == "*":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return a, b, a * b
    b, q = rng.randint(2, 9), rng.randint(2, 12)
    return b * q, b, q


def make_row(rng: random.Random) -> dict:
    op, text = rng.choice(TEMPLATES)
    n, m = rng.sample(NAMES, 2)
    a, b, answer = operands(op, rng)
    place, places = rng.choice(PLACES)
    question = text.format(n=n, m=m, a=a, b=b, t=rng.choice(THINGS), p=place, ps=places)
    sign = {"+": "+", "-": "-", "*": "×", "/": "÷"}[op]
    return {"instruction": question, "input": "", "output": f"{a} {sign} {b} = {answer}"}


def main() -> None:
    rng = random.Random(SEED)
    rows = [make_row(rng) for _ in range(ROWS)]
    with OUT.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
