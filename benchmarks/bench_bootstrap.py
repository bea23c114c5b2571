"""Bootstrap intervals of every metric of one run: the counts form against the straightforward
loop (expand each resample, recompute every metric), side by side.

    python benchmarks/bench_bootstrap.py [--run RUN_FOLDER] [--examples 15000] [--resamples 1000]

Without ``--run``, synthetic predictions of 10 classes over the digits layout of evaluation sets
(dev, ID, 12 corruptions x 5 severities, two OOD sets), ``--examples`` in all. The loop is timed
on ``--loop-resamples`` resamples (default 20) and scaled to ``--resamples``.
Target: under 10 s for 15,000 examples, every metric, 1,000 resamples.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from uqbench.bootstrap import bootstrap, intervals, resample_counts
from uqbench.metric_table import compute_metrics
from uqbench.predictions import Predictions
from uqbench.run_folder import SCORES


def synthetic(examples: int, seed: int = 0) -> Predictions:
    names = ["dev", "id"] + [f"cid/c{c}/{s}" for c in range(12) for s in range(1, 6)]
    names += ["ood/far", "ood/near"]
    rng = np.random.default_rng(seed)
    group = np.sort(rng.integers(0, len(names), examples)).astype(np.int32)
    logits = rng.normal(size=(examples, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    label = rng.integers(0, 10, examples).astype(np.int32)
    label[np.isin(group, [len(names) - 2, len(names) - 1])] = -1
    score = 1 - probs.max(1) + rng.normal(scale=0.05, size=examples)
    return Predictions(probs.astype(np.float32), score, label, group, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--examples", type=int, default=15000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--loop-resamples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = Predictions.load(args.run / SCORES) if args.run else synthetic(args.examples)
    print(
        f"{len(p.score)} examples, {len(p.group_names)} evaluation sets, "
        f"{args.resamples} resamples, torch threads {args.threads}"
    )
    start = time.perf_counter()
    ci = intervals(bootstrap(p, args.resamples))
    counts_form = time.perf_counter() - start
    start = time.perf_counter()
    counts = resample_counts(p.group, args.loop_resamples, seed=0)
    for row in counts.numpy():
        index = np.repeat(np.arange(len(p.score)), row.astype(int))
        compute_metrics(
            Predictions(
                p.probs[index], p.score[index], p.label[index], p.group[index], p.group_names
            )
        )
    loop = (time.perf_counter() - start) / args.loop_resamples * args.resamples
    print(f"counts form: {counts_form:.2f} s for {len(ci)} metrics")
    print(f"expand-and-recompute loop: {loop:.1f} s (scaled from {args.loop_resamples})")
    print(
        f"speed-up {loop / counts_form:.0f}x; target under 10 s: "
        f"{'met' if counts_form < 10 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
