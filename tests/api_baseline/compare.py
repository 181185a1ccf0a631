"""Compare two recordings of the API tests' answers (``tests/recording.py``), test by
test in request order: ``python -m tests.api_baseline.compare before.jsonl after.jsonl
[before-again.jsonl]``. With a second recording of the unchanged code, tests whose
answers already differ between two runs of it (random ids ordering bags, concurrent
winners) are reported as unstable instead of changed."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any


def load(path: str) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            runs[row.pop("test")].append(row)
    return runs


def main() -> int:
    before, after = load(sys.argv[1]), load(sys.argv[2])
    again = load(sys.argv[3]) if len(sys.argv) > 3 else before
    changed, unstable = [], []
    for test in sorted(set(before) | set(after)):
        if before.get(test) == after.get(test):
            continue
        (unstable if before.get(test) != again.get(test) else changed).append(test)
    for test in changed:
        print("changed:", test)
        for old, new in zip(before.get(test, []), after.get(test, []), strict=False):
            if old != new:
                print("   before:", json.dumps(old)[:600])
                print("   after: ", json.dumps(new)[:600])
                break
    answers = sum(map(len, before.values())), sum(map(len, after.values()))
    print(f"{len(set(before) | set(after))} tests, {answers[0]} answers before, {answers[1]} "
          f"after; {len(changed)} changed, {len(unstable)} unstable between runs")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
