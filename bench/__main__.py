"""Run the benchmarks: ``python -m bench [--only NAME] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path

os.environ.setdefault("GMP_MES_PASSWORD_COST", "test")

from bench.common import BenchUnavailable, Result

HERE = Path(__file__).parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--only", help="run only bench_<ONLY>.py")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    results: list[Result] = []
    unavailable: list[str] = []
    for module in sorted(m.name for m in pkgutil.iter_modules([str(HERE)])):
        if not module.startswith("bench_") or (args.only and module != f"bench_{args.only}"):
            continue
        print(f"running {module} ...", file=sys.stderr, flush=True)
        try:
            results.extend(importlib.import_module(f"bench.{module}").run(args))
        except BenchUnavailable as exc:
            print(f"{module}: not run: {exc}", file=sys.stderr)
            unavailable.append(module)
    print_table(results)
    (HERE / "results.json").write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    return 1 if unavailable else 0


def print_table(results: list[Result]) -> None:
    header = f"{'benchmark':44} {'figure':>16} {'baseline':>16} {'ratio':>7} {'target':>26} met"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:44} {r.figure:>11.1f} {r.unit:4} {r.baseline:>11.1f} {r.unit:4} "
            f"{r.ratio:>7.2f} {r.target:>26} {'yes' if r.met else 'NO'}"
        )
        if r.notes:
            print(f"    {r.notes}")


if __name__ == "__main__":
    raise SystemExit(main())
