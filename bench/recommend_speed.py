"""Cold-process speed of `peft-advisor recommend --vram 12` (issue 2: median under 0.3 s).

Usage:
    python bench/recommend_speed.py [--runs 21]

Runs the console command as a fresh process each time (no warm imports) and prints the median
wall time, the ratio to the 0.3 s target, and a bare `python -c pass` for reference.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    exe = shutil.which("peft-advisor")
    cmd = [exe] if exe else [sys.executable, "-m", "peft_advisor"]
    bare = wall([sys.executable, "-c", "pass"], args.runs)
    rec = wall(cmd + ["recommend", "--vram", "12"], args.runs)
    print(f"python -c pass:                      median {bare:.3f} s")
    print(f"peft-advisor recommend --vram 12:    median {rec:.3f} s  ({rec / 0.3:.2f}x the 0.3 s target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
