"""The ``uqbench`` command. Imports stay light here: torch and Lightning load only when a
command needs them, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uqbench.errors import UQBenchError

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
  logger=csv|wandb|none  training logger (default csv; wandb honours WANDB_MODE=offline)
  out=PATH             parent folder of run folders (default runs)
  name=STR             run folder name (default <method>-<data>-s<seed>-<time>)
  method.KEY=VALUE     any argument of the method's constructor, e.g. method.lr=1e-3
  data.KEY=VALUE       any argument of the datamodule, e.g. data.batch_size=128
  backbone.KEY=VALUE   any argument of the backbone factory, e.g. backbone.width=32
  trainer.KEY=VALUE    any lightning Trainer argument, e.g. trainer.max_epochs=30

A wrong key lists the valid ones with their types.

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
    fit = commands.add_parser(
        "fit",
        help="train (or reuse a cached base), calibrate, evaluate, write a run folder",
        description="Train, calibrate on dev, evaluate on ID/CID/OOD and print the report.",
        epilog=_OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("overrides", nargs="*", metavar="key=value")
    test = commands.add_parser(
        "test",
        help="evaluate a saved run folder again: uqbench test run=runs/<name>",
        description="Rebuild a finished run from its config.json and checkpoint.pt, evaluate "
        "it and write the results to test-<time>.json beside the fit's metrics.json.",
    )
    test.add_argument("overrides", nargs="*", metavar="run=PATH")
    commands.add_parser("list", help="every installed method, datamodule and backbone plugin")
    return parser


def _list() -> int:
    from uqbench.registry import entries

    rows = entries()
    for kind in ("method", "data", "backbone"):
        title = {"method": "methods", "data": "datamodules", "backbone": "backbones"}[kind]
        print(f"{title}:")
        for e in (r for r in rows if r.kind == kind):
            status = f"BROKEN  {e.error}" if e.broken else ""
            if e.conflict:
                status = f"CONFLICT  name registered by several distributions {status}"
            print(f"  {e.name:<16} {e.distribution:<22} {e.target:<45} {status}".rstrip())
        if kind == "backbone":
            print(f"  {'timm/<model>':<16} {'timm':<22} any timm model, taps by forward hooks")
    return 1 if any(r.broken or r.conflict for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        from uqbench.config import parse_overrides

        config = parse_overrides(args.overrides)
        from uqbench.report import format_group_report, format_report

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
