"""Run one fine-tune: the child process that `peft-advisor train` and the TUI start.

Usage:
    python -m peft_advisor.train RECIPE [--run-dir DIR] [--resume]

Exit codes: 0 ok, 130 cancelled (SIGINT/SIGTERM, after saving a checkpoint), 11 out of GPU memory,
10 training failed, and the `ExitCode` of a bad recipe, model or dataset (nothing is created then).
Progress goes to RUN_DIR/events.jsonl; stdout/stderr are the launcher's train.log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from peft_advisor.core.errors import ExitCode, UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peft_advisor.train", description="Run one fine-tune.")
    parser.add_argument("recipe", help="recipe TOML file")
    parser.add_argument("--run-dir", help="run folder (default: the recipe's output.dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from peft_advisor.train import quiet

    quiet.install()  # before the libraries load: train.log is for the user's run, not their chatter
    # SIGINT (and SIGTERM) is the launcher's stop request, handled from here to the end. A process
    # started from a background job inherits SIGINT ignored; setting a handler undoes that.
    from peft_advisor.core.run_folder import RunComplete
    from peft_advisor.train.run import Run, StopSignal, record_setup_exit

    stop = StopSignal().install()
    run = None
    try:
        run = Run(args.recipe, args.run_dir, args.resume, stop=stop,
                  argv=[sys.executable, "-m", "peft_advisor.train", *(sys.argv[1:] if argv is None else argv)])
        run.setup()
    except RunComplete as done:
        print(f"peft-advisor: {done}", file=sys.stderr, flush=True)
        return int(ExitCode.OK)
    except UserError as err:
        print(f"peft-advisor: {err}", file=sys.stderr, flush=True)
        record_setup_exit(err.code, str(err))
        return int(err.code)
    except KeyboardInterrupt:
        if run is not None:
            run.discard_new_folder()
        print("peft-advisor: interrupted before training started", file=sys.stderr, flush=True)
        record_setup_exit(ExitCode.INTERRUPTED, "interrupted before training started")
        return int(ExitCode.INTERRUPTED)
    try:
        return run.train()
    finally:
        run.cleanup()


def ignore_late_stops() -> None:
    """The run has ended and its folder says how: a stop from now on has nothing to stop. Ignored,
    not left to the stop handler (which would announce a checkpoint that never comes) nor to the
    interpreter's shutdown (which puts the default back, so the process would die of it, -2)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    from peft_advisor.core.run_folder import fault_point

    fault_point("exit")  # tests only: a stop that arrives after the run ended


if __name__ == "__main__":
    code = main()
    ignore_late_stops()
    raise SystemExit(code)
