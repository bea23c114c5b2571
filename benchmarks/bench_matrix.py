"""The digits matrix (13 methods x 3 seeds, ``bench.jobs=2``) with this tree's ``uqbench bench``
against the same command with the code of an earlier commit, side by side in one run, and
every number they produce compared.

    python benchmarks/bench_matrix.py [--baseline REV] [--current REV] [--jobs 2]
                                      [--order baseline-first|current-first]

The earlier commit (and ``--current``, to measure a commit rather than the working tree) is
checked out in a temporary git worktree and imported in place of this tree (a
``sitecustomize`` on ``PYTHONPATH`` points the editable install's package mapping at the
worktree), with the same installed packages. Each side runs in a fresh folder with a fresh
base-model and bootstrap cache (so each trains its own bases), torch at one thread per process.
Printed: the wall seconds of each and their ratio, then the comparison: every cell's
``metrics.json`` metrics, every leaderboard table (the leaderboard's Markdown) and
``bench.json``'s headline numbers must be equal. Exit status 1 when any differs.
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

METHODS = [
    "msp",
    "entropy",
    "temperature",
    "energy",
    "mahalanobis",
    "react",
    "ash",
    "odin",
    "snapuq",
    "evidential",
    "mc_dropout",
    "deep_ensemble",
    "early_exit",
]
SEEDS = [13, 17, 23]
BASELINE = "4700211"  # the last commit with one fresh interpreter per job
ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = """\
# Import uqbench from {tree} instead of the editable install's folder: the install's finder
# (imported by its .pth file before this runs) maps each package to a folder.
import sys
for name, module in list(sys.modules.items()):
    mapping = getattr(module, "MAPPING", None)
    if name.startswith("__editable___uqbench") and isinstance(mapping, dict):
        for key, path in mapping.items():
            mapping[key] = path.replace({root!r}, {tree!r}, 1)
"""


def source_tree(rev: str, where: Path) -> Path:
    """A worktree of ``rev`` in ``where/tree``, and the folder whose sitecustomize imports
    uqbench from it (checked)."""
    tree = where / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
        check=True,
        capture_output=True,
    )
    shim = where / "shim"
    shim.mkdir(parents=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(ROOT), tree=str(tree)))
    probe = "import uqbench.methods.msp as m, uqbench.cli as c; print(m.__file__, c.__file__)"
    env = {**os.environ, "PYTHONPATH": str(shim)}
    # Run from ``where``: from the repository's root, ``python -c`` and ``-m`` would find this
    # tree's uqbench on sys.path before the mapping.
    files = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=where,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not all(f.startswith(str(tree)) for f in files):
        raise SystemExit(f"the baseline would not import from {tree}: {files}")
    return shim


def remove_tree(where: Path) -> None:
    """Remove the worktree that :func:`source_tree` made in ``where``, if there is one."""
    if (where / "tree").exists():
        git = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where / "tree")]
        subprocess.run(git, capture_output=True)


def side_by_side(
    labels: dict[str, str], seconds: dict[str, float], what: str, found: list[str]
) -> int:
    """Print both sides' seconds and their ratio, then whether ``what`` (their numbers) were
    identical or which differ; returns the exit status: 1 when any differs."""
    ratio = seconds["current"] / seconds["baseline"]
    print(f"{labels['baseline']:<24} {seconds['baseline']:8.1f} s  1.00x")
    print(f"{labels['current']:<24} {seconds['current']:8.1f} s  {ratio:5.2f}x")
    print(f"{what}: identical" if not found else f"{what}: {len(found)} differ")
    for line in found[:20]:
        print(f"  {line}")
    return 1 if found else 0


def bench(out: Path, jobs: int, pythonpath: Path | None) -> float:
    """Wall seconds of the matrix into ``out`` (fresh caches under it)."""
    env = {**os.environ, "UQBENCH_CACHE": str(out / "cache")}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    command = [
        "uqbench",
        "bench",
        f"method=[{','.join(METHODS)}]",
        f"seed=[{','.join(map(str, SEEDS))}]",
        f"bench.jobs={jobs}",
        f"bench.out={out / 'runs'}",
        "threads=1",
        "bench.resamples=100",
    ]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(out / "bench.log", "w") as log:  # the bench's progress, for a failed run
        subprocess.run(command, check=True, env=env, cwd=out, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def _tables(readme: Path) -> list[str]:
    """A leaderboard's lines but the one that says how and where it was generated."""
    return [line for line in readme.read_text().splitlines() if not line.startswith("Generated by")]


def differences(a: Path, b: Path) -> list[str]:
    """Every number of the two benches that differs: metrics, leaderboard tables, headlines."""
    found = []
    cells_a = json.loads((a / "bench.json").read_text())["cells"]
    cells_b = json.loads((b / "bench.json").read_text())["cells"]
    if set(cells_a) != set(cells_b):
        found.append(f"cells differ: {sorted(set(cells_a) ^ set(cells_b))}")
    for name in sorted(set(cells_a) & set(cells_b)):
        metrics = [json.loads((r / name / "metrics.json").read_text())["metrics"] for r in (a, b)]
        if metrics[0] != metrics[1]:
            found.append(f"{name}: metrics.json differs")
        if cells_a[name].get("headline") != cells_b[name].get("headline"):
            found.append(f"{name}: bench.json headline differs")
    # The leaderboard's Markdown holds every table (its CSV, LaTeX and HTML exports are read
    # from it); only its "Generated by" line names the side's folder and commit.
    readmes_a = sorted((a / "leaderboards").rglob("README.md"))
    readmes_b = sorted((b / "leaderboards").rglob("README.md"))
    if [p.relative_to(a) for p in readmes_a] != [p.relative_to(b) for p in readmes_b]:
        found.append("the benches wrote different leaderboards")
    for path in readmes_a:
        other = b / path.relative_to(a)
        if other.is_file() and _tables(path) != _tables(other):
            found.append(f"{path.relative_to(a)} differs")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", default=BASELINE, help="the earlier commit (default %(default)s)"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--order", choices=["baseline-first", "current-first"], default="baseline-first"
    )
    parser.add_argument(
        "--current", default=None, help="a commit to run instead of this working tree"
    )
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    revisions = {"baseline": args.baseline, "current": args.current}
    order = list(revisions) if args.order == "baseline-first" else list(reversed(revisions))
    walls = {}
    try:
        shims = {
            side: source_tree(rev, where / side) if rev else None for side, rev in revisions.items()
        }
        for side in order:
            walls[side] = bench(where / side, args.jobs, shims[side])
            print(f"{side}: {walls[side]:.1f} s", flush=True)
    finally:
        for side in revisions:
            remove_tree(where / side)
    found = differences(where / "baseline" / "runs", where / "current" / "runs")
    print(f"{len(METHODS)} methods x {len(SEEDS)} seeds on digits, bench.jobs={args.jobs}")
    current = f"current {args.current}" if args.current else "current (this tree)"
    labels = {"baseline": f"baseline {args.baseline}", "current": current}
    return side_by_side(labels, walls, "numbers", found)


if __name__ == "__main__":
    sys.exit(main())
