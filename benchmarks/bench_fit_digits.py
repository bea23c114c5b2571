"""`uqbench fit` on digits, start to printed report, as a user runs it.

    python benchmarks/bench_fit_digits.py

Each command runs in a fresh process with an empty base-model cache (the cold, first-run case),
then `method=msp` once more with the cache it just filled. Target: at most 60 s each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

COMMANDS = [["fit"], ["fit", "method=msp"]]
TARGET_SECONDS = 60.0


def run(args: list[str], cache: str, out: str) -> float:
    env = os.environ | {"UQBENCH_CACHE": cache}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "uqbench", *args, f"out={out}"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for args in COMMANDS:
            cache = tempfile.mkdtemp(dir=tmp)
            rows.append((" ".join(["uqbench", *args]) + "  (cold cache)", run(args, cache, tmp)))
            if args == ["fit", "method=msp"]:
                rows.append(("uqbench fit method=msp  (cached base)", run(args, cache, tmp)))
    for label, seconds in rows:
        print(f"{label:<44} {seconds:6.1f} s   {seconds / TARGET_SECONDS:5.2f} of the 60 s target")


if __name__ == "__main__":
    main()
