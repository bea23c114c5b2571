"""``uqbench bench`` over 13 methods x 3 seeds on digits, against the same cells one after
another and against ``compare_seeds.py`` (one process, one method at a time), side by side.

    python benchmarks/bench_matrix.py [--jobs 2] [--skip-sequential] [--skip-compare]

Each variant runs in a fresh folder with a fresh base-model cache (so each trains its bases),
torch at one thread per process. Printed: wall seconds of each and the ratios. The sequential
run is ``uqbench bench`` with ``bench.jobs=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["msp", "entropy", "temperature", "energy", "mahalanobis", "react", "ash", "odin",
           "snapuq", "evidential", "mc_dropout", "deep_ensemble", "early_exit"]  # fmt: skip
SEEDS = [13, 17, 23]


def timed(command: list[str], cache: Path) -> float:
    env = {**os.environ, "UQBENCH_CACHE": str(cache)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def bench(root: Path, jobs: int) -> tuple[float, int]:
    out = root / f"bench-jobs{jobs}"
    command = ["uqbench", "bench", f"method=[{','.join(METHODS)}]",
               f"seed=[{','.join(map(str, SEEDS))}]", f"bench.jobs={jobs}", f"bench.out={out}",
               "threads=1", "bench.resamples=100"]  # fmt: skip
    wall = timed(command, root / f"cache-{jobs}")
    cells = json.loads((out / "bench.json").read_text())["cells"]
    processes = len({c.get("process", name) for name, c in cells.items()})
    return wall, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    rows = []
    wall, processes = bench(root, args.jobs)
    rows.append((f"uqbench bench, bench.jobs={args.jobs} ({processes} processes)", wall))
    if not args.skip_sequential:
        wall, processes = bench(root, 1)
        rows.append((f"uqbench bench, bench.jobs=1 ({processes} processes)", wall))
    if not args.skip_compare:
        script = Path(__file__).parent / "compare_seeds.py"
        command = [sys.executable, str(script), "--methods", *METHODS, "--seeds",
                   *map(str, SEEDS), "--out", str(root / "seeds"), "--threads", "1",
                   "--table", str(root / "seeds.md")]  # fmt: skip
        rows.append(("compare_seeds.py (one process)", timed(command, root / "cache-seeds")))
    first = rows[0][1]
    print(f"{len(METHODS)} methods x {len(SEEDS)} seeds on digits")
    for name, wall in rows:
        print(f"{name:<48} {wall:8.1f} s  {wall / first:5.2f}x")


if __name__ == "__main__":
    main()
