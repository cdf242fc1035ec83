"""Chaos, longer: more issues, the bot SIGKILLed many times at random moments, a host killed,
GitHub answering bursts of 502 and secondary rate limits; prints the kills survived and
each invariant's count of violations (all zero is the goal).

    python bench/chaos.py [--issues 6] [--kills 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bot.cli.chaos import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=6)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--faults", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settle", type=float, default=150.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kohai-chaos-") as tmp:
        report = run_chaos(
            Path(tmp),
            issues=args.issues,
            bot_kills=args.kills,
            faults=args.faults,
            seed=args.seed,
            settle_s=args.settle,
        )
    print(
        f"chaos: {report.issues} labelled issues, {report.experiments} experiments, "
        f"{report.runs} runs stored, {report.seconds:.0f} s"
    )
    print(f"kills survived: bot {report.kills['bot']}, host {report.kills['host']}")
    width = max(len(name) for name in report.violations)
    for name, count in report.violations.items():
        print(f"  {name:<{width}}  {count}")
    for line in report.log:
        print(f"  · {line}")
    return 0 if not any(report.violations.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
