"""`peft-advisor matrix [--markdown|--json] [--study|--front [--task T] [--no-plot]]`.

The trade-off matrix is `peft_advisor/data/methods.toml` (schema in core/catalog.py), rendered by
core/matrix.py so the README block and this command print the same thing. `--study` and `--front`
show the whole study instead (data/study.json, schema in core/study.py): every run, or the runs on
its score × memory × file-size Pareto front with a plotext drawing.
"""

from __future__ import annotations

import json
import sys

from peft_advisor.core.catalog import load_catalog
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.matrix import render_markdown, render_table

TASKS = ("MetaMathQA", "image-gen")


def register(sub) -> None:
    p = sub.add_parser("matrix", help="show each method's quality, memory, speed and evidence")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="full matrix with evidence and sources")
    fmt.add_argument("--json", action="store_true", help="every field of every method (or run), as JSON")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--study", action="store_true", help="every run of the study, best score first")
    view.add_argument("--front", action="store_true",
                      help="the runs no other beats on score, memory and file size at once, plotted")
    p.add_argument("--task", default="MetaMathQA", help="with --study/--front: MetaMathQA (default) or image-gen")
    p.add_argument("--no-plot", action="store_true", help="with --front: the table only")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.study or args.front:
        return _study(args)
    catalog = load_catalog()
    if args.json:
        doc = {"methods": [m.to_dict() for m in catalog.values()]}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    elif args.markdown:
        sys.stdout.write(render_markdown(catalog))
    else:
        sys.stdout.write(render_table(catalog))
    return 0


def _study(args) -> int:
    from dataclasses import asdict

    from peft_advisor.core.pareto import front
    from peft_advisor.core.study import runs_of
    from peft_advisor.core.study_view import render_front, render_study

    if args.markdown:
        raise UserError("matrix: --markdown applies to the method matrix, not to --study or --front", ExitCode.USAGE)
    task = {t.lower(): t for t in TASKS}.get(args.task.lower())
    if task is None:
        raise UserError(f"matrix: --task must be one of {', '.join(TASKS)}, got {args.task!r}", ExitCode.USAGE)
    runs = runs_of(task)
    chosen = front(runs) if args.front else sorted(runs, key=lambda r: -r.score)
    if args.json:
        sys.stdout.write(json.dumps({"task": task, "runs": [asdict(r) for r in chosen]}, indent=1) + "\n")
        return 0
    sys.stdout.write(render_front(runs) if args.front else render_study(runs))
    if args.front and not args.no_plot:
        from peft_advisor.cli.front_plot import draw

        sys.stdout.write("\n" + draw(runs, color=sys.stdout.isatty()))
    return 0
