"""`peft-advisor matrix [--markdown|--json]`: the evidence-based trade-off matrix.

The data is `peft_advisor/data/methods.toml` (schema in core/catalog.py); rendering lives in
core/matrix.py so the README block and this command print the same thing.
"""

from __future__ import annotations

import json
import sys

from peft_advisor.core.catalog import load_catalog
from peft_advisor.core.matrix import render_markdown, render_table


def register(sub) -> None:
    p = sub.add_parser("matrix", help="show each method's quality, memory, speed and evidence")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="full matrix with evidence and sources")
    fmt.add_argument("--json", action="store_true", help="every field of every method, as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    catalog = load_catalog()
    if args.json:
        doc = {"methods": [m.to_dict() for m in catalog.values()]}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    elif args.markdown:
        sys.stdout.write(render_markdown(catalog))
    else:
        sys.stdout.write(render_table(catalog))
    return 0
