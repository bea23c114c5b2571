"""The ``uqbench`` command. Imports stay light here: torch and Lightning load only when a
command needs them, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from uqbench.errors import UQBenchError
from uqbench.run_folder import check_writable_file, check_writable_folder

_OVERRIDES_HELP = """\
overrides (key=value):
  method=NAME          uncertainty method (default snapuq); see `uqbench list`
  method=A,B,...       a group of post-hoc methods on one base model, one pass per split
                       (also method="[A,B]"; quote brackets in zsh)
  data=NAME            datamodule (default digits)
  backbone=NAME        backbone (default: the datamodule's); also timm/<model>
  seed=INT             training seed (default 13); data splits do not depend on it
  threads=INT          torch CPU threads (default: half the cores, at most 4)
  train_base=BOOL      train a missing base model for post-hoc methods (default true)
  logger=csv|tensorboard|wandb|mlflow|none  training logger(s), several as [csv,mlflow]
                       (default csv; wandb honours WANDB_MODE=offline)
  out=PATH             parent folder of run folders (default runs)
  deploy=A,B           deploy each run to these boards after the fit (see uqbench deploy)
  name=STR             run folder name (default <method>-<data>-s<seed>-<time>)
  resume=NAME          continue the interrupted run NAME from its last epoch's checkpoint
  method.KEY=VALUE     any argument of the method's constructor, e.g. method.lr=1e-3
  data.KEY=VALUE       any argument of the datamodule, e.g. data.batch_size=128
  backbone.KEY=VALUE   any argument of the backbone factory, e.g. backbone.width=32
  trainer.KEY=VALUE    any lightning Trainer argument, e.g. trainer.max_epochs=30

A wrong key lists the valid ones with their types.

options:
  --config FILE        read overrides from a YAML (or JSON) file: the same keys, a mapping
                       under method_args (or method) for method.*, and so on; the command
                       line's overrides win (every subcommand but list and sweep)
  --print-config       print the fully resolved configuration (defaults filled in) as YAML
                       that --config reads back, and stop
  method=NAME --help   that plugin's keys with types, defaults and docs (also data=,
                       backbone=, and board= for deploy)

example:
  uqbench fit method=msp data=digits backbone=digits-cnn seed=13 \
      trainer.max_epochs=30 method.lr=1e-3
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uqbench",
        description="Benchmark single-pass uncertainty methods for tiny networks.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_overrides(
        name: str,
        help: str,
        description: str,
        epilog: str | None = None,
        metavar: str = "key=value",
    ) -> None:
        """A subcommand that takes ``key=value`` overrides, its epilog printed as written."""
        command = commands.add_parser(
            name,
            help=help,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("overrides", nargs="*", metavar=metavar)

    with_overrides(
        "fit",
        "train (or reuse a cached base), calibrate, evaluate, write a run folder",
        "Train, calibrate on dev, evaluate on ID/CID/OOD and print the report.",
        _OVERRIDES_HELP,
    )
    with_overrides(
        "test",
        "evaluate a saved run folder again: uqbench test run=runs/<name>",
        "Rebuild a finished run from its config.json and checkpoint.pt, evaluate it and write "
        "the results to test-<time>.json beside the fit's metrics.json.",
        metavar="run=PATH",
    )
    commands.add_parser(
        "list", help="every installed method, datamodule, backbone, board and device-score plugin"
    )
    with_overrides(
        "deploy",
        "int8 firmware per board for a finished run: uqbench deploy run=PATH board=NAME,...",
        "Quantize a finished run to int8, generate C, build it per board with "
        "arm-none-eabi-gcc, run it under QEMU, check it bit for bit and write "
        "<run>/deploy/<board>/deploy.json with sizes, OOM, instructions and a latency estimate.",
        _DEPLOY_HELP,
    )
    with_overrides(
        "corruptions",
        "write a contact sheet of every image corruption at severities 1-5 (PNG)",
        "One row per corruption; per photo, the clean image then severities 1-5. Photos are "
        "crops of the two images scikit-learn ships, averaged down to the size.",
        _SHEET_HELP,
    )
    with_overrides(
        "bench",
        "a matrix of fits (methods x data x seeds), each its own process, resumable",
        "Run one `uqbench fit` per (data, method, seed) cell as a child process, bench.jobs at "
        "a time; reuse complete cells; record failures and go on; write <bench.out>/bench.json, "
        "leaderboard.md and leaderboards/<data>/.",
        _BENCH_HELP,
    )
    with_overrides(
        "leaderboard",
        "leaderboards with 95%% bootstrap intervals and plots from a folder of run folders",
        "Read every complete run folder directly under runs=DIR and write "
        "<out>/<data>/README.md (a table per task, paired differences against a reference "
        "method, device costs, how each method was fitted) and its plots (PNG and SVG).",
        _LEADERBOARD_HELP,
    )
    sweep = commands.add_parser(
        "sweep",
        help="check a W&B sweep file for uqbench fit and print its runs' commands",
        description="Validate a W&B sweep configuration (schema, command, metric, every "
        "parameter as uqbench fit resolves it) and print the command wandb agent would run "
        "for each run: every grid point, or `count` draws of a search (default 3).",
    )
    sweep.add_argument("file", type=Path)
    sweep.add_argument("count", nargs="?", metavar="count=N")
    return parser


_DEPLOY_HELP = """\
overrides (key=value):
  run=PATH            a finished run folder (uqbench fit wrote it)
  board=A,B           boards from `uqbench list` (e.g. small-mcu,big-mcu)
  board.flash_kb=INT  override every chosen board's flash size (KiB)
  board.ram_kb=INT    ... RAM size (KiB); a model that does not fit is an OOM result
  board.clock_mhz=F   ... clock (MHz), for the latency estimate
"""

_BENCH_HELP = """\
overrides (key=value):
  method=[A,B,...]    methods (one cell each; default snapuq)
  data=[X,Y,...]      datamodules (default digits)
  seed=[13,17,23]     seeds (default 13, 17, 23: the paper's)
  deploy=[A,B]        boards every cell is deployed to
  bench.jobs=N        cells run at the same time (default 1)
  bench.out=PATH      folder of the cells' run folders, logs, bench.json, leaderboard.md
                      and leaderboards/<data>/ (default runs/bench)
  bench.reference=M   the method the leaderboards' paired differences are against (msp)
  bench.resamples=N   bootstrap resamples per run for the 95% intervals (default 1000)
  bench.launcher=L    local (child processes, the default), slurm (one SLURM job per cell
                      through submitit), submitit-local (submitit's local executor)
  bench.partition=P   the SLURM partition (bench.launcher=slurm)
  bench.gpus=N        GPUs per job (default 0); bench.time_min=N: time limit (default 60)
  bench.preload=BOOL  local jobs fork from a server that imported torch, Lightning and the
                      plugins once (default true); false: a fresh interpreter per job
  any other key=value of `uqbench fit` is passed to every cell (e.g. trainer.max_epochs=5)

example:
  uqbench bench method=[msp,energy,snapuq] data=[digits] seed=[13,17,23] bench.jobs=2
"""

_LEADERBOARD_HELP = """\
overrides (key=value):
  runs=DIR          a folder of run folders (uqbench fit out=DIR, or a bench's bench.out)
  out=DIR           where <data>/README.md and the plots go (default leaderboards)
  reference=M       the method of the paired differences (default msp)
  resamples=N       bootstrap resamples per run (default 1000)
  strict=BOOL       refuse (exit 2) when a run folder is damaged; by default a damaged run is
                    named with the reason and left out
  stream.FIELD=V    the stream layout (uqbench.streams.StreamSpec): id_frames, cid_frames,
                    ood_frames, cycle, severities=[1,2,3], window, alarm_window, band_frames,
                    test_streams, recall, budget, seed

example:
  uqbench leaderboard runs=runs/bench out=leaderboards
"""

_SHEET_HELP = """\
overrides (key=value):
  out=PATH      the PNG to write (default corruptions-<size>.png); rows are labelled, and
                frost uses the generator's photographs under $UQBENCH_DATA/frost when they
                are there (the label says which)
  size=INT      image side: 32 (CIFAR-10-C table), 28 (MNIST: gray, CIFAR table), 64
                (Tiny-ImageNet-C table); default 32
  table=NAME    severity table: cifar, tinyimagenet or digits (default: by size)
  images=INT    photos per row (default 2)
  seed=INT      corruption seed (default 0)
"""


def _deploy(overrides: list[str]) -> int:
    from uqbench import registry
    from uqbench.config import parse_options
    from uqbench.deploy.boards import select as select_boards
    from uqbench.errors import ConfigError

    board_options = {"flash_kb": int, "ram_kb": int, "clock_mhz": float}
    values, grouped = parse_options(
        "deploy", overrides, {"run": str, "board": str}, {"board": board_options}
    )
    if "run" not in values or "board" not in values:
        raise ConfigError(
            "uqbench deploy needs run=<run folder> and board=<names>; boards: "
            + ", ".join(registry.names("board"))
        )
    boards = select_boards(values["board"], grouped["board"])
    run = Path(values["run"])
    if not run.is_dir():
        raise ConfigError(f"uqbench deploy: run={run} is not a folder; give a finished run folder")
    check_writable_folder(run, "run")  # deploy/ is written inside the run folder
    from uqbench.deploy.firmware import check_toolchain
    from uqbench.stages.deploy import deploy_run

    check_toolchain()
    documents = deploy_run(run, boards)
    for name, doc in documents.items():
        if not doc["deployable"]:
            print(f"{name}: not deployable: {doc['reason']}")
        elif not doc["fits"]:
            over = ", ".join(f"{region} by {count:,} B" for region, count in doc["oom"].items())
            print(f"{name}: OOM ({over})")
        else:
            flash, ram = doc["flash_bytes"]["total"], doc["ram_bytes"]["static"]
            count, ms = doc["instructions_per_inference"], doc["latency"]["estimated_ms"]
            print(
                f"{name}: flash {flash:,} B, RAM {ram:,} B, {count:,} instructions, ~{ms:.1f} ms "
                f"(emulated estimate); bit-exact on {doc['checks']['examples']} examples"
            )
    print(f"wrote {run / 'deploy'}")
    return 0


def _bench(overrides: list[str]) -> int:
    from uqbench.bench import check_cells, parse_matrix, run, start_workers, write_leaderboard

    matrix = parse_matrix(overrides)
    start_workers(matrix)  # their imports run while the cells are checked
    matrix = check_cells(matrix)  # every cell, before any runs
    document = run(matrix)
    path = write_leaderboard(matrix, document, "uqbench bench " + " ".join(overrides))
    failed = [n for n, e in document["cells"].items() if e["status"] == "failed"]
    print(f"wrote {matrix.out / 'bench.json'} and {path}")
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)} (see bench.json)")
    return 1 if failed else 0


def _leaderboard(overrides: list[str]) -> int:

    import typing

    from uqbench.config import parse_options
    from uqbench.errors import ConfigError
    from uqbench.streams import StreamSpec

    schema = {"runs": str, "out": str, "reference": str, "resamples": int, "strict": bool}
    given, grouped = parse_options(
        "leaderboard", overrides, schema, {"stream": typing.get_type_hints(StreamSpec)}
    )
    values = {"out": "leaderboards", "reference": "msp", "resamples": 1000, "strict": False}
    values |= given
    stream = grouped["stream"]
    if "runs" not in values:
        raise ConfigError("uqbench leaderboard needs runs=<folder of run folders>")
    runs = Path(values["runs"])
    if not runs.is_dir():
        raise ConfigError(f"uqbench leaderboard: runs={runs} is not a folder")
    from uqbench.bootstrap import MAX_RESAMPLES

    if not 100 <= values["resamples"] <= MAX_RESAMPLES:
        raise ConfigError(
            f"uqbench leaderboard: resamples must be an integer in 100..{MAX_RESAMPLES:,}"
        )
    out = Path(values["out"])
    check_writable_folder(out, "out")
    from uqbench.leaderboards import Options, scan, write_leaderboards

    refs, damaged = scan(runs)
    for folder, reason in damaged.items():
        print(f"uqbench leaderboard: warning: {folder} left out: {reason}", file=sys.stderr)
    if damaged and values["strict"]:
        raise ConfigError(
            f"uqbench leaderboard: {len(damaged)} damaged run folder(s) under {runs} (listed "
            "above) and strict=true; repair or remove them, or leave strict=false to skip them"
        )
    if not refs:
        raise ConfigError(f"uqbench leaderboard: no complete run folder directly under {runs}")
    labels = sorted({r.label for r in refs})
    if values["reference"] not in labels:
        raise ConfigError(
            f"uqbench leaderboard: reference={values['reference']!r} has no run under {runs}; "
            f"the methods present: {', '.join(labels)}"
        )
    options = Options(values["reference"], int(values["resamples"]), StreamSpec(**stream))
    command = "uqbench leaderboard " + " ".join(overrides)
    for path in write_leaderboards(refs, out, command, options):
        print(f"wrote {path}")
    return 0


def _sweep(file: Path, count: str | None) -> int:
    from uqbench.errors import ConfigError

    try:
        from uqbench import sweeps
    except ImportError:
        raise ConfigError(
            "uqbench sweep needs the sweeps package: pip install sweeps==0.2.0 "
            "jsonref (or the project's [sweeps] extra)"
        ) from None
    limit = None
    if count is not None:
        key, _, value = count.partition("=")
        if key != "count" or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"uqbench sweep: expected count=N (N >= 1), got {count!r}")
        limit = int(value)
    config = sweeps.load(file)
    sweeps.check(config, str(file))
    drawn = sweeps.runs(config, limit)
    print(f"# {config['method']} sweep, {sweeps.space(config)}; {len(drawn)} run(s) below")
    for params in drawn:
        print(" ".join(sweeps.command_line(config, params)))
    return 0


def _corruption_sheet(overrides: list[str]) -> int:
    from uqbench.config import parse_options
    from uqbench.errors import ConfigError

    schema = {"out": str, "size": int, "table": str, "images": int, "seed": int}
    values, _ = parse_options("corruptions", overrides, schema)
    size, count = int(values.get("size", 32)), int(values.get("images", 2))
    if not 8 <= size <= 256 or not 1 <= count <= 8:
        raise ConfigError("uqbench corruptions: size must be 8-256 and images 1-8")
    from uqbench.datamodules.corruptions import TABLES
    from uqbench.datamodules.corruptions.sheet import sample_photos, write_contact_sheet

    table = values.get("table")
    if table is not None and table not in TABLES:
        raise ConfigError(f"uqbench corruptions: table={table!r}; choose among {', '.join(TABLES)}")
    out = Path(str(values.get("out", f"corruptions-{size}.png")))
    if not out.parent.is_dir():
        raise ConfigError(f"uqbench corruptions: folder {out.parent} does not exist; create it")
    check_writable_file(out, "out")
    from uqbench.datamodules.corruptions import frost_photos
    from uqbench.datamodules.files import data_root

    frost = frost_photos.find(data_root(None))
    photos = sample_photos(count, size, channels=1 if size == 28 else 3)
    write_contact_sheet(out, photos, table, int(values.get("seed", 0)), frost)
    which = f"the generator's photographs in {frost.folder}" if frost else "procedural (fallback)"
    print(f"wrote {out} (frost: {which})")
    return 0


def _list() -> int:
    from uqbench.registry import entries

    rows = entries()
    titles = {
        "method": "methods",
        "data": "datamodules",
        "backbone": "backbones",
        "board": "boards",
        "device_score": "device scores",
    }
    for kind, title in titles.items():
        print(f"{title}:")
        for e in (r for r in rows if r.kind == kind):
            status = f"BROKEN  {e.error}" if e.broken else ""
            if e.conflict:
                status = f"CONFLICT  name registered by several distributions {status}"
            print(f"  {e.name:<16} {e.distribution:<22} {e.target:<45} {status}".rstrip())
        if kind == "backbone":
            print(f"  {'timm/<model>':<16} {'timm':<22} any timm model, taps by forward hooks")
    return 1 if any(r.broken or r.conflict for r in rows) else 0


def _with_config_file(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` with ``--config FILE``'s overrides before the command line's (which win), and
    whether ``--print-config`` was given."""
    from uqbench import config_file

    if not argv or argv[0] not in _TAKES_CONFIG:
        return argv, False
    rest, path, printing = config_file.split_argv(argv[1:])
    if printing and argv[0] != "fit":
        raise UQBenchError(f"--print-config prints fit's resolved configuration, not {argv[0]}'s")
    from_file = config_file.read(path) if path is not None else []
    return [argv[0], *from_file, *rest], printing


_TAKES_CONFIG = ("fit", "test", "deploy", "corruptions", "bench", "leaderboard")


def _print_config(config: Any) -> int:
    """The fully resolved configuration (every default filled in) as ``--config`` reads it."""
    import dataclasses

    from uqbench.config_file import dump
    from uqbench.stages.resolve import method_names, resolve

    names = method_names(config.method)
    group = [resolve(dataclasses.replace(config, method=n)) for n in names]
    document = group[0].to_dict()
    if len(group) > 1:  # each member has its own defaults: the shared options only
        document["method"], document["method_args"] = names, config.method_args
    for key in ("train_base", "out", "name", "deploy"):
        document[key] = getattr(config, key)
    print(dump(document), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, printing = _with_config_file(argv)
        if argv and argv[0] in _TAKES_CONFIG and {"-h", "--help"} & set(argv):
            from uqbench.plugin_help import plugin_help, selections

            chosen = selections(argv[1:])
            if chosen:  # `fit method=snapuq --help`: that plugin's keys
                print("\n\n".join(plugin_help(key, name) for key, name in chosen))
                return 0
    except UQBenchError as exc:
        print(f"uqbench: error: {exc}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "corruptions":
            return _corruption_sheet(args.overrides)
        if args.command == "deploy":
            return _deploy(args.overrides)
        if args.command == "bench":
            return _bench(args.overrides)
        if args.command == "leaderboard":
            return _leaderboard(args.overrides)
        if args.command == "sweep":
            return _sweep(args.file, args.count)
        from uqbench.config import parse_overrides

        config = parse_overrides(args.overrides)
        from uqbench.report import format_group_report, format_report

        if printing and args.command == "fit":
            return _print_config(config)
        if args.command == "fit":
            from uqbench.runner import fit

            results = fit(config)
            if len(results) == 1:
                folder, document = results[0]
                print(format_report(document, str(folder)))
            else:
                print(format_group_report(results))
        else:
            from uqbench.runner import test

            if config.run is None:
                raise UQBenchError(
                    "uqbench test needs the run folder: uqbench test run=runs/<name>"
                )
            check_writable_folder(Path(config.run), "run")  # test-*.json is written beside
            document = test(Path(config.run))
            print(format_report(document, config.run))
        return 0
    except UQBenchError as exc:
        print(f"uqbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nuqbench: interrupted; nothing was written (the unfinished run folder was removed)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
