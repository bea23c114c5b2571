"""A leaderboard's statistics of finished runs (bootstrap samples and stream metrics, per run and
per variant score) with this tree's code against an earlier commit's, side by side in one run,
and every value compared bit for bit.

    python benchmarks/bench_leaderboard_stats.py RUN_FOLDER... [--baseline REV]
                                                 [--resamples 1000] [--order ...]

Run folders come from any fit or bench (``uqbench bench "method=[msp,odin,snapuq]" "seed=[13]"
bench.out=runs``, say). Each side runs in a fresh process at one thread, as the leaderboard
does, with no cache: the seconds are those of computing, not of reading the cache. Exit status 1
when any value differs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_matrix import remove_tree, side_by_side, source_tree

BASELINE = "259798c"  # the last commit before exact running sums and kept resamples

SIDE = """\
import dataclasses, pickle, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from uqbench import streams
from uqbench.bootstrap import bootstrap
from uqbench.predictions import Predictions
resamples, out, folders = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
values, seconds = {}, 0.0
for folder in folders:
    p = Predictions.load(Path(folder) / "scores.npz")
    for name in [None, *p.variants]:
        q = p if name is None else p.with_score(name)
        started = time.perf_counter()
        samples = bootstrap(q, resamples)
        stream = dataclasses.asdict(streams.evaluate(q, streams.StreamSpec(), resamples))
        seconds += time.perf_counter() - started
        values[(folder, name)] = (samples, stream)
pickle.dump((seconds, values), open(out, "wb"))
"""


def side(folders: list[str], resamples: int, out: Path, shim: Path | None) -> float:
    """Seconds of one side's statistics, its values pickled to ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if shim:
        env["PYTHONPATH"] = str(shim)
    command = [sys.executable, "-c", SIDE, str(resamples), str(out), *folders]
    subprocess.run(command, check=True, env=env, cwd=out.parent)
    return pickle.loads(out.read_bytes())[0]


def _bits(value: object) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).view(np.int64)


def differences(a: Path, b: Path) -> list[str]:
    """Every value that differs in its bits between the two sides' results."""
    found = []
    values_a, values_b = pickle.loads(a.read_bytes())[1], pickle.loads(b.read_bytes())[1]
    for key, (samples, stream) in values_a.items():
        other_samples, other_stream = values_b[key]
        for name in sorted(set(samples) | set(other_samples)):
            if name not in samples or name not in other_samples:
                found.append(f"{key}: {name} on one side only")
            elif not np.array_equal(_bits(samples[name]), _bits(other_samples[name])):
                found.append(f"{key}: bootstrap {name}")
        for name in stream:
            if not np.array_equal(_bits(stream[name]), _bits(other_stream[name])):
                found.append(f"{key}: stream {name}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="finished run folders")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--order", choices=["baseline-first", "current-first"], default="baseline-first"
    )
    args = parser.parse_args()
    folders = [str(Path(f).resolve()) for f in args.folders]
    where = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    shim = source_tree(args.baseline, where / "baseline")
    order = ["baseline", "current"]
    if args.order == "current-first":
        order.reverse()
    seconds = {}
    try:
        for name in order:
            result = where / f"{name}.pkl"
            seconds[name] = side(
                folders, args.resamples, result, shim if name == "baseline" else None
            )
    finally:
        remove_tree(where / "baseline")
    found = differences(where / "baseline.pkl", where / "current.pkl")
    rows = len(pickle.loads((where / "current.pkl").read_bytes())[1])
    print(f"{len(folders)} run folders, {rows} rows (runs, variants), {args.resamples} resamples")
    labels = {"baseline": f"baseline {args.baseline}", "current": "current (this tree)"}
    return side_by_side(labels, seconds, "values (bit for bit)", found)


if __name__ == "__main__":
    sys.exit(main())
